"""The one SSE parser (impetus.client.sse), table-driven: the spec's rules, line by line."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from impetus.client.sse import ServerSentEvent, SSEDecoder, aiter_events, iter_events

CASES = [
    ("one event", ["data: x", ""], [("message", "x")]),
    ("data lines joined", ['data: {"a":', "data: 1}", ""], [("message", '{"a":\n1}')]),
    ("named event", ["event: error", "data: e", ""], [("error", "e")]),
    ("name does not carry over", ["event: a", "data: 1", "", "data: 2", ""], [("a", "1"), ("message", "2")]),
    ("comments skipped", [": keepalive", "data: x", ": ping", ""], [("message", "x")]),
    ("no space after colon", ["data:x", ""], [("message", "x")]),
    ("one space only is stripped", ["data:  x", ""], [("message", " x")]),
    ("CRLF line ends", ["data: x\r\n", "\r\n"], [("message", "x")]),
    ("blank lines without data", ["", "", "event: a", ""], []),
    ("unknown fields ignored", ["id: 7", "retry: 10", "data: x", ""], [("message", "x")]),
    ("unterminated event dropped", ["data: x", "", "data: half"], [("message", "x")]),
    ("empty data line", ["data:", ""], [("message", "")]),
]  # fmt: skip


@pytest.mark.parametrize(("lines", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_events(lines: list[str], expected: list[tuple[str, str]]) -> None:
    assert list(iter_events(lines)) == expected

    async def alines() -> AsyncIterator[str]:
        for line in lines:
            yield line

    async def collect() -> list[ServerSentEvent]:
        return [ev async for ev in aiter_events(alines())]

    assert asyncio.run(collect()) == expected


def test_decoder_feeds_one_line_at_a_time() -> None:
    d = SSEDecoder()
    assert d.feed("data: [DONE]") is None
    ev = d.feed("")
    assert ev == ("message", "[DONE]") and ev is not None and ev.is_done
    assert not ServerSentEvent("message", '{"done": 1}').is_done
