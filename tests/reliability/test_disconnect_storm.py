"""Disconnect storms: 200 clients that go away mid-stream and mid-upload leave nothing behind.

Raw sockets (not an HTTP client) so that each client drops exactly where the test says: after the
first SSE event of a stream, or halfway through a request body. Afterwards /metrics must show no
running or waiting sequence, no open handler, no generation the api still waits for, nothing in
flight, and the prompt cache within its bound; and the server still answers.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from tests.api.conftest import ADMIN_KEY, Server

CACHE_BOUND = 256 * 1024
CLIENTS = 200


@pytest.fixture(scope="module")
def storm_server(server_factory: Callable[..., Server], slow_model_dir: Path) -> Server:
    return server_factory(
        "--model", str(slow_model_dir), "--prompt-cache-bytes", str(CACHE_BOUND),
        "--max-queue", "1024",
    )  # fmt: skip


def _request(srv: Server, path: str, body: bytes, declared: int | None = None) -> bytes:
    u = urlsplit(srv.url(path))
    head = (
        f"POST {u.path} HTTP/1.1\r\nHost: {u.netloc}\r\nAuthorization: Bearer {ADMIN_KEY}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {declared or len(body)}\r\n\r\n"
    )
    return head.encode() + body


async def _drop_mid_stream(srv: Server, model: str, i: int) -> bool:
    u = urlsplit(srv.base_url)
    reader, writer = await asyncio.open_connection(u.hostname, u.port)
    body = {
        "model": model,
        "messages": [{"role": "user", "content": f"Story number {i}, please."}],
        "max_tokens": 2000,
        "ignore_eos": True,
        "stream": True,
    }
    writer.write(_request(srv, "v1/chat/completions", json.dumps(body).encode()))
    await writer.drain()
    got_event = False
    try:
        async with asyncio.timeout(60):
            while line := await reader.readline():
                if line.startswith(b"data: "):
                    got_event = True
                    break
    finally:
        writer.close()  # gone mid-stream
    return got_event


async def _drop_mid_upload(srv: Server, model: str, i: int) -> None:
    u = urlsplit(srv.base_url)
    _, writer = await asyncio.open_connection(u.hostname, u.port)
    body = json.dumps(
        {"model": model, "messages": [{"role": "user", "content": "x" * 20000}], "n": i}
    ).encode()
    # announce the whole body, send half of it, go away
    writer.write(_request(srv, "v1/chat/completions", body[: len(body) // 2], declared=len(body)))
    await writer.drain()
    await asyncio.sleep(0.2)
    writer.close()


def _leftovers(srv: Server) -> dict[str, float]:
    left = {
        name: srv.metric(name)
        for name in (
            "impetus:num_requests_running",
            "impetus:num_requests_waiting",
            "impetus:http_handlers_open",
            "impetus:engine_open_generations",
            "impetus:http_requests_in_flight",
        )
    }
    left["impetus:http_handlers_open"] -= 1  # the /metrics request reading it
    return left


def test_two_hundred_clients_dropping_leave_nothing_behind(
    storm_server: Server, slow_model_dir: Path
) -> None:
    model = str(slow_model_dir)

    async def storm() -> list[bool]:
        streams = [_drop_mid_stream(storm_server, model, i) for i in range(CLIENTS // 2)]
        uploads = [_drop_mid_upload(storm_server, model, i) for i in range(CLIENTS // 2)]
        results = await asyncio.gather(*streams, *uploads)
        return [r for r in results if r is not None]

    streamed = asyncio.run(storm())
    assert all(streamed), "every streaming client saw an event before it left"

    deadline = time.monotonic() + 30
    while (left := _leftovers(storm_server)) and any(left.values()):
        assert time.monotonic() < deadline, f"still open 30 s after the storm: {left}"
        time.sleep(0.5)

    cache = storm_server.metric("impetus:prompt_cache_bytes")
    assert 0 < cache <= CACHE_BOUND, cache  # the cancelled streams' caches, within the bound
    # cancelled, not finished: every stream was aborted by its disconnect
    assert (
        storm_server.metric("impetus:request_aborted_total", 'reason="disconnect"') >= CLIENTS // 2
    )
    r = storm_server.post(
        "v1/chat/completions",
        {"model": model, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 3},
    )
    assert r.status_code == 200 and r.json()["usage"]["completion_tokens"] == 3
