"""`impetus serve --certfile/--keyfile`: HTTPS with a self-signed certificate, used by the openai SDK."""

from __future__ import annotations

import ssl
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import openai
import pytest

from tests.api.conftest import ADMIN_KEY, Server, serve_command
from tests.deploy.certs import self_signed


def wait_ready(srv: Server, verify: ssl.SSLContext, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert srv.proc.poll() is None, srv.log_text()
        try:
            if httpx.get(srv.url("ready"), verify=verify, timeout=5).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    raise TimeoutError(srv.log_text())


def test_openai_sdk_over_https(
    server_factory: Callable[..., Server], tiny_model_dir: Path, tls_files: tuple[Path, Path]
) -> None:
    cert, key = tls_files
    srv = server_factory(
        "--model", str(tiny_model_dir), "--certfile", str(cert), "--keyfile", str(key), ready=False
    )
    assert srv.base_url.startswith("https://127.0.0.1:")
    trust = ssl.create_default_context(cafile=str(cert))
    wait_ready(srv, trust)

    with httpx.Client(verify=trust) as http:
        client = openai.OpenAI(
            base_url=srv.url("v1"), api_key=ADMIN_KEY, http_client=http, max_retries=0
        )
        chunks = list(
            client.chat.completions.create(
                model=str(tiny_model_dir),
                messages=[{"role": "user", "content": "Hello"}],
                max_tokens=8,
                stream=True,
                stream_options={"include_usage": True},
                extra_body={"ignore_eos": True},
            )
        )
        assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 8
        assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)

    # a client that does not trust the certificate refuses the connection
    with pytest.raises(openai.APIConnectionError), httpx.Client() as untrusting:
        openai.OpenAI(
            base_url=srv.url("v1"), api_key=ADMIN_KEY, http_client=untrusting, max_retries=0
        ).models.list()
    # plain HTTP on the TLS port gets no answer
    with pytest.raises(httpx.TransportError):
        httpx.get(srv.url("health").replace("https://", "http://"), timeout=5)


@pytest.mark.parametrize(
    "case, message",
    [
        ("key-only", "--keyfile needs --certfile"),
        ("missing", "no such file"),
        ("wrong-key", "not a usable certificate and key"),
    ],
)
def test_bad_tls_files_are_refused(
    tmp_path: Path, tls_files: tuple[Path, Path], case: str, message: str
) -> None:
    cert, key = tls_files
    other_cert, other_key = self_signed(tmp_path / "other")
    args = {
        "key-only": ["--keyfile", str(key)],
        "missing": ["--certfile", str(tmp_path / "absent.pem")],
        "wrong-key": ["--certfile", str(cert), "--keyfile", str(other_key)],
    }[case]
    done = subprocess.run(
        serve_command("--host", "127.0.0.1", "--port", "0", "--api-key", ADMIN_KEY, *args),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert "impetus serve: TLS:" in done.stderr and message in done.stderr, done.stderr
