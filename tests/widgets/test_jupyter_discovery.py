"""A kernel finds the Jupyter server that started it and talks to its impetus extension.

A real `jupyter server` with the extension runs as a subprocess; this process plays the kernel
(JPY_PARENT_PID is what jupyter_client sets in every kernel it launches).
"""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from impetus.client import ImpetusClient, PrivateServer, find_endpoint

ROOT = Path(__file__).resolve().parents[2]


def start_jupyter(tmp: Path, token: str) -> tuple[subprocess.Popen[bytes], str]:
    port = PrivateServer(None).port
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
    env["JUPYTER_RUNTIME_DIR"] = str(tmp / "runtime")
    env["JUPYTER_CONFIG_DIR"] = str(tmp / "config")
    cmd = [
        sys.executable, "-m", "jupyter_server", "--no-browser", "--ip=127.0.0.1", f"--port={port}",
        f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={tmp}",
        "--ServerApp.jpserver_extensions=impetus=True", "--allow-root",
    ]  # fmt: skip
    log = (tmp / "jupyter.log").open("wb")
    proc = subprocess.Popen(
        cmd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
    )
    base = f"http://127.0.0.1:{port}/"
    deadline = time.monotonic() + 120
    while True:
        try:
            if httpx.get(base + "impetus/health", timeout=2).status_code == 200:
                return proc, base
        except httpx.HTTPError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise RuntimeError(
                "jupyter server did not start:\n" + (tmp / "jupyter.log").read_text()[-3000:]
            )
        time.sleep(0.3)


def stop(proc: subprocess.Popen[bytes]) -> None:
    os.killpg(proc.pid, 15)
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, 9)


@pytest.fixture(params=["token", "no-token"])
def jupyter(
    request: pytest.FixtureRequest,
    tmp_path: Path,
    impetus_home: Path,
    tiny_model: str,
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[str]:
    token = secrets.token_hex(8) if request.param == "token" else ""
    proc, base = start_jupyter(tmp_path, token)
    monkeypatch.setenv("JPY_PARENT_PID", str(proc.pid))
    monkeypatch.setenv("JUPYTER_RUNTIME_DIR", str(tmp_path / "runtime"))
    monkeypatch.delenv("IMPETUS_URL", raising=False)
    try:
        yield base
    finally:
        stop(proc)


def test_kernel_finds_its_jupyter_server(jupyter: str, tiny_model: str) -> None:
    ep = find_endpoint(start=False)
    assert ep.source == "jupyter"
    assert ep.base_url == jupyter + "impetus/"
    with ImpetusClient(endpoint=ep, model=tiny_model) as c:
        assert c.load(tiny_model).id == tiny_model  # a POST through Jupyter's auth and XSRF checks
        c.wait_ready(60)
        assert c.status().state == "ready"
        stream = c.chat_stream([{"role": "user", "content": "Hello"}], max_tokens=8)
        assert "".join(stream) == stream.result.text  # type: ignore[union-attr]
        assert stream.result is not None and stream.result.completion_tokens
        out = c.openai().chat.completions.create(
            model=tiny_model,
            messages=[{"role": "user", "content": "Hello"}],
            max_tokens=4,  # type: ignore[arg-type]
        )
        assert out.usage is not None


def test_other_servers_are_not_taken(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Only the server whose pid is JPY_PARENT_PID counts (papermill's kernels have one too)."""
    monkeypatch.setenv("JPY_PARENT_PID", str(os.getpid()))  # not a Jupyter server
    monkeypatch.delenv("IMPETUS_URL", raising=False)
    with pytest.raises(Exception, match="no impetus server"):
        find_endpoint(start=False)
