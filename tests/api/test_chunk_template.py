"""The per-token chunk (ChunkMaker.text_chunk) is the schema models' own output, copied."""

from __future__ import annotations

import asyncio
import json

import pytest

from impetus.api import sse
from impetus.api.convert import ChunkMaker
from impetus.api.schemas import ChatChunkChoice, ChatDelta, CompletionChoice
from impetus.protocol import Delta


@pytest.mark.parametrize("chat", [True, False])
@pytest.mark.parametrize("include_usage", [True, False])
@pytest.mark.parametrize(("index", "text"), [(0, " word"), (3, "é\n\"q\""), (1, "")])
def test_text_chunk_equals_the_schema_built_chunk(
    chat: bool, include_usage: bool, index: int, text: str
) -> None:
    maker = ChunkMaker("id-1", "m", chat, include_usage, want_logprobs=False, n=2)
    choice = (
        ChatChunkChoice(index=index, delta=ChatDelta(content=text))
        if chat
        else CompletionChoice(index=index, text=text)
    )
    slow = maker._wrap(choice)
    fast = maker.text_chunk(index, text)
    assert fast == slow and list(fast) == list(slow)  # same keys, same order
    assert list(fast["choices"][0]) == list(slow["choices"][0])
    # chunks made later do not share state with earlier ones
    maker.text_chunk(index + 1, "other")
    assert fast == slow


def test_a_delta_without_logprobs_takes_the_template() -> None:
    maker = ChunkMaker("id-2", "m", True, False, want_logprobs=False)
    chunk = maker.delta(0, Delta(rid="r", index=0, text="hi", token_ids=[5]))
    assert chunk == maker._wrap(ChatChunkChoice(index=0, delta=ChatDelta(content="hi")))
    assert maker.delta(0, Delta(rid="r", index=0, text="", token_ids=[6])) is None


class _Handler:
    """What sse.send uses of a Tornado handler."""

    def __init__(self) -> None:
        self.out = b""

    def write(self, data: bytes) -> None:
        self.out += data

    async def flush(self) -> None:
        pass


def test_sse_events_carry_the_json_that_json_dumps_writes() -> None:
    maker = ChunkMaker("id-3", "m", True, True, want_logprobs=False)
    chunk = maker.text_chunk(0, 'é "quoted" \u2028 \\ <tag>')
    chunk["choices"][0]["logprobs"] = {"content": [{"token": "a", "logprob": -0.5}]}
    handler = _Handler()
    asyncio.run(sse.send(handler, chunk))  # type: ignore[arg-type]
    asyncio.run(sse.send(handler, sse.DONE, event="end"))  # type: ignore[arg-type]
    expected = json.dumps(chunk, ensure_ascii=False, separators=(",", ":"))
    assert handler.out.decode() == f"data: {expected}\n\nevent: end\ndata: [DONE]\n\n"
