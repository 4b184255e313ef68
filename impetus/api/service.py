"""The object between the HTTP handlers and the engine: one per app, placed in the Tornado settings.

It owns the engine client (started lazily or at launch), the API keys, the metrics, and the
bookkeeping of requests in flight that graceful shutdown needs (drain, wait, abort the rest).
Handlers stay thin: they parse, call this, and write.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Iterator
from typing import Any

from impetus.api.errors import RETRY_AFTER_SECONDS, APIError
from impetus.api.keys import KeyStore
from impetus.api.metrics import Metrics
from impetus.api.schemas import ModelCard
from impetus.api.streams import EventStream
from impetus.config import Settings, migrate_legacy_home
from impetus.engine import AsyncEngine
from impetus.models import registry
from impetus.models.types import RegistryEntry
from impetus.protocol import EngineError, EngineStatus, GenerateRequest

log = logging.getLogger("impetus.api")

KEYS_FILE = "api_keys.json"


class ImpetusService:
    def __init__(self, settings: Settings, engine: AsyncEngine | None = None) -> None:
        self.settings = settings
        for line in migrate_legacy_home(settings):
            log.info("moved to the data / cache folders: %s", line)
        self.engine = engine or AsyncEngine(settings)
        self.keys = KeyStore(settings.home / KEYS_FILE, settings.api_keys)
        self.metrics = Metrics()
        self.engine.add_listener(self.metrics.on_event)
        self.metrics.open_generations.set_function(lambda: self.engine.open_requests)
        self.draining = False
        self.startup_error: str | None = None
        self.started_at = time.time()
        self.endpoint = ""  # the OpenAI base URL, set by whoever mounts the handlers
        self._start_task: asyncio.Future[None] | None = None
        self._inflight = 0
        self._idle = asyncio.Event()
        self._idle.set()
        self._streams: set[EventStream] = set()
        self.pull_jobs: dict[str, Any] = {}  # model id -> admin_models.PullJob

    # ---- engine lifecycle -----------------------------------------------------------------

    def start_background(self) -> asyncio.Future[None]:
        """Start the engine (and the start-up models) without waiting: requests wait for it."""
        if self._start_task is None:
            self._start_task = asyncio.ensure_future(self._start())
        return self._start_task

    def restart_background(self) -> asyncio.Future[None]:
        """Start the engine if it never started or its last start failed (the Start button)."""
        task = self._start_task
        if task is not None and task.done() and self.engine.state in ("stopped", "failed"):
            if not task.cancelled():
                task.exception()  # retrieved: the failure was reported through /ready
            self._start_task = None
            self.startup_error = None
        return self.start_background()

    async def _start(self) -> None:
        try:
            await self.engine.start()
        except EngineError as e:
            # The process may be up with a start-up model that failed to load: /ready says why.
            self.startup_error = e.message
            log.error("engine start-up: %s", e.message)
            if self.engine.state != "ready":
                raise

    async def ensure_engine(self) -> None:
        if self.engine.state == "ready":
            return
        task = self.start_background()
        try:
            await asyncio.shield(task)
        except EngineError as e:
            raise APIError.from_engine(e) from e

    async def close(self) -> None:
        for job in list(self.pull_jobs.values()):
            job.cancel.set()  # downloads stop at their next chunk; partial files stay resumable
        for stream in list(self._streams):
            stream.abort("shutdown")
        if self._start_task is not None and not self._start_task.done():
            self._start_task.cancel()
            with contextlib.suppress(BaseException):
                await self._start_task
        if self.engine.state != "stopped":
            await self.engine.close()

    async def status(self, timeout: float = 5.0) -> EngineStatus | None:
        """The engine's status (None if it does not answer in time); refreshes the gauges."""
        try:
            st = await self.engine.status(timeout=timeout)
        except (TimeoutError, EngineError):
            st = None
        self.metrics.set_status(st)
        return st

    async def readiness(self) -> tuple[bool, str, list[str]]:
        """(ready, why not, loaded models): ready means the engine runs and has a model loaded."""
        if self.draining:
            return False, "the server is shutting down", []
        state = self.engine.state
        if state != "ready":
            why = {
                "stopped": "the engine is not started",
                "starting": "the engine is starting",
                "restarting": "the engine process died and is being restarted",
                "failed": "the engine failed to start",
            }.get(state, f"the engine is {state}")
            if self.engine.last_error:
                why += f" ({self.engine.last_error})"
            return False, why, []
        st = await self.status()
        if st is None:
            return False, "the engine does not answer", []
        models = [m.id for m in st.models]
        if not models:
            why = "no model is loaded"
            if self.startup_error:
                why += f" ({self.startup_error})"
            return False, why, []
        return True, "", models

    # ---- requests in flight ---------------------------------------------------------------

    @contextlib.contextmanager
    def track(self) -> Iterator[None]:
        """Count a request in flight; refused with 503 once the server drains for shutdown."""
        if self.draining:
            raise APIError(
                503,
                "The server is shutting down; retry on another instance.",
                code="shutting_down",
                headers={"Retry-After": str(RETRY_AFTER_SECONDS)},
            )
        self._inflight += 1
        self._idle.clear()
        self.metrics.http_in_flight.inc()
        try:
            yield
        finally:
            self._inflight -= 1
            self.metrics.http_in_flight.dec()
            if self._inflight == 0:
                self._idle.set()

    @property
    def in_flight(self) -> int:
        return self._inflight

    async def drain(self, grace: float) -> bool:
        """Refuse new requests, wait up to `grace` seconds for those in flight; True if all ended."""
        self.draining = True
        try:
            await asyncio.wait_for(self._idle.wait(), timeout=grace)
            return True
        except TimeoutError:
            return False

    def abort_all(self, reason: str) -> int:
        for stream in list(self._streams):
            stream.abort(reason)
        return len(self._streams)

    def open(self, requests: list[GenerateRequest]) -> EventStream:
        """Start the engine generations of one HTTP request; engine refusals become APIErrors."""
        try:
            stream = EventStream(self.engine, requests)
        except EngineError as e:
            raise APIError.from_engine(e) from e
        self._streams.add(stream)
        return stream

    async def release(self, stream: EventStream) -> None:
        self._streams.discard(stream)
        await stream.close()

    # ---- models ---------------------------------------------------------------------------

    async def model_cards(self) -> list[ModelCard]:
        """Models a client may name: those loaded, then those the registry has on disk."""
        cards: dict[str, ModelCard] = {}
        # the start-up models count as available; with the engine down, the registry still
        # tells what could be loaded
        with contextlib.suppress(APIError):
            await self.ensure_engine()
        st = await self.status() if self.engine.state == "ready" else None
        for m in st.models if st else []:
            cards[m.id] = ModelCard(
                id=m.id,
                created=int(m.loaded_at),
                loaded=True,
                kind=m.kind,
                context_length=m.context_length,
                ranks=m.ranks,
            )
        for entry in await self.registry_entries():
            if entry.id not in cards and entry.downloaded:
                cards[entry.id] = ModelCard(
                    id=entry.id,
                    # when it arrived on disk; the registry knows it for everything downloaded
                    created=entry.created if entry.created is not None else int(self.started_at),
                    loaded=False,
                    kind=entry.kind,
                    context_length=entry.context_length,
                )
        return list(cards.values())

    async def registry_entries(self) -> list[RegistryEntry]:
        """The registry's entries (it scans folders: run off the event loop)."""
        return await asyncio.to_thread(registry.list_entries, self.settings)
