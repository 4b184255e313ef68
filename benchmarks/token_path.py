"""The api side of the per-token path, without a model: engine frame in, SSE bytes out.

    python benchmarks/token_path.py [--streams 1,32] [--tokens 2000]

What happens in the api process for every generated token, timed alone (the engine's decode step,
milliseconds on a CPU, would hide it): the engine client's reader decodes one frame holding one
delta per open request and routes each into its request's queue; each request's handler takes
its event from `EventStream.next()`, builds the OpenAI chunk (`ChunkMaker`) and encodes the SSE
event as `sse.send` does. The engine socket is replaced by a stub, so nothing else runs.
Prints microseconds per token (best of 5).
"""

from __future__ import annotations

import argparse
import asyncio
import platform
import sys
import time
from datetime import date
from typing import Any

from impetus.api import convert, sse
from impetus.api.streams import EventStream
from impetus.config import Settings
from impetus.engine import AsyncEngine
from impetus.protocol import Delta, GenerateRequest, encode


class _Socket:
    def send(self, data: bytes, copy: bool = True) -> None:
        """The engine's command socket: the Generate commands go nowhere."""


class _Handler:
    def __init__(self) -> None:
        self.sent = 0

    def write(self, data: bytes) -> None:
        self.sent += len(data)

    async def flush(self) -> None:
        pass


async def run(streams: int, tokens: int) -> float:
    engine = AsyncEngine(Settings(max_queue=max(streams, 1)))
    engine.state = "ready"
    engine._cmd = _Socket()  # type: ignore[assignment]
    request = GenerateRequest(model="m", messages=[{"role": "user", "content": "hi"}])
    events = [EventStream(engine, [request]) for _ in range(streams)]
    makers = [convert.ChunkMaker(f"chatcmpl-{k}", "m", True, True, False) for k in range(streams)]
    handlers = [_Handler() for _ in range(streams)]
    frame = encode(
        [Delta(rid=s.gens[0].id, index=0, text=" word", token_ids=[1234]) for s in events]
    )
    t0 = time.perf_counter()
    for _ in range(tokens):
        engine._read_frame(frame)
        for stream, maker, handler in zip(events, makers, handlers, strict=True):
            item = await stream.next()
            assert item is not None and isinstance(item[1], Delta)
            chunk = maker.delta(*item)  # type: ignore[arg-type]
            assert chunk is not None
            await sse.send(handler, chunk)  # type: ignore[arg-type]
    elapsed = time.perf_counter() - t0
    for s in events:
        await s.close()
    engine._ctx.term()
    return elapsed / (tokens * streams)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--streams", default="1,32", help="open requests (deltas per engine frame)")
    ap.add_argument("--tokens", type=int, default=2000, help="frames per timing")
    args = ap.parse_args()
    print(
        f"\n{date.today()} · {platform.machine()} · Python {platform.python_version()} · "
        f"`{' '.join(['python benchmarks/token_path.py', *sys.argv[1:]])}` (µs per token, best of 5)\n"
    )
    print("| streams | api-side µs per token |\n|---|---|")
    for streams in (int(s) for s in args.streams.split(",")):
        tokens = max(args.tokens // streams, 50)
        best: Any = min(asyncio.run(run(streams, tokens)) for _ in range(5))
        print(f"| {streams} | {best * 1e6:.1f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
