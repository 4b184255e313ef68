"""Engine: the blocking face of AsyncEngine, for scripts, tests and benchmarks.

It runs AsyncEngine on an event loop in a background thread; every method submits a coroutine
there and waits for its result.
"""

from __future__ import annotations

import asyncio
import queue
import threading
from collections.abc import Coroutine, Iterator
from typing import Any, TypeVar

from impetus.config import Settings
from impetus.engine.client import AsyncEngine, Generation
from impetus.protocol import (
    Delta,
    Done,
    EmbedResult,
    EngineError,
    EngineStatus,
    Event,
    GenerateRequest,
    ModelState,
)

T = TypeVar("T")
_END = object()


class SyncGeneration:
    """Iterate for events; `cancel()` from any thread."""

    def __init__(self, engine: Engine, gen: Generation) -> None:
        self._engine = engine
        self._gen = gen
        self._q: queue.Queue[Any] = queue.Queue()
        engine._submit_nowait(self._pump())

    async def _pump(self) -> None:
        try:
            async for ev in self._gen:
                self._q.put(ev)
        except EngineError as e:
            self._q.put(e)
        self._q.put(_END)

    @property
    def id(self) -> str:
        return self._gen.id

    def __iter__(self) -> Iterator[Event]:
        while True:
            item = self._q.get()
            if item is _END:
                return
            if isinstance(item, EngineError):
                raise item
            yield item

    def cancel(self) -> None:
        self._engine._run(self._gen.cancel())


class Engine:
    def __init__(self, settings: Settings | None = None) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="impetus-engine-client", daemon=True
        )
        self._thread.start()
        self.aengine: AsyncEngine = self._run(self._make(settings))

    async def _make(self, settings: Settings | None) -> AsyncEngine:
        return AsyncEngine(settings)

    def _run(self, coro: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout)

    def _submit_nowait(self, coro: Coroutine[Any, Any, Any]) -> None:
        asyncio.run_coroutine_threadsafe(coro, self._loop)

    def __enter__(self) -> Engine:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def state(self) -> str:
        return self.aengine.state

    @property
    def restarts(self) -> int:
        return self.aengine.restarts

    def start(self) -> Engine:
        self._run(self.aengine.start())
        return self

    def close(self) -> None:
        if self._loop.is_running():
            self._run(self.aengine.close())
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(5)

    def load(
        self, model: str, *, dtype: str | None = None, keep_alive: float | None = None
    ) -> ModelState:
        return self._run(self.aengine.load(model, dtype=dtype, keep_alive=keep_alive))

    def unload(self, model: str) -> bool:
        return self._run(self.aengine.unload(model))

    def status(self) -> EngineStatus:
        return self._run(self.aengine.status())

    def embed(self, model: str, texts: list[str]) -> EmbedResult:
        return self._run(self.aengine.embed(model, texts))

    def tokenize(self, request: GenerateRequest) -> list[int]:
        return self._run(self.aengine.tokenize(request))

    def generate(self, request: GenerateRequest) -> SyncGeneration:
        async def make() -> Generation:
            return self.aengine.generate(request)

        return SyncGeneration(self, self._run(make()))

    def complete(self, request: GenerateRequest) -> dict[int, dict[str, Any]]:
        """Run a request to the end: per choice index, the text, the done event and the token ids."""
        out: dict[int, dict[str, Any]] = {}
        for ev in self.generate(request):
            if not isinstance(ev, (Delta, Done)):
                continue
            c = out.setdefault(ev.index, {"text": "", "token_ids": [], "done": None})
            c["text"] += ev.text
            if isinstance(ev, Delta):
                c["token_ids"] += ev.token_ids
            else:
                c["done"] = ev
        return out

    def wait_ready(self, timeout: float = 60.0) -> None:
        self._run(self.aengine.wait_ready(timeout))

    def kill(self) -> None:
        self._run(self.aengine.kill())
