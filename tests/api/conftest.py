"""Real `impetus serve` processes on free loopback ports, serving the tiny random Llama."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

ADMIN_KEY = "test-admin-key-0123456789"

# A Hermes-style chat template: mlx-lm infers its `json_tools` parser from `<tool_call>` and
# `tool_call.name`, so the tiny model gets tool calling like Qwen / Hermes models have.
TOOL_TEMPLATE = (
    "{%- if tools %}<|im_start|>system\nTools: {{ tools | tojson }}\n"
    'Call a tool as <tool_call>{"name": ..., "arguments": ...}</tool_call><|im_end|>\n{% endif %}'
    "{%- for message in messages %}"
    "{%- if message.role == 'assistant' and message.tool_calls %}<|im_start|>assistant\n"
    "{%- for tc in message.tool_calls %}{%- set tool_call = tc.function %}"
    '<tool_call>{"name": "{{ tool_call.name }}", "arguments": {{ tool_call.arguments | tojson }}}</tool_call>'
    "{%- endfor %}<|im_end|>\n"
    "{%- else %}<|im_start|>{{ message.role }}\n{{ message.content }}<|im_end|>\n{% endif %}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


class Server:
    """One `impetus serve` child process."""

    def __init__(
        self, proc: subprocess.Popen[str], base_url: str, log: Path, key: str | None
    ) -> None:
        self.proc = proc
        self.base_url = base_url  # ends with '/'
        self.log = log
        self.key = key

    def url(self, path: str) -> str:
        return self.base_url + path.lstrip("/")

    def headers(self, key: str | None = "default") -> dict[str, str]:
        k = self.key if key == "default" else key
        return {"Authorization": f"Bearer {k}"} if k else {}

    def get(self, path: str, key: str | None = "default", **kw: object) -> httpx.Response:
        return httpx.get(self.url(path), headers=self.headers(key), timeout=30, **kw)  # type: ignore[arg-type]

    def post(
        self, path: str, body: object = None, key: str | None = "default", **kw: object
    ) -> httpx.Response:
        return httpx.post(self.url(path), json=body, headers=self.headers(key), timeout=60, **kw)  # type: ignore[arg-type]

    def openai(self, key: str | None = "default", **kw: object):  # noqa: ANN201 - openai.OpenAI
        import openai

        return openai.OpenAI(
            base_url=self.url("v1"),
            api_key=(self.key if key == "default" else key) or "none",
            max_retries=0,
            **kw,
        )  # type: ignore[arg-type]

    def async_openai(self, **kw: object):  # noqa: ANN201 - openai.AsyncOpenAI
        import openai

        return openai.AsyncOpenAI(
            base_url=self.url("v1"), api_key=self.key or "none", max_retries=0, **kw
        )  # type: ignore[arg-type]

    def metric(self, name: str, labels: str = "") -> float:
        """The value of one sample of /metrics (0 if absent)."""
        text = self.get("metrics").text
        total = 0.0
        for line in text.splitlines():
            if line.startswith(name) and (not labels or labels in line):
                head, _, value = line.rpartition(" ")
                if head.split("{")[0] == name:
                    total += float(value)
        return total

    def wait_ready(self, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"impetus serve exited ({self.proc.returncode}):\n{self.log_text()}"
                )
            try:
                if httpx.get(self.url("ready"), timeout=5).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        raise TimeoutError(f"not ready after {timeout} s:\n{self.log_text()}")

    def wait_ready_or_engine(self, timeout: float = 120) -> None:
        """Wait for the engine (not for a model: the server may have none)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if httpx.get(self.url("health"), timeout=5).json()["engine"] == "ready":
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        raise TimeoutError(f"engine not up after {timeout} s:\n{self.log_text()}")

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")[-6000:]

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 60) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)
        return self.proc.returncode


def serve_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "impetus.cli", "serve", *args]


def start_server(
    args: list[str],
    home: Path,
    key: str | None = ADMIN_KEY,
    no_auth: bool = False,
    env: dict[str, str] | None = None,
    allow_model_paths: bool = True,
) -> Server:
    # the tests name their tiny models by folder path, which a server allows only when told to
    cmd = serve_command(
        "--host",
        "127.0.0.1",
        "--port",
        "0",
        "--home",
        str(home),
        "--log-level",
        "info",
        *(["--allow-model-paths"] if allow_model_paths else []),
        *args,
    )
    if key:
        cmd += ["--api-key", key]
    if no_auth:
        cmd += ["--no-auth"]
    full_env = {k: v for k, v in os.environ.items() if k not in ("IMPETUS_API_KEY",)}
    full_env.update(env or {})
    home.mkdir(parents=True, exist_ok=True)
    log = home / "serve.log"
    proc = subprocess.Popen(
        cmd,
        stdout=subprocess.PIPE,
        stderr=log.open("w"),
        text=True,
        env=full_env,
        start_new_session=True,  # its own process group: a kill takes the engine down too
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()  # "impetus serve: listening on http://127.0.0.1:PORT/ ..."
    if "listening on " not in line:
        proc.wait(30)
        raise RuntimeError(
            f"impetus serve did not start ({proc.returncode}): {line}\n{log.read_text()}"
        )
    base_url = line.split("listening on ", 1)[1].split()[0]
    return Server(proc, base_url, log, key)


@pytest.fixture(scope="session")
def tool_model_dir(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny model with a tool-calling chat template."""
    dest = tmp_path_factory.mktemp("models") / "tiny-tools"
    shutil.copytree(tiny_model_dir, dest)
    cfg_path = dest / "tokenizer_config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg["chat_template"] = TOOL_TEMPLATE
    cfg_path.write_text(json.dumps(cfg))
    return dest


class ServerFactory:
    """Starts `impetus serve` processes; each lives until the end of the test module that started
    it (`session=True`: of the whole run). An idle server left running costs the later tests its
    engine processes' CPU, and the suite runs on two cores."""

    def __init__(self, tmp_path_factory: pytest.TempPathFactory) -> None:
        self.tmp_path_factory = tmp_path_factory
        self.module: list[Server] = []
        self.session: list[Server] = []

    def __call__(
        self,
        *args: str,
        key: str | None = ADMIN_KEY,
        ready: bool = True,
        env: dict[str, str] | None = None,
        session: bool = False,
    ) -> Server:
        home = self.tmp_path_factory.mktemp("serve-home")
        srv = start_server(list(args), home, key=key, no_auth=key is None, env=env)
        (self.session if session else self.module).append(srv)
        if ready:
            srv.wait_ready()
        return srv

    def stop_module_servers(self) -> None:
        while self.module:
            self.module.pop().stop()


@pytest.fixture(scope="session")
def server_factory(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerFactory]:
    factory = ServerFactory(tmp_path_factory)
    yield factory
    factory.stop_module_servers()
    for srv in factory.session:
        srv.stop()


@pytest.fixture(scope="module", autouse=True)
def stop_module_servers(server_factory: ServerFactory) -> Iterator[None]:
    """Autouse: the servers a module started stop when it ends (after its own fixtures)."""
    yield
    server_factory.stop_module_servers()


@pytest.fixture(scope="session")
def server(server_factory: ServerFactory, tiny_model_dir: Path, tool_model_dir: Path) -> Server:
    """The shared server: the tiny model loaded at start, the tool model loaded just in time."""
    return server_factory(
        "--model", str(tiny_model_dir), "--max-tokens-default", "64", session=True
    )


@pytest.fixture(scope="session")
def model(tiny_model_dir: Path) -> str:
    return str(tiny_model_dir)


@pytest.fixture(scope="session")
def slow_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A still random but larger Llama with a 4096-token context: ~200 tokens/s on one CPU
    stream, so a long request stays in flight for seconds (disconnects, limits, shutdown)."""
    from tests.tiny_model import build_tiny_llama

    return build_tiny_llama(
        tmp_path_factory.mktemp("models") / "slow-llama", context=4096, hidden=256, layers=6
    )


def long_chat(model: str, max_tokens: int = 3000, **extra: object) -> dict[str, object]:
    """A chat request that generates exactly `max_tokens` tokens."""
    body: dict[str, object] = {
        "model": model,
        "messages": [{"role": "user", "content": "Tell me a long story."}],
        "max_tokens": max_tokens,
        "ignore_eos": True,
    }
    body.update(extra)
    return body
