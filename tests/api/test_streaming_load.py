"""Client disconnects cancel generations at once; 64 concurrent streams all complete."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from tests.api.conftest import Server, long_chat


@pytest.fixture(scope="module")
def slow_server(server_factory: Callable[..., Server], slow_model_dir: Path) -> Server:
    return server_factory("--model", str(slow_model_dir))


def _wait_idle(srv: Server, timeout: float = 3.0) -> float:
    """Seconds until the engine runs no request (fails after `timeout`)."""
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        if (
            srv.metric("impetus:num_requests_running") == 0
            and srv.metric("impetus:num_requests_waiting") == 0
        ):
            return time.monotonic() - start
        time.sleep(0.05)
    raise AssertionError("the engine still runs the request of a client that left")


def test_streaming_disconnect_cancels_the_generation(
    slow_server: Server, slow_model_dir: Path
) -> None:
    srv = slow_server
    aborted = srv.metric("impetus:request_aborted_total", 'reason="disconnect"')
    # 3000 tokens take ~15 s on this model: anything faster than that is the cancel at work
    with httpx.stream(
        "POST",
        srv.url("v1/chat/completions"),
        json=long_chat(str(slow_model_dir), stream=True),
        headers=srv.headers(),
        timeout=60,
    ) as r:
        lines = r.iter_lines()
        got = [line for _, line in zip(range(6), lines, strict=False)]
        assert any(line.startswith("data: ") for line in got)
        assert srv.metric("impetus:num_requests_running") == 1
    # the connection is closed here, mid-stream
    _wait_idle(srv)
    assert srv.metric("impetus:request_aborted_total", 'reason="disconnect"') == aborted + 1


def test_non_streaming_disconnect_cancels_the_generation(
    slow_server: Server, slow_model_dir: Path
) -> None:
    srv = slow_server
    aborted = srv.metric("impetus:request_aborted_total", 'reason="disconnect"')
    with pytest.raises(httpx.ReadTimeout):  # the client gives up after 1 s and closes
        httpx.post(
            srv.url("v1/chat/completions"),
            json=long_chat(str(slow_model_dir)),
            headers=srv.headers(),
            timeout=1.0,
        )
    _wait_idle(srv)
    assert srv.metric("impetus:request_aborted_total", 'reason="disconnect"') == aborted + 1
    assert srv.metric("impetus:http_requests_in_flight") == 0


def test_64_concurrent_streaming_clients(server: Server, model: str) -> None:
    async def one(client: object, i: int) -> tuple[str, str | None, int]:
        stream = await client.chat.completions.create(  # type: ignore[attr-defined]
            model=model,
            messages=[{"role": "user", "content": f"Request number {i}"}],
            max_tokens=16,
            temperature=0,
            stream=True,
            stream_options={"include_usage": True},
        )
        text, finish, usage = "", None, 0
        async for chunk in stream:
            if chunk.choices:
                text += chunk.choices[0].delta.content or ""
                finish = chunk.choices[0].finish_reason or finish
            if chunk.usage:
                usage = chunk.usage.completion_tokens
        return text, finish, usage

    async def main() -> list[tuple[str, str | None, int]]:
        import httpx as _httpx

        limits = _httpx.Limits(max_connections=100, max_keepalive_connections=100)
        async with server.async_openai(
            http_client=_httpx.AsyncClient(limits=limits, timeout=120)
        ) as client:
            return await asyncio.gather(*(one(client, i) for i in range(64)))

    results = asyncio.run(main())
    assert len(results) == 64
    for _text, finish, usage in results:
        assert finish in ("length", "stop")
        assert usage >= 1 and (finish == "stop" or usage == 16)
    _wait_idle(server)
