"""deploy/docker/entrypoint.sh, run outside a container the way the image runs it."""

from __future__ import annotations

import os
import signal
import ssl
import subprocess
import sys
import time
from pathlib import Path

import httpx
import openai
import pytest

from tests.deploy.nginx import free_port

ENTRYPOINT = Path(__file__).resolve().parents[2] / "deploy" / "docker" / "entrypoint.sh"
KEY = "entrypoint-test-key-0123456789"


def image_env(home: Path, **extra: str) -> dict[str, str]:
    """The image's environment: its ENV lines, with this venv's `impetus` and `python` on PATH."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("IMPETUS_")}
    env.update(
        PATH=f"{Path(sys.executable).parent}:{env['PATH']}",
        IMPETUS_HOME=str(home),
        IMPETUS_HOST="127.0.0.1",  # the image listens on 0.0.0.0; a test stays on loopback
        IMPETUS_PORT=str(free_port()),
    )
    env.update(extra)
    return env


def entrypoint(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["sh", str(ENTRYPOINT), *args], env=env, capture_output=True, text=True, timeout=120
    )


def test_serves_with_a_key_file_and_drains_on_sigterm(tiny_model_dir: Path, tmp_path: Path) -> None:
    key_file = tmp_path / "secret"
    key_file.write_text(KEY + "\n")  # as `echo` or an editor leaves it
    env = image_env(
        tmp_path / "home",
        IMPETUS_API_KEY_FILE=str(key_file),
        IMPETUS_MODELS=str(tiny_model_dir),
        IMPETUS_ALLOW_MODEL_PATHS="true",
    )
    proc = subprocess.Popen(
        ["sh", str(ENTRYPOINT)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=(tmp_path / "log").open("w"),
        start_new_session=True,
    )
    try:
        # exec: the entry point's process *is* impetus, so a container's SIGTERM reaches it
        deadline = time.monotonic() + 30
        while b"serve" not in Path(f"/proc/{proc.pid}/cmdline").read_bytes():
            assert proc.poll() is None and time.monotonic() < deadline, (
                tmp_path / "log"
            ).read_text()
            time.sleep(0.1)
        assert b"impetus" in Path(f"/proc/{proc.pid}/cmdline").read_bytes()

        deadline = time.monotonic() + 120
        while (check := entrypoint("healthcheck", env=env)).returncode != 0:
            assert proc.poll() is None, (tmp_path / "log").read_text()
            assert time.monotonic() < deadline, check.stdout
            time.sleep(0.5)
        assert check.stdout.strip() == "healthy"

        client = openai.OpenAI(
            base_url=f"http://127.0.0.1:{env['IMPETUS_PORT']}/v1", api_key=KEY, max_retries=0
        )
        reply = client.chat.completions.create(
            model=str(tiny_model_dir), messages=[{"role": "user", "content": "Hi"}], max_tokens=4
        )
        assert reply.usage is not None and reply.usage.completion_tokens > 0
        with pytest.raises(openai.AuthenticationError):
            openai.OpenAI(
                base_url=f"http://127.0.0.1:{env['IMPETUS_PORT']}/v1",
                api_key="other",
                max_retries=0,
            ).models.list()

        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 0
        assert "draining" in (tmp_path / "log").read_text()
        check = entrypoint("healthcheck", env=env)  # nothing listens any more
        assert check.returncode == 1 and "/health" in check.stdout
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)


def test_unready_server_is_unhealthy(tmp_path: Path, tls_files: tuple[Path, Path]) -> None:
    """Alive but without a model: /health answers, /ready does not, so not healthy. (Served over
    TLS, the entry point's other way of probing.)"""
    cert, key = tls_files
    env = image_env(
        tmp_path / "home", IMPETUS_API_KEY=KEY, IMPETUS_CERTFILE=str(cert), IMPETUS_KEYFILE=str(key)
    )
    proc = subprocess.Popen(
        ["sh", str(ENTRYPOINT), "serve"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 60
        while "/health" in (check := entrypoint("healthcheck", env=env)).stdout:
            assert time.monotonic() < deadline, check.stdout
            time.sleep(0.3)
        assert check.returncode == 1 and check.stdout.startswith("/ready: HTTP 503"), check.stdout
        # the server it probed serves HTTPS with the given certificate
        trust = ssl.create_default_context(cafile=str(cert))
        health = httpx.get(f"https://127.0.0.1:{env['IMPETUS_PORT']}/health", verify=trust)
        assert health.status_code == 200
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 0


@pytest.mark.parametrize(
    "case, message",
    [
        ("both", "set IMPETUS_API_KEY or IMPETUS_API_KEY_FILE, not both"),
        ("unreadable", "cannot read IMPETUS_API_KEY_FILE="),
        ("empty", "is empty"),
        ("home", "cannot create IMPETUS_HOME="),
        ("no-key", "refusing to serve without an API key"),  # impetus's own refusal
    ],
)
def test_refuses_bad_set_ups(tmp_path: Path, case: str, message: str) -> None:
    empty = tmp_path / "empty"
    empty.write_text("\n")
    a_file = tmp_path / "file"
    a_file.write_text("")
    extra = {
        "both": {"IMPETUS_API_KEY": KEY, "IMPETUS_API_KEY_FILE": str(empty)},
        "unreadable": {"IMPETUS_API_KEY_FILE": str(tmp_path / "absent")},
        "empty": {"IMPETUS_API_KEY_FILE": str(empty)},
        "home": {"IMPETUS_API_KEY": KEY},
        "no-key": {},
    }[case]
    home = a_file / "home" if case == "home" else tmp_path / "home"  # under a file: not creatable
    done = entrypoint(env=image_env(home, **extra))
    assert done.returncode == 2
    assert message in done.stderr, done.stderr


def test_flags_and_other_commands(tmp_path: Path) -> None:
    env = image_env(tmp_path / "home", IMPETUS_API_KEY=KEY)
    flags = entrypoint("--help", env=env)  # flags alone: `impetus serve FLAGS`
    assert (
        flags.returncode == 0
        and "--certfile" in flags.stdout
        and "--shutdown-grace" in flags.stdout
    )
    other = entrypoint("impetus", "backup", "--help", env=env)  # any other command runs as is
    assert other.returncode == 0 and "--with-models" in other.stdout
