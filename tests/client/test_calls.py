"""The shared request builder: both clients send the same requests and read the same answers
(httpx MockTransport stands in for the server; the real server is in tests/widgets)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Coroutine
from typing import Any

import httpx
import pytest

from impetus.client import (
    AsyncImpetusClient,
    Endpoint,
    ImpetusClient,
    ImpetusError,
    ServerUnavailable,
)

HI = [{"role": "user", "content": "hi"}]
SSE = (
    'data: {"id":"c1","choices":[{"index":0,"delta":{"content":"Hel"}}]}\n\n'
    ": keepalive\n\n"
    'data: {"id":"c1","choices":[{"index":0,"delta":{"content":"lo"},"finish_reason":"stop"}],'
    '"usage":{"prompt_tokens":3,"completion_tokens":2}}\n\n'
    "data: [DONE]\n\n"
)
PULL = "".join(
    f"data: {json.dumps({'id': 'a/b', 'status': s})}\n\n" for s in ("downloading", "done")
)


def server(seen: list[tuple[str, str, Any]]) -> Callable[[httpx.Request], httpx.Response]:
    """Records each request (method, path with query, JSON body) and answers like impetus."""

    def handle(request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content) if request.content else None
        seen.append((request.method, request.url.raw_path.decode(), body))
        path = request.url.path
        if path.endswith("/admin/models/pull"):
            return httpx.Response(200, text=PULL, headers={"content-type": "text/event-stream"})
        if path.endswith("/v1/chat/completions") and body["stream"]:
            return httpx.Response(200, text=SSE, headers={"content-type": "text/event-stream"})
        if path.endswith("/admin/models/search"):
            return httpx.Response(200, json={"query": "q", "models": [{"id": "a/b"}]})
        if path.endswith("/metrics"):
            return httpx.Response(200, text="x_total 1\n")
        if path.endswith("/missing"):
            return httpx.Response(404)
        return httpx.Response(200, json={"data": [{"id": "m"}], "path": path})

    return handle


def sync_calls(c: ImpetusClient) -> list[Any]:
    stream = c.chat_stream(HI, max_tokens=4)
    text = "".join(stream)
    return [
        c.health(), c.ready(), c.status(), c.metrics(), c.models(), c.search_models("q"),
        c.served_models(), [e["status"] for e in c.pull("a/b", load=True)], c.cancel_pull("a/b"),
        c.load("m", dtype="float16", keep_alive=5), c.unload("m"), c.delete("org/m"),
        text, stream.result and stream.result.completion_tokens,
        c.chat(HI, "m", temperature=0.5), c.completions("x", max_tokens=1),
        c.embeddings("x", "minilm"),
    ]  # fmt: skip


async def async_calls(c: AsyncImpetusClient) -> list[Any]:
    stream = await c.chat_stream(HI, max_tokens=4)
    text = "".join([t async for t in stream])
    return [
        await c.health(), await c.ready(), await c.status(), await c.metrics(), await c.models(),
        await c.search_models("q"), await c.served_models(),
        [e["status"] async for e in await c.pull("a/b", load=True)], await c.cancel_pull("a/b"),
        await c.load("m", dtype="float16", keep_alive=5), await c.unload("m"),
        await c.delete("org/m"), text, stream.result and stream.result.completion_tokens,
        await c.chat(HI, "m", temperature=0.5), await c.completions("x", max_tokens=1),
        await c.embeddings("x", "minilm"),
    ]  # fmt: skip


def test_sync_and_async_send_the_same_requests_and_read_the_same_answers() -> None:
    endpoint = Endpoint("http://impetus.test/base", "key")
    seen_sync: list[tuple[str, str, Any]] = []
    seen_async: list[tuple[str, str, Any]] = []
    with ImpetusClient(endpoint=endpoint, transport=httpx.MockTransport(server(seen_sync))) as c:
        answers = sync_calls(c)

    async def run() -> list[Any]:
        transport = httpx.MockTransport(server(seen_async))
        async with AsyncImpetusClient(endpoint=endpoint, transport=transport) as c:
            return await async_calls(c)

    assert asyncio.run(run()) == answers
    assert seen_async == seen_sync
    assert answers[0] is True and answers[3] == "x_total 1\n" and answers[5] == [{"id": "a/b"}]
    assert answers[7] == ["downloading", "done"] and answers[12:14] == ["Hello", 2]
    by_path = {path: body for _, path, body in seen_sync}
    assert by_path["/base/admin/models/search?q=q"] is None
    assert by_path["/base/admin/models/load"] == {"id": "m", "dtype": "float16", "keep_alive": 5}
    assert "/base/admin/models/org%2Fm" in by_path  # an ORG/NAME id is one path segment
    chat = [b for _, p, b in seen_sync if p.endswith("/chat/completions")]
    assert chat[0]["stream_options"] == {"include_usage": True} and chat[0]["max_tokens"] == 4
    assert chat[1] == {"model": "m", "messages": HI, "stream": False, "temperature": 0.5}


def failing(status: int, body: str) -> httpx.MockTransport:
    """A server that answers every request with `status` (a MockTransport serves both clients)."""
    return httpx.MockTransport(lambda _: httpx.Response(status, text=body))


ERROR = '{"error": {"message": "no such model", "type": "invalid_request_error", "code": "model_not_found"}}'


@pytest.mark.parametrize("call", ["models", "chat_stream", "pull"])
def test_errors_come_back_as_impetus_errors_from_both_clients(call: str) -> None:
    args: dict[str, tuple[Any, ...]] = {"models": (), "chat_stream": (HI,), "pull": ("a/b",)}
    endpoint = Endpoint("http://impetus.test/")
    with pytest.raises(ImpetusError) as sync_error:
        getattr(ImpetusClient(endpoint=endpoint, transport=failing(404, ERROR)), call)(*args[call])

    async def run() -> None:
        c = AsyncImpetusClient(endpoint=endpoint, transport=failing(404, ERROR))
        method: Callable[..., Coroutine[Any, Any, Any]] = getattr(c, call)
        await method(*args[call])

    with pytest.raises(ImpetusError) as async_error:
        asyncio.run(run())
    for e in (sync_error.value, async_error.value):
        assert (e.status, e.code, e.message) == (404, "model_not_found", "no such model")


def test_an_unreachable_server() -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    c = ImpetusClient(
        endpoint=Endpoint("http://impetus.test/"), transport=httpx.MockTransport(refuse)
    )
    assert c.health() is False  # a probe answers
    with pytest.raises(ServerUnavailable, match="unreachable"):
        c.status()
    with pytest.raises(ImpetusError, match="Not Found"):
        ImpetusClient(
            endpoint=Endpoint("http://impetus.test/"), transport=failing(404, "")
        ).status()
