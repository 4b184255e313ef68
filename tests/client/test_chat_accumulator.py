"""The client's stream accumulator (impetus.client.chat.ChatAccumulator): chat.completion.chunk
payloads in, deltas and a ChatResult out. Table-driven, no server, no clock assertions."""

from __future__ import annotations

from typing import Any

import pytest

from impetus.client.chat import ChatAccumulator


def chunk(
    content: str | None = None,
    *,
    index: int = 0,
    finish: str | None = None,
    logprobs: list[dict[str, Any]] | None = None,
    usage: dict[str, Any] | None = None,
    **extra: Any,
) -> dict[str, Any]:
    delta = {} if content is None else {"content": content}
    choice: dict[str, Any] = {"index": index, "delta": delta, "finish_reason": finish}
    if logprobs is not None:
        choice["logprobs"] = {"content": logprobs}
    return {
        "id": "chatcmpl-1",
        "model": "m",
        "choices": [] if usage and content is None and finish is None else [choice],
        "usage": usage,
        **extra,
    }


def tok(t: str) -> dict[str, Any]:
    return {"token": t, "logprob": -0.1, "top_logprobs": []}


USAGE = {"prompt_tokens": 7, "completion_tokens": 3, "prompt_tokens_details": {"cached_tokens": 4}}


@pytest.mark.parametrize(
    ("chunks", "deltas", "expected"),
    [
        (
            [chunk(""), chunk("Hel"), chunk("lo"), chunk(finish="stop"), chunk(usage=USAGE)],
            ["", "Hel", "lo", "", ""],
            {
                "text": "Hello",
                "finish_reason": "stop",
                "prompt_tokens": 7,
                "completion_tokens": 3,
                "cached_tokens": 4,
                "id": "chatcmpl-1",
                "model": "m",
            },
        ),
        (  # only choice 0 is followed
            [chunk("a"), chunk("B", index=1), chunk("b", finish="length")],
            ["a", "", "b"],
            {"text": "ab", "finish_reason": "length", "completion_tokens": None},
        ),
        (  # no usage chunk (include_usage off): token counts stay unknown
            [chunk("x", finish="stop")],
            ["x"],
            {"text": "x", "prompt_tokens": None, "usage": None},
        ),
    ],
)
def test_deltas_and_result(
    chunks: list[dict[str, Any]], deltas: list[str], expected: dict[str, Any]
) -> None:
    acc = ChatAccumulator()
    assert [acc.add(c) for c in chunks] == deltas
    result = acc.finish()
    assert {k: getattr(result, k) for k in expected} == expected
    assert result.elapsed >= 0


def test_logprobs_wait_for_the_text_that_completes_them() -> None:
    acc = ChatAccumulator()
    acc.add(chunk("", logprobs=[tok("\xe2")]))  # half a character: no text yet
    assert acc.step_tokens == []
    assert acc.add(chunk("é", logprobs=[tok("\xa9")])) == "é"
    assert [t["token"] for t in acc.step_tokens] == ["\xe2", "\xa9"]
    acc.add(chunk("!", logprobs=[tok("!")]))
    assert [t["token"] for t in acc.step_tokens] == ["!"]
    assert [t["token"] for t in acc.finish().logprobs or []] == ["\xe2", "\xa9", "!"]


@pytest.mark.parametrize(
    ("timings_at", "tps"),
    [
        ("chunk", 42.5),  # llama.cpp-style timings on the chunk
        ("usage", 42.5),  # ... or inside usage
        (None, None),  # one burst of text: no measurable decode span, no number
    ],
)
def test_decode_speed(timings_at: str | None, tps: float | None) -> None:
    timings = {"decode_tps": 42.5, "ttft": 0.01}
    usage = dict(USAGE, completion_tokens=5)
    if timings_at == "usage":
        usage["timings"] = timings
    extra = {"timings": timings} if timings_at == "chunk" else {}
    acc = ChatAccumulator()
    acc.add(chunk("all at once", finish="stop"))
    acc.add(chunk(usage=usage, **extra))
    result = acc.finish()
    assert result.tokens_per_second == tps
    assert result.engine_timings == (timings if timings_at else None)
    assert result.ttft is not None


@pytest.mark.parametrize(
    ("finish", "cancelled", "expected"),
    [(None, True, "cancelled"), ("stop", True, "stop"), (None, False, None)],
)
def test_a_stream_closed_here(finish: str | None, cancelled: bool, expected: str | None) -> None:
    acc = ChatAccumulator()
    acc.add(chunk("partial", finish=finish))
    assert acc.finish(cancelled=cancelled).finish_reason == expected
