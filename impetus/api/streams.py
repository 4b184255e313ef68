"""One request's engine events as a single stream that can be abandoned at once.

A completions request with a batch of prompts runs one engine generation per prompt; the events of
all of them are merged here, each tagged with its OpenAI choice index (prompt number * n + the
engine's choice index). `abort()` wakes the reader immediately (a client disconnect, a shutdown
past its grace period), and `close()` cancels whatever is still running in the engine, so no
generation outlives its HTTP request.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any, Protocol

from impetus.engine.types import EngineError, Event

log = logging.getLogger(__name__)

_PUMP_END = object()
_ABORT = object()


class _Gen(Protocol):
    def __aiter__(self) -> Any: ...

    async def cancel(self) -> None: ...


class EventStream:
    def __init__(self, gens: list[_Gen], n: int) -> None:
        self.gens = gens
        self.n = n
        self.aborted: str | None = None  # why, once aborted
        self._queue: asyncio.Queue[Any] = asyncio.Queue()
        self._open = len(gens)
        self._pumps = [
            asyncio.create_task(self._pump(k, g), name=f"impetus-pump-{k}")
            for k, g in enumerate(gens)
        ]

    async def _pump(self, k: int, gen: _Gen) -> None:
        try:
            async for ev in gen:
                self._queue.put_nowait((k * self.n + ev.index, ev))
        except EngineError as e:
            self._queue.put_nowait(e)
        except Exception as e:  # a bug in the engine client must surface as an error, not a hang
            log.exception("engine generation failed")
            self._queue.put_nowait(EngineError("internal", f"engine client failure: {e}"))
        finally:
            self._queue.put_nowait(_PUMP_END)

    async def next(self) -> tuple[int, Event] | None:
        """The next (choice index, event), None at the end (or once aborted); raises EngineError."""
        while self.aborted is None:
            item = await self._queue.get()
            if item is _ABORT:
                break
            if item is _PUMP_END:
                self._open -= 1
                if self._open <= 0:
                    return None
                continue
            if isinstance(item, EngineError):
                raise item
            return item  # type: ignore[no-any-return,unused-ignore]
        return None

    def abort(self, reason: str) -> None:
        if self.aborted is None:
            self.aborted = reason
            self._queue.put_nowait(_ABORT)

    async def close(self) -> None:
        """Cancel every generation still open in the engine and stop the pumps."""
        for gen in self.gens:
            with contextlib.suppress(Exception):
                await gen.cancel()
        for task in self._pumps:
            task.cancel()
        for task in self._pumps:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
