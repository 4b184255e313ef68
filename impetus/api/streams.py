"""One HTTP request's engine events, from one asyncio queue, as a stream that can be abandoned.

A completions request with a batch of prompts runs one engine generation per prompt; all of them
put their events straight into this stream's single queue (the engine client's reader does the
put), and `next()` tags each with its OpenAI choice index (prompt number * n + the engine's choice
index). `abort()` wakes the reader immediately (a client disconnect, a shutdown past its grace
period), and `close()` cancels whatever is still running in the engine, so no generation outlives
its HTTP request.
"""

from __future__ import annotations

import asyncio
import contextlib

from impetus.engine.client import AsyncEngine, Ended, Generation, QueueItem
from impetus.protocol import Delta, Done, EngineError, GenerateRequest, Start


class EventStream:
    def __init__(self, engine: AsyncEngine, requests: list[GenerateRequest]) -> None:
        """Start one generation per request; an EngineError (queue full, engine down) cancels
        those already started and propagates."""
        self.n = requests[0].n if requests else 1
        self.aborted: str | None = None  # why, once aborted
        self._queue: asyncio.Queue[QueueItem] = asyncio.Queue()
        self.gens: list[Generation] = []
        self._base: dict[str, int] = {}  # generation id -> its first OpenAI choice index
        try:
            for k, req in enumerate(requests):
                gen = engine.generate(req, self._queue)
                self.gens.append(gen)
                self._base[gen.id] = k * self.n
        except EngineError:
            for gen in self.gens:
                asyncio.ensure_future(gen.cancel())
            raise
        self._open = len(self.gens)

    async def next(self) -> tuple[int, Start | Delta | Done] | None:
        """The next (choice index, event), None at the end (or once aborted); raises EngineError."""
        while self.aborted is None and self._open > 0:
            item = await self._queue.get()
            if isinstance(item, Ended):
                if item.generation is None:  # abort()
                    break
                self._open -= 1
                continue
            if isinstance(item, EngineError):
                raise item
            index = 0 if isinstance(item, Start) else item.index
            return self._base.get(item.rid, 0) + index, item
        return None

    def abort(self, reason: str) -> None:
        if self.aborted is None:
            self.aborted = reason
            self._queue.put_nowait(Ended(None))

    async def close(self) -> None:
        """Cancel every generation still open in the engine."""
        for gen in self.gens:
            with contextlib.suppress(Exception):
                await gen.cancel()
