"""AsyncEngine: starts, supervises and talks to the engine process.

One reader task takes the engine's batched event messages off a ZMQ socket and routes each event
to its generation's queue; handlers only await their queue. A watcher task notices the process
dying, fails every open generation with `engine_restarted`, restarts it with back-off and loads
the models it had.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
import shutil
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

import msgpack
import zmq
import zmq.asyncio

from impetus.config import Settings
from impetus.engine.types import (
    EmbedResult,
    EngineError,
    EngineStatus,
    Event,
    GenerateRequest,
    ModelState,
    Timings,
    TokenLogprob,
    ToolCall,
    Usage,
)

log = logging.getLogger("impetus.engine")

Listener = Callable[["Generation", Event], None]
_END = object()


class Generation:
    """An open request: async-iterate for its events; `cancel()` frees its slot in the engine."""

    def __init__(self, engine: AsyncEngine, request: GenerateRequest) -> None:
        self.id = uuid.uuid4().hex
        self.request = request
        self.engine = engine
        self.queue: asyncio.Queue[Any] = asyncio.Queue()
        self.created = time.perf_counter()
        self.model: str | None = None  # the canonical id, known from the start event
        self.prompt_tokens = 0
        self.cached_tokens = 0
        self.finished = False
        self._open_choices = request.n

    def __aiter__(self) -> AsyncIterator[Event]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[Event]:
        while True:
            item = await self.queue.get()
            if item is _END:
                return
            if isinstance(item, EngineError):
                raise item
            yield item

    async def cancel(self) -> None:
        if not self.finished:
            self.finished = True
            self.engine._close_generation(self, cancel=True)
            self.queue.put_nowait(
                _END
            )  # a consumer still iterating ends instead of waiting forever

    # engine side
    def _deliver(self, ev: Event) -> None:
        if ev.type == "start":
            self.prompt_tokens = ev.usage.prompt_tokens if ev.usage else 0
            self.cached_tokens = ev.usage.cached_tokens if ev.usage else 0
        self.queue.put_nowait(ev)
        if ev.type == "done":
            self._open_choices -= 1
            if self._open_choices <= 0:
                self.finished = True
                self.queue.put_nowait(_END)
                self.engine._close_generation(self, cancel=False)

    def _fail(self, err: EngineError) -> None:
        self.finished = True
        self.queue.put_nowait(err)


class AsyncEngine:
    def __init__(self, settings: Settings | None = None) -> None:
        self.settings = settings or Settings()
        self.state = "stopped"
        self.restarts = 0
        self.last_error: str | None = None
        self.pid: int | None = None
        self._proc: asyncio.subprocess.Process | None = None
        self._ctx = zmq.asyncio.Context()
        self._dir = tempfile.mkdtemp(prefix="impetus-engine-")
        self._cmd: zmq.asyncio.Socket | None = None
        self._evt: zmq.asyncio.Socket | None = None
        self._gens: dict[str, Generation] = {}
        self._calls: dict[int, asyncio.Future[Any]] = {}
        self._ids = itertools.count(1)
        self._hello: asyncio.Future[dict[str, Any]] | None = None
        self._tasks: list[asyncio.Task[Any]] = []
        self._listeners: list[Listener] = []
        self._closing = False
        self._ready = asyncio.Event()
        self._wanted: dict[str, dict[str, Any]] = {}  # models to bring back after a restart
        self.blas = ""

    # ---- lifecycle -------------------------------------------------------------------------

    async def start(self) -> None:
        """Start the engine process (again, after a failed start) and load `settings.models`."""
        self.state = "starting"
        if self._evt is None:
            self._evt = self._ctx.socket(zmq.PULL)
            self._evt.bind(f"ipc://{self._dir}/evt")
            self._tasks.append(asyncio.create_task(self._read(), name="impetus-engine-reader"))
        await self._spawn()
        self._tasks.append(asyncio.create_task(self._watch(), name="impetus-engine-watcher"))
        for model in self.settings.models:
            await self.load(model, keep_alive=-1)

    async def _spawn(self) -> None:
        if self._cmd is not None:
            self._cmd.close(linger=0)
        self._cmd = self._ctx.socket(zmq.PUSH)
        self._cmd.bind(f"ipc://{self._dir}/cmd")
        loop = asyncio.get_running_loop()
        self._hello = loop.create_future()
        self._proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "impetus.engine.process",
            "--cmd",
            f"ipc://{self._dir}/cmd",
            "--evt",
            f"ipc://{self._dir}/evt",
            "--settings",
            self.settings.model_dump_json(),
            env=self.settings.env_for_engine(),
            stdin=asyncio.subprocess.DEVNULL,
        )
        proc = self._proc
        waiter: asyncio.Future[Any] = asyncio.ensure_future(proc.wait())
        hello_fut: asyncio.Future[Any] = self._hello
        done, _ = await asyncio.wait(
            {hello_fut, waiter},
            timeout=self.settings.engine_start_timeout,
            return_when=asyncio.FIRST_COMPLETED,
        )
        if self._hello not in done:
            waiter.cancel()
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
            self.state = "failed"
            self.last_error = f"the engine process exited with code {proc.returncode} during start-up (see its log)"
            from impetus.install import check_backend

            backend = check_backend()
            if not backend.ok:  # the usual cause on a fresh install: name it and its fix
                self.last_error += f"; {backend.problem}: fix it with `{backend.fix}`"
            raise EngineError("engine_unavailable", self.last_error)
        waiter.cancel()
        hello = self._hello.result()
        self.pid = int(hello["pid"])
        self.blas = str(hello.get("blas", ""))
        self.state = "ready"
        self._ready.set()

    async def close(self, grace: float = 5.0) -> None:
        """Stop the engine process: ask it to shut down, then kill it after `grace` seconds."""
        self._closing = True
        proc = self._proc
        if proc is not None and proc.returncode is None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._call("shutdown", {}), timeout=grace)
            try:
                await asyncio.wait_for(proc.wait(), timeout=grace)
            except TimeoutError:
                proc.kill()
                await proc.wait()
        for t in self._tasks:
            t.cancel()
        for t in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t
        self._tasks.clear()
        err = EngineError("engine_unavailable", "the engine was stopped")
        for g in list(self._gens.values()):
            g._fail(err)
        self._gens.clear()
        for sock in (self._cmd, self._evt):
            if sock is not None:
                sock.close(linger=0)
        self._ctx.term()
        shutil.rmtree(self._dir, ignore_errors=True)
        self.state = "stopped"

    async def _watch(self) -> None:
        backoff = 0.5
        while not self._closing:
            proc = self._proc
            assert proc is not None
            code = await proc.wait()
            if self._closing:
                return
            self.restarts += 1
            self.state = "restarting"
            self._ready.clear()
            self.last_error = f"the engine process exited with code {code}"
            log.error("%s; restarting it", self.last_error)
            err = EngineError(
                "engine_restarted", f"{self.last_error} during this request; it is being restarted"
            )
            for g in list(self._gens.values()):
                g._fail(err)
            self._gens.clear()
            for fut in self._calls.values():
                if not fut.done():
                    fut.set_exception(EngineError("engine_restarted", self.last_error))
            self._calls.clear()
            while not self._closing:
                await asyncio.sleep(backoff)
                try:
                    await self._spawn()
                    backoff = 0.5
                    break
                except EngineError:
                    backoff = min(backoff * 2, 10.0)
            for model, kw in list(self._wanted.items()):
                try:
                    await self._call("load", {"model": model, **kw})
                except EngineError as e:
                    log.error("could not reload %s after the restart: %s", model, e.message)

    # ---- the reader ------------------------------------------------------------------------

    async def _read(self) -> None:
        assert self._evt is not None
        while True:
            try:
                raw = await self._evt.recv()
            except (asyncio.CancelledError, zmq.ContextTerminated):
                return
            for w in msgpack.unpackb(raw, raw=False):
                try:
                    self._route(w)
                except Exception:
                    log.exception("bad event from the engine: %r", w)

    def _route(self, w: dict[str, Any]) -> None:
        t = w["t"]
        if t == "reply":
            fut = self._calls.pop(w["id"], None)
            if fut is not None and not fut.done():
                if w["ok"]:
                    fut.set_result(w.get("result"))
                else:
                    fut.set_exception(EngineError(w["code"], w["message"], w.get("param")))
            return
        if t == "hello":
            if self._hello is not None and not self._hello.done():
                self._hello.set_result(w)
            return
        gen = self._gens.get(w["rid"])
        if gen is None:
            return
        if t == "error":
            err = EngineError(w["code"], w["message"], w.get("param"))
            self._gens.pop(gen.id, None)
            ev = Event.model_construct(type="error", index=0, error=err.info)
            self._notify(gen, ev)
            gen._fail(err)
            return
        ev = _event(w)
        if t == "start":
            gen.model = w.get("model")
            if gen.model and gen.model not in self._wanted:
                self._wanted[
                    gen.model
                ] = {}  # loaded just in time: bring it back after a restart too
        self._notify(gen, ev)
        gen._deliver(ev)

    def _notify(self, gen: Generation, ev: Event) -> None:
        for fn in self._listeners:
            try:
                fn(gen, ev)
            except Exception:
                log.exception("engine listener failed")

    # ---- requests --------------------------------------------------------------------------

    def add_listener(self, fn: Listener) -> None:
        self._listeners.append(fn)

    @property
    def open_requests(self) -> int:
        return len(self._gens)

    def generate(self, request: GenerateRequest) -> Generation:
        if self.state != "ready":
            raise EngineError("engine_unavailable", f"the engine is {self.state}")
        if len(self._gens) >= self.settings.max_queue:
            raise EngineError(
                "queue_full",
                f"{len(self._gens)} requests are already open (limit {self.settings.max_queue}); retry shortly",
            )
        gen = Generation(self, request)
        self._gens[gen.id] = gen
        self._send(
            {"op": "generate", "rid": gen.id, "req": request.model_dump(exclude_defaults=True)}
        )
        return gen

    def _close_generation(self, gen: Generation, cancel: bool) -> None:
        if self._gens.pop(gen.id, None) is not None and cancel:
            self._send({"op": "cancel", "rid": gen.id})

    def _send(self, msg: dict[str, Any]) -> None:
        assert self._cmd is not None
        self._cmd.send(msgpack.packb(msg, use_bin_type=True), copy=False)

    async def _call(self, method: str, args: dict[str, Any], timeout: float | None = None) -> Any:
        if self._cmd is None:
            raise EngineError("engine_unavailable", "the engine is not started")
        cid = next(self._ids)
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._calls[cid] = fut
        self._send({"op": "call", "id": cid, "method": method, "args": args})
        try:
            return await asyncio.wait_for(fut, timeout)
        finally:
            self._calls.pop(cid, None)

    async def wait_ready(self, timeout: float | None = None) -> None:
        await asyncio.wait_for(self._ready.wait(), timeout)

    async def load(
        self,
        model: str,
        *,
        dtype: str | None = None,
        keep_alive: float | None = None,
        allow_paths: bool = True,
    ) -> ModelState:
        """Load a model; `allow_paths=False` for ids that come from untrusted clients."""
        kw: dict[str, Any] = {"allow_paths": allow_paths}
        if dtype:
            kw["dtype"] = dtype
        if keep_alive is not None:
            kw["keep_alive"] = keep_alive
        state = ModelState.model_validate(await self._call("load", {"model": model, **kw}))
        self._wanted[state.id] = kw
        return state

    async def unload(self, model: str) -> bool:
        res = await self._call("unload", {"model": model})
        self._wanted.pop(model, None)
        return bool(res["unloaded"])

    async def embed(self, model: str, texts: list[str]) -> EmbedResult:
        return EmbedResult.model_validate(
            await self._call("embed", {"model": model, "texts": texts})
        )

    async def tokenize(self, model: str, request: dict[str, Any]) -> list[int]:
        return list((await self._call("tokenize", {"model": model, "request": request}))["tokens"])

    async def status(self, timeout: float = 10.0) -> EngineStatus:
        if self.state != "ready":
            return EngineStatus.model_validate(
                {
                    "state": self.state,
                    "restarts": self.restarts,
                    "last_error": self.last_error,
                    "memory_budget": self.settings.memory_budget,
                }
            )
        raw = await self._call("status", {}, timeout=timeout)
        st = EngineStatus.model_validate(raw)
        st.restarts = self.restarts
        st.last_error = self.last_error
        return st

    async def ping(self, timeout: float = 5.0) -> bool:
        try:
            await self._call("ping", {}, timeout=timeout)
            return True
        except (TimeoutError, EngineError):
            return False

    async def kill(self) -> None:
        """Kill the engine process (tests of supervision; the watcher restarts it)."""
        if self._proc is not None and self._proc.returncode is None:
            os.kill(self._proc.pid, 9)


def _event(w: dict[str, Any]) -> Event:
    t = w["t"]
    if t == "delta":
        lps = w.get("lp")
        return Event.model_construct(
            type="delta",
            index=w["i"],
            text=w["text"],
            token_ids=w["ids"],
            logprobs=[_logprob(x) for x in lps] if lps else None,
            tool_calls=None,
            finish_reason=None,
            usage=None,
            timings=None,
            error=None,
        )
    if t == "start":
        return Event(
            type="start",
            usage=Usage(prompt_tokens=w["prompt_tokens"], cached_tokens=w["cached_tokens"]),
        )
    # done
    return Event(
        type="done",
        index=w["i"],
        text=w.get("text") or "",
        finish_reason=w["finish_reason"],
        tool_calls=[ToolCall(**c) for c in w["tool_calls"]] if w.get("tool_calls") else None,
        usage=Usage(**w["usage"]),
        timings=Timings(**w["timings"]),
    )


def _logprob(x: dict[str, Any]) -> TokenLogprob:
    tops = [
        TokenLogprob.model_construct(
            token=t["token"],
            token_id=t["token_id"],
            logprob=t["logprob"],
            bytes=t["bytes"],
            top_logprobs=[],
        )
        for t in x.get("top", ())
    ]
    return TokenLogprob.model_construct(
        token=x["token"],
        token_id=x["token_id"],
        logprob=x["logprob"],
        bytes=x["bytes"],
        top_logprobs=tops,
    )
