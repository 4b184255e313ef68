"""Auth of `impetus serve`: full keys, inference-only keys, no key, wrong key, foreign Origin."""

from __future__ import annotations

import os
import stat
import subprocess
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from tests.api.conftest import ADMIN_KEY, Server, serve_command, start_server
from tests.api.test_errors import assert_openai_error

PUBLIC = ("health", "ready", "openapi.json", "docs")
INFERENCE = ("v1/models",)
ADMIN = ("admin/status", "admin/keys", "metrics")


def test_public_endpoints_need_no_key(server: Server) -> None:
    for path in PUBLIC:
        assert server.get(path, key=None).status_code == 200, path


def test_full_key_opens_everything(server: Server) -> None:
    for path in PUBLIC + INFERENCE + ADMIN:
        assert server.get(path).status_code == 200, path
    # the other header spellings clients use
    for header in ({"X-Api-Key": ADMIN_KEY}, {"Authorization": f"token {ADMIN_KEY}"}):
        assert httpx.get(server.url("v1/models"), headers=header).status_code == 200


def test_inference_key_lifecycle(server: Server, model: str) -> None:
    created = server.post("admin/keys", {"name": "notebook"})
    assert created.status_code == 201
    info = created.json()
    key, key_id = info["key"], info["id"]
    assert (
        key.startswith("imp-")
        and info["prefix"] == key[: len(info["prefix"])]
        and info["scope"] == "inference"
    )

    listed = server.get("admin/keys").json()["data"]
    assert [k["id"] for k in listed].count(key_id) == 1
    assert all("key" not in k and "hash" not in k for k in listed)

    # it opens /v1/* ...
    assert server.get("v1/models", key=key).status_code == 200
    chat = server.openai(key=key).chat.completions.create(
        model=model, messages=[{"role": "user", "content": "hi"}], max_tokens=2
    )  # type: ignore[arg-type]
    assert chat.choices
    # ... and nothing else
    for path in ADMIN:
        assert_openai_error(server.get(path, key=key), 403, code="insufficient_scope")
    assert_openai_error(
        server.post("admin/keys", {"name": "x"}, key=key), 403, code="insufficient_scope"
    )

    # stored hashed, in a file only its owner can read
    keyfile = server.log.parent / "api_keys.json"  # in the server's --home
    assert stat.S_IMODE(keyfile.stat().st_mode) == 0o600
    text = keyfile.read_text()
    assert key not in text and key_id in text

    # revoked: refused from the next request on
    r = httpx.delete(server.url(f"admin/keys/{key_id}"), headers=server.headers())
    assert r.status_code == 204
    assert_openai_error(server.get("v1/models", key=key), 401, code="invalid_api_key")
    assert_openai_error(
        httpx.delete(server.url(f"admin/keys/{key_id}"), headers=server.headers()),
        404,
        code="key_not_found",
    )


def test_keys_created_by_another_process_are_seen(server: Server) -> None:
    """The key file is shared through IMPETUS_HOME (a Jupyter server and `impetus serve`)."""
    from impetus.api.keys import KeyStore

    store = KeyStore(Path(server.log).parent / "api_keys.json")
    rec, key = store.create("written elsewhere")
    assert server.get("v1/models", key=key).status_code == 200
    store.revoke(rec.id)
    assert server.get("v1/models", key=key).status_code == 401


def test_foreign_origin_with_a_key_is_allowed(server: Server) -> None:
    r = httpx.get(
        server.url("v1/models"), headers={**server.headers(), "Origin": "https://evil.example"}
    )
    assert r.status_code == 200


@pytest.fixture(scope="module")
def open_server(server_factory: Callable[..., Server], tiny_model_dir: Path) -> Server:
    return server_factory("--model", str(tiny_model_dir), key=None)


def test_no_auth_on_loopback(open_server: Server, tiny_model_dir: Path) -> None:
    for path in PUBLIC + INFERENCE + ADMIN:
        assert open_server.get(path).status_code == 200, path
    body = {
        "model": str(tiny_model_dir),
        "messages": [{"role": "user", "content": "hi"}],
        "max_tokens": 2,
    }
    assert open_server.post("v1/chat/completions", body).status_code == 200


def test_no_auth_blocks_browsers_from_other_sites(
    open_server: Server, tiny_model_dir: Path
) -> None:
    """Without keys, a web page elsewhere must not drive the server through the browser."""
    body = {
        "model": str(tiny_model_dir),
        "messages": [{"role": "user", "content": "hi"}],
        "max_tokens": 2,
    }
    evil = {"Origin": "https://evil.example"}
    assert_openai_error(
        httpx.post(open_server.url("v1/chat/completions"), json=body, headers=evil),
        403,
        code="cross_origin",
    )
    assert_openai_error(
        httpx.get(open_server.url("admin/status"), headers=evil), 403, code="cross_origin"
    )
    # DNS rebinding: a foreign host name pointing at 127.0.0.1
    r = httpx.get(open_server.url("v1/models"), headers={"Host": "evil.example"})
    assert_openai_error(r, 403, code="host_not_allowed")
    # same-origin pages are fine
    port = open_server.base_url.rsplit(":", 1)[1].strip("/")
    same = {"Origin": f"http://127.0.0.1:{port}"}
    assert (
        httpx.post(open_server.url("v1/chat/completions"), json=body, headers=same).status_code
        == 200
    )


def _serve_refuses(*args: str, env: dict[str, str] | None = None) -> str:
    full_env = {k: v for k, v in os.environ.items() if k != "IMPETUS_API_KEY"}
    full_env.update(env or {})
    proc = subprocess.run(
        serve_command("--port", "0", *args),
        capture_output=True,
        text=True,
        timeout=60,
        env=full_env,
    )
    assert proc.returncode == 2, proc.stdout + proc.stderr
    return proc.stderr


def test_serve_refuses_to_start_without_a_key() -> None:
    assert "--api-key" in _serve_refuses()
    assert "loopback" in _serve_refuses("--no-auth", "--host", "0.0.0.0")
    assert "contradict" in _serve_refuses("--no-auth", env={"IMPETUS_API_KEY": "k"})


def test_api_key_from_the_environment(tmp_path: Path) -> None:
    srv = start_server(
        [], tmp_path / "home", key=None, env={"IMPETUS_API_KEY": "env-key-1,env-key-2"}
    )
    try:
        srv.wait_ready_or_engine()
        for key in ("env-key-1", "env-key-2"):
            assert (
                httpx.get(
                    srv.url("admin/status"), headers={"Authorization": f"Bearer {key}"}
                ).status_code
                == 200
            )
        assert httpx.get(srv.url("admin/status")).status_code == 401
        # the keys never reach the engine process's command line
        pid = httpx.get(
            srv.url("admin/status"), headers={"Authorization": "Bearer env-key-1"}
        ).json()["pid"]
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
        assert "impetus.engine" in cmdline and "env-key-1" not in cmdline
    finally:
        assert srv.stop() == 0
