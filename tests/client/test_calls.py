"""The shared request builder: both clients send the same requests and read the same answers
(httpx MockTransport stands in for the server; the real server is in tests/widgets)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Coroutine
from typing import Any

import httpx
import pytest

from impetus.api.schemas import AdminStatus, Ready
from impetus.client import (
    AsyncImpetusClient,
    Endpoint,
    ImpetusClient,
    ImpetusError,
    ServerUnavailable,
)
from impetus.models.types import HubModel, RegistryEntry
from impetus.protocol import ModelState, to_builtins

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
MODEL_STATE = ModelState(
    id="m", kind="chat", path="/m", dtype="float16", source_dtype="bfloat16",
    memory_bytes=2, context_length=8, loaded_at=1.0, last_used=2.0, keep_alive=5.0,
)  # fmt: skip
# each admin route's answer, as impetus writes it
ANSWERS: dict[str, Any] = {
    "/ready": {"status": "ready", "models": ["m"]},
    "/admin/status": to_builtins(
        AdminStatus(state="ready", endpoint="http://impetus.test/base/v1", models=[MODEL_STATE])
    ),
    "/admin/models": {"data": [{"id": "m", "kind": "chat", "source": "local"}], "pulling": []},
    "/v1/models": {"object": "list", "data": [{"id": "m", "created": 1, "loaded": True}]},
    "/admin/models/pull/cancel": {"id": "a/b", "cancelled": True},
    "/admin/models/load": to_builtins(MODEL_STATE),
    "/admin/models/unload": {"id": "m", "unloaded": True},
    "/admin/models/org%2Fm": {"id": "org/m", "removed": ["/models/org--m"], "freed_bytes": 3},
}


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
        route = request.url.raw_path.decode().removeprefix("/base")
        if route in ANSWERS:
            return httpx.Response(200, json=ANSWERS[route])
        return httpx.Response(200, json={"data": [{"id": "m"}], "path": path})

    return handle


def sync_calls(c: ImpetusClient) -> list[Any]:
    stream = c.chat_stream(HI, max_tokens=4)
    text = "".join(stream)
    return [
        c.health(), c.ready(), c.status(), c.metrics(), c.models(), c.search_models("q"),
        c.served_models(), [e.status for e in c.pull("a/b", load=True)], c.cancel_pull("a/b"),
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
        [e.status async for e in await c.pull("a/b", load=True)], await c.cancel_pull("a/b"),
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
    assert answers[0] is True and answers[3] == "x_total 1\n"
    # admin answers come back as the types the server writes them from
    assert answers[1] == Ready(models=["m"])
    assert isinstance(answers[2], AdminStatus) and answers[2].models == [MODEL_STATE]
    assert answers[4] == [RegistryEntry(id="m", kind="chat", source="local")]
    assert answers[5] == [HubModel(id="a/b")]
    assert [m.id for m in answers[6]] == ["m"] and answers[6][0].loaded
    assert answers[7] == ["downloading", "done"] and answers[8].cancelled
    assert answers[9] == MODEL_STATE and answers[10].unloaded and answers[11].freed_bytes == 3
    assert answers[12:14] == ["Hello", 2]
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


@pytest.mark.parametrize(
    ("call", "body", "field"),
    [
        ("status", '{"state": "ready", "models": "none"}', "models"),  # endpoint missing too
        ("load", '{"id": "m"}', "kind"),
        ("models", '{"data": [{"id": "m", "kind": "chat", "source": "nowhere"}]}', "source"),
        ("ready", "[]", "Ready"),
    ],
)
def test_an_answer_of_the_wrong_shape_is_an_impetus_error(call: str, body: str, field: str) -> None:
    """A server that answers something else than the route's type (another program on the port,
    an incompatible version) fails at the call, saying what, not with a KeyError later."""
    c = ImpetusClient(endpoint=Endpoint("http://impetus.test/"), transport=failing(200, body))
    args = ("m",) if call == "load" else ()
    with pytest.raises(ImpetusError, match="the answer is not a") as e:
        getattr(c, call)(*args)
    assert field in str(e.value) and e.value.status == 200


def test_fields_a_newer_server_adds_are_ignored() -> None:
    state = {**ANSWERS["/admin/models/load"], "a_field_from_the_future": [1, 2]}
    c = ImpetusClient(
        endpoint=Endpoint("http://impetus.test/"), transport=failing(200, json.dumps(state))
    )
    assert c.load("m") == MODEL_STATE
