"""Model management over HTTP: list, search, pull (progress as SSE), load, unload, delete.

Thin handlers over `impetus.models.registry` / `impetus.models.hub` (which do the file work, run
here in threads) and the engine (load / unload). A pull is a job of the server, not of the HTTP
request: several clients may follow the same pull (each gets the latest state, then every event),
a client that leaves does not stop it, and `pull/cancel` does.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, cast

from tornado.iostream import StreamClosedError

from impetus.api import sse
from impetus.api.auth import scope
from impetus.api.base import ImpetusHandler
from impetus.api.errors import APIError
from impetus.api.openapi import operation
from impetus.api.schemas import (
    LoadRequest,
    ModelIdRequest,
    ModelRegistry,
    PullCancelled,
    PullRequest,
    Unloaded,
)
from impetus.models import hub, registry
from impetus.models.types import DeleteResult, PullProgress, SearchResult
from impetus.protocol import EngineError, ErrorCode, ModelState

if TYPE_CHECKING:
    from impetus.api.service import ImpetusService

log = logging.getLogger("impetus.api")

FINAL = {"done", "error", "cancelled"}


def _model_error(e: EngineError) -> APIError:
    return APIError.from_engine(e)


# ---------------------------------------------------------------- pull jobs


@dataclass
class PullJob:
    id: str
    load: bool = False
    cancel: threading.Event = field(default_factory=threading.Event)
    last: PullProgress | None = None
    subscribers: list[asyncio.Queue[PullProgress]] = field(default_factory=list)
    task: asyncio.Task[None] | None = None

    def publish(self, ev: PullProgress) -> None:
        self.last = ev
        for q in list(self.subscribers):
            q.put_nowait(ev)


def _jobs(service: ImpetusService) -> dict[str, PullJob]:
    return service.pull_jobs


async def _run_pull(service: ImpetusService, job: PullJob) -> None:
    loop = asyncio.get_running_loop()
    held_done: list[PullProgress] = []

    def progress(ev: PullProgress) -> None:  # called in the download thread
        if ev.status == "done" and job.load:
            held_done.append(ev)  # "done" only once the model is loaded too
            return
        loop.call_soon_threadsafe(job.publish, ev)

    try:
        try:
            await asyncio.to_thread(
                registry.pull, job.id, service.settings, progress=progress, cancel=job.cancel
            )
        except EngineError:
            return  # registry.pull has already published the "error" / "cancelled" event
        if job.load and held_done:
            done = held_done[-1]
            job.publish(
                done.model_copy(
                    update={"status": "converting", "message": "loading into the engine"}
                )
            )
            try:
                await service.ensure_engine()
                state = await service.engine.load(job.id)
            except (EngineError, APIError) as e:
                job.publish(
                    done.model_copy(
                        update={
                            "status": "error",
                            "message": f"downloaded, but loading failed: {e}",
                        }
                    )
                )
                return
            job.publish(
                done.model_copy(update={"message": f"{done.message}; loaded as {state.dtype}"})
            )
    except Exception as e:  # a bug must end the stream, not leave followers waiting
        log.exception("pull of %s failed", job.id)
        job.publish(PullProgress(id=job.id, status="error", message=f"internal error: {e}"))
    finally:
        _jobs(service).pop(job.id, None)


def follow_pull(
    service: ImpetusService, model_id: str, load: bool
) -> tuple[PullJob, asyncio.Queue[PullProgress]]:
    """Start a pull of `model_id` (or join the one running) and subscribe to its progress: the
    job (its `last` event so far) and a queue of the events to come. `unfollow_pull` when done."""
    try:
        registry.validate_id(model_id)
    except EngineError as e:
        raise _model_error(e) from e
    jobs = _jobs(service)
    job = jobs.get(model_id)
    if job is None:
        job = PullJob(id=model_id, load=load)
        jobs[model_id] = job
        job.task = asyncio.ensure_future(_run_pull(service, job))
    else:
        job.load = job.load or load
    queue: asyncio.Queue[PullProgress] = asyncio.Queue()
    job.subscribers.append(queue)
    return job, queue


def unfollow_pull(job: PullJob, queue: asyncio.Queue[PullProgress]) -> None:
    with contextlib.suppress(ValueError):
        job.subscribers.remove(queue)


async def first_event(job: PullJob, queue: asyncio.Queue[PullProgress]) -> PullProgress:
    """The pull's state so far, or its first event. A pull refused before any progress (an
    unknown repo, not an MLX model) is answered with an HTTP error in the protocol's own shape
    (`failed_at_once`) rather than a stream that starts with 200."""
    return job.last if job.last is not None else await queue.get()


def pull_error(ev: PullProgress) -> APIError:
    """The HTTP error of a pull's final "error" or "cancelled" event (404 for an unknown repo)."""
    code = "cancelled" if ev.status == "cancelled" else (ev.code or "download_failed")
    return APIError.from_engine(EngineError(cast(ErrorCode, code), ev.message or ev.status))


def failed_at_once(ev: PullProgress) -> APIError | None:
    """The HTTP error of a pull whose first event refuses the request (a 4xx: an unknown id or
    repo, not a model impetus can run), else None: a failure of the hub or the network stays an
    "error" event of the stream, as a failure later in the download is."""
    if ev.status != "error" or not ev.id:
        return None
    error = pull_error(ev)
    return error if error.status < 500 else None


class PullFollower(ImpetusHandler):
    """A handler that follows a pull's progress (`admin/models/pull`, Ollama's `api/pull`)."""

    _queue: asyncio.Queue[PullProgress] | None = None

    def follow(self, model_id: str, load: bool) -> tuple[PullJob, asyncio.Queue[PullProgress]]:
        """`follow_pull`, with the queue kept so that a client that leaves wakes the handler."""
        job, queue = follow_pull(self.service, model_id, load)
        self._queue = queue
        return job, queue

    def on_connection_close(self) -> None:
        # Tornado's own fails the pending body future of a client that left mid-upload; without
        # it the handler would wait for that body forever.
        super().on_connection_close()
        # the pull goes on without this follower; wake the handler so it stops writing
        if self._queue is not None:
            self._queue.put_nowait(PullProgress(id="", status="cancelled", message="client left"))


# ---------------------------------------------------------------- handlers


class ModelsAdminHandler(ImpetusHandler):
    @scope("admin")
    @operation(
        "Registry entries (built-in, local, hub, GGUF), loaded or not",
        tag="Models",
        returns=ModelRegistry,
    )
    async def get(self) -> None:
        service = self.service
        loaded: dict[str, Any] = {}
        if service.engine.state == "ready":
            st = await service.status()
            loaded = {m.id: m for m in st.models} if st else {}
        entries = [e.model_dump(mode="json") for e in await service.registry_entries()]
        for e in entries:
            e["loaded"] = e["id"] in loaded
        known = {e["id"] for e in entries}
        for mid, m in loaded.items():
            if mid not in known:  # loaded by path: not a registry entry, still worth listing
                entries.append(
                    {
                        "id": mid,
                        "kind": m.kind,
                        "source": "path",
                        "path": m.path,
                        "loaded": True,
                        "downloaded": True,
                        "context_length": m.context_length,
                        "memory_bytes": m.memory_bytes,
                        "serving_dtype": m.dtype,
                    }
                )
        pulling = sorted(_jobs(service))
        self.write_json(ModelRegistry.model_validate({"data": entries, "pulling": pulling}))


class ModelSearchHandler(ImpetusHandler):
    @scope("admin")
    @operation(
        "Search the Hugging Face hub for MLX models",
        tag="Models",
        returns=SearchResult,
        query={"q": "words to look for", "limit": "most results (default 20)"},
    )
    async def get(self) -> None:
        query = self.get_argument("q", "")
        raw_limit = self.get_argument("limit", "20") or "20"
        if not raw_limit.isascii() or not raw_limit.isdigit() or not 1 <= int(raw_limit) <= 1000:
            raise APIError(
                400,
                f"Invalid value for 'limit': {raw_limit!r} (a whole number from 1 to 1000).",
                param="limit",
                code="invalid_value",
            )
        limit = int(raw_limit)
        result = await asyncio.to_thread(hub.search, query, limit=limit)
        # the hub's failure (offline, ...) comes back in `error`, with a 200: the list is empty
        self.write_json(result.model_dump(mode="json"))


class PullHandler(PullFollower):
    @scope("admin")
    @operation(
        "Download / convert a model: progress as SSE",
        tag="Models",
        body=PullRequest,
        stream=PullProgress,
        stream_note="`data: <progress JSON>` events until done, error or cancelled, then `data: [DONE]`",
        errors={
            400: "Not a model impetus can run (refused before any download)",
            404: "Unknown model or hub repo",
        },
        example={"id": "smollm2-135m", "load": True},
    )
    async def post(self) -> None:
        req = self.parse(PullRequest)
        job, queue = self.follow(req.id, req.load)
        try:
            first = await first_event(job, queue)
            if not first.id:  # the client left
                return
            error = failed_at_once(first)
            if error is not None:
                raise error
            sse.start(self)
            await sse.send(self, first.model_dump(mode="json"))
            if first.status in FINAL:
                await sse.send(self, sse.DONE)
                await sse.finish(self)
                return
            while True:
                ev = await queue.get()
                if self.request.connection is None or self._finished:
                    return
                if not ev.id:  # the client left
                    return
                await sse.send(self, ev.model_dump(mode="json"))
                if ev.status in FINAL:
                    break
            await sse.send(self, sse.DONE)
            await sse.finish(self)
        except StreamClosedError:
            pass
        finally:
            unfollow_pull(job, queue)


class PullCancelHandler(ImpetusHandler):
    @scope("admin")
    @operation(
        "Cancel a running pull",
        tag="Models",
        body=ModelIdRequest,
        returns=PullCancelled,
        errors={404: "No pull of this model is running"},
        example={"id": "smollm2-135m"},
    )
    async def post(self) -> None:
        req = self.parse(ModelIdRequest)
        job = _jobs(self.service).get(req.id)
        if job is None:
            raise APIError(
                404, f"No pull of {req.id!r} is running.", param="id", code="pull_not_found"
            )
        job.cancel.set()
        self.write_json(PullCancelled(id=req.id))


class LoadHandler(ImpetusHandler):
    @scope("admin")
    @operation(
        "Load a model into the engine",
        tag="Models",
        body=LoadRequest,
        returns=ModelState,
        errors={
            404: "Unknown model",
            500: "The model files cannot be loaded",
            503: "Over the memory budget, or the engine is not up",
        },
        example={"id": "smollm2-135m"},
    )
    async def post(self) -> None:
        req = self.parse(LoadRequest)
        service = self.service
        await service.ensure_engine()
        try:
            state = await service.engine.load(req.id, dtype=req.dtype, keep_alive=req.keep_alive)
        except EngineError as e:
            raise _model_error(e) from e
        self.write_json(state)


class UnloadHandler(ImpetusHandler):
    @scope("admin")
    @operation(
        "Unload a model",
        tag="Models",
        body=ModelIdRequest,
        returns=Unloaded,
        errors={503: "The engine is not up"},
        example={"id": "smollm2-135m"},
    )
    async def post(self) -> None:
        req = self.parse(ModelIdRequest)
        service = self.service
        await service.ensure_engine()
        try:
            unloaded = await service.engine.unload(req.id)
        except EngineError as e:
            raise _model_error(e) from e
        self.write_json(Unloaded(id=req.id, unloaded=unloaded))


class ModelDeleteHandler(ImpetusHandler):
    @scope("admin")
    @operation(
        "Delete a downloaded model (refused while loaded)",
        tag="Models",
        returns=DeleteResult,
        errors={400: "Loaded, or not deletable (a package's model)", 404: "Nothing on disk"},
    )
    async def delete(self, model_id: str) -> None:
        service = self.service
        loaded: list[str] = []
        if service.engine.state == "ready":
            st = await service.status()
            if st is None:
                raise APIError(
                    503,
                    "The engine does not answer; cannot tell whether the model is loaded.",
                    code="engine_unavailable",
                )
            loaded = [m.id for m in st.models]
        try:
            result = await asyncio.to_thread(
                registry.delete, model_id, service.settings, loaded=loaded
            )
        except EngineError as e:
            raise _model_error(e) from e
        self.write_json(result)


ROUTES: list[tuple[str, type[ImpetusHandler]]] = [
    (r"admin/models", ModelsAdminHandler),
    (r"admin/models/search", ModelSearchHandler),
    (r"admin/models/pull", PullHandler),
    (r"admin/models/pull/cancel", PullCancelHandler),
    (r"admin/models/load", LoadHandler),
    (r"admin/models/unload", UnloadHandler),
    (r"admin/models/(.+)", ModelDeleteHandler),
]
