"""The engine-boundary codec on the per-token path: how the wire vocabulary was chosen.

    python benchmarks/wire_codec.py [--streams 1,32] [--rounds 20000]

One engine step produces one token delta per running request; the engine encodes them as one
frame and the api decodes the frame into typed events. Three ways of doing that are timed on the
same deltas (microseconds per token, build + encode + decode, best of five):

- `dict + msgpack`: the hand-built dicts of the first engine (keys t/i/ids), `msgpack`, and
  pydantic `Event.model_construct` on the api side (what impetus did before the protocol module);
- `pydantic`: typed pydantic models on both sides (`model_dump` -> msgpack -> `model_validate`);
- `msgspec`: `impetus.protocol` Structs, encoded and decoded typed by msgspec (what it does now).
"""

from __future__ import annotations

import argparse
import platform
import sys
import timeit
from datetime import date
from typing import Any, Literal

import msgpack
from pydantic import BaseModel, Field

from impetus import protocol


class PydDelta(BaseModel):
    """The old engine's `Event`, reduced to what a delta carries."""

    type: Literal["start", "delta", "done", "error"]
    rid: str = ""
    index: int = 0
    text: str = ""
    token_ids: list[int] = Field(default_factory=list)
    logprobs: list[dict[str, Any]] | None = None


def dict_msgpack(rids: list[str]) -> None:
    frame = [{"t": "delta", "rid": r, "i": 0, "text": " word", "ids": [1234]} for r in rids]
    for w in msgpack.unpackb(msgpack.packb(frame, use_bin_type=True), raw=False):
        PydDelta.model_construct(
            type="delta", index=w["i"], text=w["text"], token_ids=w["ids"], logprobs=None
        )


def pydantic_typed(rids: list[str]) -> None:
    frame = [PydDelta(type="delta", rid=r, index=0, text=" word", token_ids=[1234]) for r in rids]
    raw = msgpack.packb([e.model_dump() for e in frame], use_bin_type=True)
    for w in msgpack.unpackb(raw, raw=False):
        PydDelta.model_validate(w)


def msgspec_typed(rids: list[str]) -> None:
    frame = [protocol.Delta(rid=r, index=0, text=" word", token_ids=[1234]) for r in rids]
    protocol.decode_messages(protocol.encode(frame))


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--streams", default="1,32", help="concurrent requests (deltas per frame)")
    ap.add_argument("--rounds", type=int, default=20000, help="frames per timing")
    args = ap.parse_args()
    ways = {"dict + msgpack": dict_msgpack, "pydantic": pydantic_typed, "msgspec": msgspec_typed}
    print(
        f"\n{date.today()} · {platform.machine()} · Python {platform.python_version()} · "
        f"`{' '.join(['python benchmarks/wire_codec.py', *sys.argv[1:]])}` (µs per token, best of 5)\n"
    )
    print("| streams | " + " | ".join(ways) + " |\n|---|" + "---|" * len(ways))
    for streams in (int(s) for s in args.streams.split(",")):
        rids = [f"{k:032x}" for k in range(streams)]
        rounds = max(args.rounds // streams, 100)
        row = []
        for fn in ways.values():
            best = min(timeit.repeat(lambda fn=fn, rids=rids: fn(rids), number=rounds, repeat=5))
            row.append(f"{best / rounds / streams * 1e6:.2f}")
        print(f"| {streams} | " + " | ".join(row) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
