"""Every error status in OpenAI's shape, over raw HTTP against real `impetus serve` processes."""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import openai
import pytest

from tests.api.conftest import Server, long_chat

HELLO = [{"role": "user", "content": "Hello"}]


def assert_openai_error(
    r: httpx.Response, status: int, code: str | None = None, param: str | None = None
) -> dict[str, object]:
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/json")
    body = r.json()
    assert set(body) == {"error"}
    err = body["error"]
    assert set(err) == {"message", "type", "param", "code"}
    assert isinstance(err["message"], str) and err["message"]
    assert isinstance(err["type"], str) and err["type"]
    if code is not None:
        assert err["code"] == code, err
    if param is not None:
        assert err["param"] == param, err
    return err  # type: ignore[no-any-return]


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"messages": HELLO}, "model"),
        ({"model": "m"}, "messages"),
        ({"model": "m", "messages": []}, "messages"),
        ({"model": "m", "messages": HELLO, "temperature": 3}, "temperature"),
        ({"model": "m", "messages": HELLO, "top_p": 0}, "top_p"),
        ({"model": "m", "messages": HELLO, "n": 0}, "n"),
        ({"model": "m", "messages": HELLO, "max_tokens": 0}, "max_tokens"),
        ({"model": "m", "messages": HELLO, "top_logprobs": 3}, "top_logprobs"),
        ({"model": "m", "messages": HELLO, "logit_bias": {"abc": 1}}, "logit_bias"),
        ({"model": "m", "messages": HELLO, "stop": ["a"] * 17}, "stop"),
        ({"model": "m", "messages": [{"role": "wizard", "content": "x"}]}, "messages[0].role"),
        (
            {"model": "m", "messages": HELLO, "response_format": {"type": "xml"}},
            "response_format.type",
        ),
        (
            {"model": "m", "messages": HELLO, "response_format": {"type": "json_schema"}},
            "response_format",
        ),
        ({"model": "m", "messages": HELLO, "tool_choice": "required"}, "tool_choice"),
    ],
)
def test_400_names_the_parameter(server: Server, body: dict[str, object], param: str) -> None:
    err = assert_openai_error(server.post("v1/chat/completions", body), 400, param=param)
    assert err["type"] == "invalid_request_error"


def test_400_bad_bodies(server: Server, model: str) -> None:
    url = server.url("v1/chat/completions")
    for raw in (b"{not json", b"[1, 2]", b""):
        r = httpx.post(
            url, content=raw, headers={**server.headers(), "Content-Type": "application/json"}
        )
        assert_openai_error(r, 400, code="invalid_json")
    image = [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "data:,"}}]}]
    assert_openai_error(
        server.post("v1/chat/completions", {"model": model, "messages": image}),
        400,
        param="messages[0].content[0]",
    )
    assert_openai_error(
        server.post("v1/completions", {"model": model, "prompt": []}), 400, param="prompt"
    )
    assert_openai_error(
        server.post("v1/completions", {"model": model, "prompt": "x", "suffix": "y"}),
        400,
        param="suffix",
    )
    assert_openai_error(
        server.post("v1/completions", {"model": model, "prompt": [1, 2], "echo": True}),
        400,
        param="echo",
    )
    assert_openai_error(
        server.post("v1/embeddings", {"model": "minilm", "input": [1, 2]}), 400, param="input"
    )
    # the engine's own checks come back with their parameter too
    assert_openai_error(
        server.post("v1/completions", {"model": model, "prompt": [10**6]}), 400, param="prompt"
    )


def test_400_context_length_exceeded(server: Server, model: str) -> None:
    long = "word " * 2000  # the tiny model's context is 512 tokens
    err = assert_openai_error(
        server.post(
            "v1/chat/completions", {"model": model, "messages": [{"role": "user", "content": long}]}
        ),
        400,
        code="context_length_exceeded",
    )
    assert "512" in str(err["message"])
    # streaming requests get the status too, not a 200 stream with an error inside
    r = server.post(
        "v1/chat/completions",
        {"model": model, "messages": [{"role": "user", "content": long}], "stream": True},
    )
    assert_openai_error(r, 400, code="context_length_exceeded")


def test_401_missing_and_wrong_key(server: Server) -> None:
    for path in ("v1/models", "admin/status", "metrics"):
        r = server.get(path, key=None)
        assert_openai_error(r, 401, code="missing_api_key")
        assert r.headers["www-authenticate"].startswith("Bearer")
        assert_openai_error(server.get(path, key="wrong-key"), 401, code="invalid_api_key")
    assert_openai_error(
        server.post("v1/chat/completions", {"model": "x", "messages": HELLO}, key="wrong"), 401
    )
    with pytest.raises(openai.AuthenticationError):
        server.openai(key="wrong").models.list()


def test_404_unknown_model_and_path(server: Server) -> None:
    body = {"model": "no-such-model", "messages": HELLO}
    assert_openai_error(
        server.post("v1/chat/completions", body), 404, code="model_not_found", param="model"
    )
    assert_openai_error(
        server.post("v1/chat/completions", {**body, "stream": True}), 404, code="model_not_found"
    )
    assert_openai_error(
        server.post("v1/completions", {"model": "no-such-model", "prompt": "x"}),
        404,
        code="model_not_found",
    )
    assert_openai_error(
        server.post("v1/embeddings", {"model": "no-such-model", "input": "x"}),
        404,
        code="model_not_found",
    )
    assert_openai_error(server.get("v1/models/no-such-model"), 404, code="model_not_found")
    assert_openai_error(server.get("v1/nothing-here"), 404, code="not_found")
    assert_openai_error(server.get("v1/chat/completions"), 405, code="method_not_allowed")


@pytest.fixture(scope="module")
def limited(server_factory: Callable[..., Server], slow_model_dir: Path) -> Server:
    """Small limits: a 4 KiB body, two open requests, five seconds per request (long enough that
    two streams still hold the queue when a third request comes, on a loaded machine too)."""
    return server_factory(
        "--model",
        str(slow_model_dir),
        "--max-body-bytes",
        "4K",
        "--max-queue",
        "2",
        "--request-timeout",
        "5",
    )


def test_413_body_over_the_limit(limited: Server, slow_model_dir: Path) -> None:
    big = {"model": str(slow_model_dir), "messages": [{"role": "user", "content": "x" * 5000}]}
    assert_openai_error(limited.post("v1/chat/completions", big), 413, code="request_too_large")

    def chunks() -> object:  # no Content-Length: Transfer-Encoding chunked
        data = json.dumps(big).encode()
        for i in range(0, len(data), 1000):
            yield data[i : i + 1000]

    r = httpx.post(
        limited.url("v1/chat/completions"),
        content=chunks(),  # type: ignore[arg-type]
        headers={**limited.headers(), "Content-Type": "application/json"},
        timeout=30,
    )
    assert_openai_error(r, 413, code="request_too_large")
    # a body just under the limit is fine
    ok = {
        "model": str(slow_model_dir),
        "messages": [{"role": "user", "content": "x" * 100}],
        "max_tokens": 2,
    }
    assert limited.post("v1/chat/completions", ok).status_code == 200


def test_429_when_the_queue_is_full_and_504_past_the_time_limit(
    limited: Server, slow_model_dir: Path
) -> None:
    model = str(slow_model_dir)
    client = httpx.Client(timeout=30, headers=limited.headers())
    # two long streams fill the queue (max_queue 2)
    streams = [
        client.stream(
            "POST", limited.url("v1/chat/completions"), json=long_chat(model, stream=True)
        )
        for _ in range(2)
    ]
    responses = [s.__enter__() for s in streams]
    try:
        assert all(r.status_code == 200 for r in responses)
        r = limited.post("v1/chat/completions", long_chat(model, 5))
        assert_openai_error(r, 429, code="queue_full")
        assert int(r.headers["retry-after"]) >= 1
        with pytest.raises(openai.RateLimitError):
            limited.openai().chat.completions.create(model=model, messages=HELLO, max_tokens=2)  # type: ignore[arg-type]
        # past the 5 s limit the streams end with an error event (their status was already sent)
        tails = []
        for resp in responses:
            lines = [line for line in resp.iter_lines() if line.startswith("data: ")]
            tails.append(json.loads(lines[-1][len("data: ") :]))
        assert all(t["error"]["code"] == "timeout" for t in tails)
    finally:
        for s in streams:
            s.__exit__(None, None, None)
    # a request that runs past the limit before anything was sent: 504
    start = time.monotonic()
    assert_openai_error(limited.post("v1/chat/completions", long_chat(model)), 504, code="timeout")
    assert time.monotonic() - start < 10
    assert limited.metric("impetus:request_aborted_total", 'reason="timeout"') >= 3


def test_503_not_ready_without_a_model(server_factory: Callable[..., Server]) -> None:
    bare = server_factory(ready=False)
    deadline = time.monotonic() + 60
    while bare.get("health").json()["engine"] != "ready" and time.monotonic() < deadline:
        time.sleep(0.2)
    r = bare.get("ready", key=None)
    err = assert_openai_error(r, 503, code="not_ready")
    assert "no model is loaded" in str(err["message"])
    assert r.headers["retry-after"]


def test_503_while_the_engine_restarts(
    server_factory: Callable[..., Server], slow_model_dir: Path
) -> None:
    srv = server_factory("--model", str(slow_model_dir))
    model = str(slow_model_dir)
    pid = srv.get("admin/status").json()["pid"]
    with httpx.stream(
        "POST",
        srv.url("v1/chat/completions"),
        json=long_chat(model, stream=True),
        headers=srv.headers(),
        timeout=60,
    ) as r:
        assert r.status_code == 200
        lines = r.iter_lines()
        assert next(line for line in lines if line.startswith("data: "))
        os.kill(pid, signal.SIGKILL)  # the engine process dies mid-stream
        rest = [line for line in lines if line.startswith("data: ")]
    last = json.loads(rest[-1][len("data: ") :])
    assert last["error"]["code"] == "engine_restarted"

    # meanwhile: 503 with the reason, for readiness and for requests
    seen_503 = False
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        ready = srv.get("ready", key=None)
        if ready.status_code == 200:
            break
        assert_openai_error(ready, 503, code="not_ready")
        seen_503 = True
        chat = srv.post("v1/chat/completions", {"model": model, "messages": HELLO, "max_tokens": 2})
        if chat.status_code != 200:
            assert_openai_error(chat, 503)
            assert chat.headers["retry-after"]
        time.sleep(0.1)
    assert seen_503, "the restart was never visible on /ready"
    assert srv.get("ready").status_code == 200
    assert srv.get("admin/status").json()["pid"] != pid
    assert srv.metric("impetus:engine_restarts_total") == 1
    r2 = srv.post("v1/chat/completions", {"model": model, "messages": HELLO, "max_tokens": 2})
    assert r2.status_code == 200
