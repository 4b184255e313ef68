"""The security matrix of `impetus serve`, and the limits around it.

Every route × {admin key, inference-only key, none, wrong key, foreign Origin, foreign Origin with
a key, a cookie without XSRF} → the expected outcome (tests/reliability/matrix.py); keys stored
hashed in a 0600 file and compared in constant time; hundreds of idle and slow connections do not
starve a normal request; header and body limits; model ids never escape the model folders.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import stat
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import quote, urlsplit

import httpx
import pytest

from impetus.api.keys import KeyStore
from tests.api.conftest import ADMIN_KEY, Server, start_server
from tests.reliability import matrix

EVIL = "https://evil.example"


@pytest.fixture(scope="module")
def srv(server_factory: Callable[..., Server], tiny_model_dir: Path) -> Server:
    return server_factory("--model", str(tiny_model_dir), "--max-body-bytes", "1M")


@pytest.fixture(scope="module")
def inference_key(srv: Server) -> str:
    r = srv.post("admin/keys", {"name": "matrix"})
    assert r.status_code == 201, r.text
    return str(r.json()["key"])


def credentials(srv: Server, inference_key: str) -> dict[str, dict[str, str]]:
    port = urlsplit(srv.base_url).port
    return {
        "admin_key": {"Authorization": f"Bearer {ADMIN_KEY}"},
        "inference_key": {"Authorization": f"Bearer {inference_key}"},
        "none": {},
        "wrong": {"Authorization": "Bearer imp-wrong-0123456789abcdef"},
        "foreign_origin": {"Origin": EVIL},
        "foreign_origin_with_key": {"Origin": EVIL, "Authorization": f"Bearer {ADMIN_KEY}"},
        # what a browser would send: a session cookie and no _xsrf (serve has no cookie login)
        "cookie_without_xsrf": {"Cookie": f"username-127-0-0-1-{port}=x; _xsrf=y"},
    }


def assert_openai_error(r: httpx.Response) -> None:
    body = r.json()
    assert set(body) == {"error"} and set(body["error"]) == {"message", "type", "param", "code"}, (
        r.text
    )


def test_security_matrix(srv: Server, inference_key: str) -> None:
    creds = credentials(srv, inference_key)
    wrong: list[str] = []
    rows: list[list[str]] = []
    for case in matrix.cases():
        cells = []
        for name, headers in creds.items():
            # a connection each: a refusal before the body is read closes the connection
            r = httpx.request(
                case.method,
                srv.url(case.path),
                headers=headers,
                json=matrix.body_for(case.method),
                timeout=30,
            )
            got = matrix.outcome(r.status_code)
            want = matrix.expected(case.scope, name, case.method)
            if got != want:
                wrong.append(
                    f"{case.method} {case.path} as {name}: {r.status_code} {r.text[:200]}, expected {want}"
                )
            if r.status_code in (401, 403):
                matrix.assert_error_shape(case.path, r.json())
            cells.append(got)
        rows.append([f"{case.method} {case.label}", case.scope, *cells])
    text = matrix.table(["route", "scope", *(c.replace("_", " ") for c in creds)], rows)
    print("\n" + text)
    assert not wrong, "\n".join(wrong)
    assert len(matrix.cases()) >= 36  # the whole route table, protocol routes included
    matrix.check_doc("serve", text)


def test_keys_are_stored_hashed_in_a_private_file_and_compared_in_constant_time(
    srv: Server, inference_key: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    home = srv.log.parent  # the server's --home
    path = home / "api_keys.json"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    text = path.read_text()
    assert inference_key not in text and ADMIN_KEY not in text
    assert hashlib.sha256(inference_key.encode()).hexdigest() in text

    # every comparison goes through hmac.compare_digest (constant time), for the configured
    # admin keys and the stored ones alike
    calls: list[tuple[str, str]] = []
    real = hmac.compare_digest

    def spy(a: str, b: str) -> bool:
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr("impetus.api.keys.hmac.compare_digest", spy)
    store = KeyStore(path, [ADMIN_KEY])
    assert store.match("imp-not-a-key") is None
    assert len(calls) == 1 + len(store.records())
    assert store.match(inference_key) is not None


# ---- idle and slow connections ------------------------------------------------------------


def test_hundreds_of_idle_and_slow_connections_do_not_starve_a_request(
    srv: Server, tiny_model_dir: Path
) -> None:
    u = urlsplit(srv.base_url)

    async def main() -> tuple[int, int, float]:
        writers = []
        for i in range(300):
            _, w = await asyncio.open_connection(u.hostname, u.port)
            kind = i % 3
            if kind == 1:  # headers trickling in, never finished
                w.write(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n")
            elif kind == 2:  # a body trickling in, never finished
                w.write(
                    f"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {ADMIN_KEY}\r\n"
                    "Content-Type: application/json\r\nContent-Length: 100000\r\n\r\n{".encode()
                )
            writers.append(w)  # kind 0: connected, silent
        for w in writers:
            await w.drain()
        t0 = time.monotonic()
        async with httpx.AsyncClient(timeout=30, headers=srv.headers()) as c:
            models = await c.get(srv.url("v1/models"))
            chat = await c.post(
                srv.url("v1/chat/completions"),
                json={
                    "model": str(tiny_model_dir),
                    "messages": [{"role": "user", "content": "hi"}],
                    "max_tokens": 3,
                },
            )
        took = time.monotonic() - t0
        for w in writers:  # the slow ones keep trickling meanwhile
            w.write(b"x")
        for w in writers:
            w.close()
        return models.status_code, chat.status_code, took

    models, chat, took = asyncio.run(main())
    assert models == 200 and chat == 200
    print(f"normal request beside 300 idle / slow connections: {took:.2f} s")


def test_header_and_body_limits(srv: Server, tiny_model_dir: Path) -> None:
    # a header block over Tornado's limit (64 KiB): refused, and the server serves on
    u = urlsplit(srv.base_url)
    huge = "x" * (100 * 1024)
    try:
        r = httpx.get(srv.url("v1/models"), headers={**srv.headers(), "X-Big": huge}, timeout=10)
        assert r.status_code in (400, 431), r.status_code
    except httpx.RemoteProtocolError:
        pass  # Tornado closes the connection without an answer
    assert srv.get("v1/models").status_code == 200

    # a body over --max-body-bytes (1 MiB): 413 in OpenAI's shape, before it is read
    body = {
        "model": str(tiny_model_dir),
        "messages": [{"role": "user", "content": "x" * (2 << 20)}],
    }
    r = srv.post("v1/chat/completions", body)
    assert r.status_code == 413 and r.json()["error"]["code"] == "request_too_large"
    # just under the limit: parsed (a 400 for the context length, not a 413)
    body["messages"] = [{"role": "user", "content": "x" * 500_000}]
    r = srv.post("v1/chat/completions", body)
    assert r.status_code == 400 and r.json()["error"]["code"] == "context_length_exceeded"
    assert u.port


# ---- model ids and the model folders ------------------------------------------------------


@pytest.fixture(scope="module")
def strict_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Server, Path]]:
    """A server as deployed: no --allow-model-paths; a model folder outside MODELS as bait."""
    from tests.tiny_model import build_tiny_llama

    root = tmp_path_factory.mktemp("traversal")
    bait = build_tiny_llama(root / "outside-model")
    home = root / "home"
    (home / "models").mkdir(parents=True)
    s = start_server([], home, key=ADMIN_KEY, allow_model_paths=False)
    s.wait_ready_or_engine()
    yield s, bait
    s.stop()


TRAVERSALS = [
    "../outside-model",
    "../../outside-model",
    "..%2F..%2Foutside-model",
    "models/../../outside-model",
    "/etc",
    "/etc/passwd",
    "..",
    "%2e%2e/%2e%2e/outside-model",
    "./../outside-model",
]


def test_model_ids_never_escape_the_model_folders(strict_server: tuple[Server, Path]) -> None:
    srv, bait = strict_server
    ids = [*TRAVERSALS, str(bait), str(bait.parent / "home" / ".." / "outside-model")]
    for mid in ids:
        for path, body in (
            (
                "v1/chat/completions",
                {"model": mid, "messages": [{"role": "user", "content": "hi"}]},
            ),
            ("v1/completions", {"model": mid, "prompt": "hi"}),
            ("v1/embeddings", {"model": mid, "input": "hi"}),
        ):
            r = srv.post(path, body)
            assert r.status_code in (400, 404), (mid, path, r.status_code, r.text)
            assert_openai_error(r)
        r = srv.get("v1/models/" + quote(mid, safe=""))
        assert r.status_code == 404, (mid, r.text)
        # deleting: never reaches outside the models folder
        r = httpx.delete(
            srv.url("admin/models/" + quote(mid, safe="")), headers=srv.headers(), timeout=30
        )
        assert r.status_code in (400, 404), (mid, r.status_code, r.text)
        r = httpx.delete(srv.url("admin/models/" + mid), headers=srv.headers(), timeout=30)
        assert r.status_code in (400, 404), (mid, r.status_code, r.text)
    assert (bait / "model.safetensors").is_file() and (bait / "config.json").is_file()
    st = srv.get("admin/status").json()
    assert st["models"] == []  # nothing was loaded from outside
    assert json.loads((bait / "config.json").read_text())["model_type"] == "llama"
