"""AsyncEngine: starts, supervises and talks to the engine process.

One reader task takes the engine's frames (one per engine step, `impetus.protocol` messages typed
by the decoder) off a ZMQ socket and puts each event straight into its request's asyncio queue:
that queue is the only one between the engine and the HTTP handler that reads it. A watcher task
notices the process dying, fails every open generation with `engine_restarted`, restarts it with
back-off and loads the models it had.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
import shutil
import signal
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any, TypeVar

import zmq
import zmq.asyncio

from impetus.config import Settings
from impetus.engine import autoranks, distributed
from impetus.protocol import (
    Call,
    Cancel,
    Command,
    Delta,
    Done,
    Embed,
    EmbedResult,
    EngineError,
    EngineState,
    EngineStatus,
    Event,
    Generate,
    GenerateRequest,
    GetStatus,
    Hello,
    Load,
    Message,
    ModelState,
    Ping,
    RanksInfo,
    Reply,
    Shutdown,
    Start,
    Tokenize,
    Unload,
    decode_messages,
    decode_result,
    encode,
)

log = logging.getLogger("impetus.engine")

T = TypeVar("T")
# one engine process, or the ranks of a group on this machine supervised as one
EngineProcess = asyncio.subprocess.Process | distributed.LocalRanks
# Called with the generation and each of its Start, Done and Failed events (not the per-token
# deltas: nothing that listens needs them, and the per-token path stays one queue put).
Listener = Callable[["Generation", Event], None]


class Ended:
    """Put in a generation's queue after its last event (all choices done, or cancelled);
    `generation` None: whoever reads the queue should stop (impetus.api.streams' abort)."""

    __slots__ = ("generation",)

    def __init__(self, generation: Generation | None) -> None:
        self.generation = generation


# What a generation's queue holds: its events (a Failed arrives as the EngineError it carries)
QueueItem = Start | Delta | Done | Ended | EngineError


class Generation:
    """An open request; `cancel()` frees its slot in the engine.

    Its events go straight into `queue`, followed by an `Ended` marker, or an `EngineError` if it
    fails. The queue is its own unless the caller passes one to share between the generations of
    one HTTP request (impetus.api.streams); async-iterate a generation only when it owns its queue.
    """

    def __init__(
        self,
        engine: AsyncEngine,
        request: GenerateRequest,
        queue: asyncio.Queue[QueueItem] | None = None,
    ) -> None:
        self.id = uuid.uuid4().hex
        self.request = request
        self.engine = engine
        self.queue: asyncio.Queue[QueueItem] = queue if queue is not None else asyncio.Queue()
        self.created = time.perf_counter()
        self.model: str | None = None  # the canonical id, known from the start event
        self.prompt_tokens = 0
        self.cached_tokens = 0
        self.finished = False
        self._open_choices = request.n

    def __aiter__(self) -> AsyncIterator[Start | Delta | Done]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[Start | Delta | Done]:
        while True:
            item = await self.queue.get()
            if isinstance(item, Ended):
                return
            if isinstance(item, EngineError):
                raise item
            yield item

    async def cancel(self) -> None:
        if not self.finished:
            self.finished = True
            self.engine._close_generation(self, cancel=True)
            # a consumer still reading ends instead of waiting forever
            self.queue.put_nowait(Ended(self))

    # the engine client's side
    def _start(self, ev: Start) -> None:
        self.model = ev.model
        self.prompt_tokens = ev.prompt_tokens
        self.cached_tokens = ev.cached_tokens
        self.queue.put_nowait(ev)

    def _done(self, ev: Done) -> None:
        self.queue.put_nowait(ev)
        self._open_choices -= 1
        if self._open_choices <= 0:
            self.finished = True
            self.queue.put_nowait(Ended(self))
            self.engine._close_generation(self, cancel=False)

    def _fail(self, err: EngineError) -> None:
        self.finished = True
        self.queue.put_nowait(err)


def _encode_request(cmd: Command) -> bytes:
    """A command on the wire. Free-form fields of a request (tools and their schemas,
    response_format, template kwargs) may hold what MessagePack cannot carry (an integer past 64
    bits): that is a bad request, not a crash."""
    try:
        return encode(cmd)
    except (OverflowError, UnicodeEncodeError, TypeError, ValueError) as e:
        raise EngineError(
            "invalid_request", f"the request holds a value the engine cannot take: {e}"
        ) from e


class AsyncEngine:
    def __init__(self, settings: Settings | None = None) -> None:
        self.settings = settings or Settings()
        self.state: EngineState = "stopped"
        self.restarts = 0
        self.last_error: str | None = None
        self.pid: int | None = None
        self._proc: EngineProcess | None = None
        self._ctx = zmq.asyncio.Context()
        self._dir = tempfile.mkdtemp(prefix="impetus-engine-")
        self._cmd: zmq.asyncio.Socket | None = None
        self._evt: zmq.asyncio.Socket | None = None
        self._gens: dict[str, Generation] = {}
        self._calls: dict[int, asyncio.Future[Reply]] = {}
        self._ids = itertools.count(1)
        self._hello: asyncio.Future[Hello] | None = None
        self._tasks: list[asyncio.Task[Any]] = []
        self._listeners: list[Listener] = []
        self._closing = False
        self._ready = asyncio.Event()
        self._wanted: dict[str, Load] = {}  # models to bring back after a restart
        self._spare: EngineProcess | None = None  # engine_standby
        self.blas = ""
        self.ranks: RanksInfo | None = None  # the group of ranks rank 0's Hello named
        # engine processes to start: the setting, or what `ranks = "auto"` chose at start()
        self.rank_count = self.settings.ranks if isinstance(self.settings.ranks, int) else 1
        self.rank_choice: autoranks.RankChoice | None = None

    # ---- lifecycle -------------------------------------------------------------------------

    async def start(self) -> None:
        """Start the engine process (again, after a failed start) and load `settings.models`."""
        self.state = "starting"
        if self.settings.ranks == "auto":
            # reads the models' sizes and asks NVML (or MLX, in a child process): off the loop
            self.rank_choice = await asyncio.to_thread(autoranks.choose_for, self.settings)
            self.rank_count = self.rank_choice.ranks
            log.info("%s", self.rank_choice.line())
        else:
            self.rank_count = self.settings.ranks
        try:
            distributed.check_settings(self.settings, self.rank_count)
        except ValueError as e:
            self.state = "failed"
            self.last_error = str(e)
            raise EngineError("engine_unavailable", str(e)) from e
        if self._evt is None:
            self._evt = self._ctx.socket(zmq.PULL)
            self._evt.bind(f"ipc://{self._dir}/evt")
            self._tasks.append(asyncio.create_task(self._read(), name="impetus-engine-reader"))
        await self._spawn(first=True)
        self._tasks.append(asyncio.create_task(self._watch(), name="impetus-engine-watcher"))
        for model in self.settings.models:
            await self.load(model, keep_alive=-1)

    async def _launch(self) -> EngineProcess:
        """An engine process that loads its libraries and then waits for a line on its standard
        input before it connects (a spare must not take commands while another engine runs).
        With `ranks` > 1, one per rank (`LocalRanks`), each getting that line."""
        engine = [
            sys.executable,
            "-m",
            "impetus.engine.process",
            "--cmd",
            f"ipc://{self._dir}/cmd",
            "--evt",
            f"ipc://{self._dir}/evt",
            "--settings",
            self.settings.model_dump_json(),
            "--api-pid",
            str(os.getpid()),
        ]
        env = self.settings.env_for_engine()
        if self.rank_count > 1:
            return await distributed.LocalRanks.start(self.rank_count, engine, env)
        return await asyncio.create_subprocess_exec(*engine, env=env, stdin=asyncio.subprocess.PIPE)

    async def _take_spare(self) -> EngineProcess:
        """The spare engine process if one is alive, else a new process."""
        spare, self._spare = self._spare, None
        if spare is not None and spare.returncode is None:
            return spare
        return await self._launch()

    async def _start_spare(self) -> None:
        """Start the next spare (engine_standby): it imports MLX, mlx-lm and transformers now,
        which on a busy machine takes most of a restart's time, then waits to be needed."""
        # Not for a group of ranks: the ring ports chosen at a spare group's launch would have to
        # stay free until it is used, and a group's restart is dominated by its rendezvous and
        # the models' load, not by imports. Under an outside launcher (rank 0 of mlx.launch) a
        # dead rank ends the whole job, so a spare would never be used.
        grouped = self.rank_count > 1 or distributed.launched_rank() is not None
        if not self.settings.engine_standby or grouped or self._closing:
            return
        if self._spare is None or self._spare.returncode is not None:
            self._spare = await self._launch()

    async def _stop_spare(self) -> None:
        spare, self._spare = self._spare, None
        if spare is not None and spare.returncode is None:
            # it holds no model and no request, and may still be importing (seconds): killed
            # at once, so that it never holds up a shutdown (it may exit by itself meanwhile)
            with contextlib.suppress(ProcessLookupError):
                spare.kill()
            await spare.wait()

    async def _spawn(self, ready: bool = True, first: bool = False) -> None:
        """Start the engine process (the spare when there is one) and wait for its Hello;
        `ready=False` leaves the state to the caller (a restart reloads models first). `first`:
        the server's start, where the spare imports its libraries beside the engine's own
        imports (one process each: a core each), so that it is ready when the engine is."""
        if self._cmd is not None:
            self._cmd.close(linger=0)
        self._cmd = self._ctx.socket(zmq.PUSH)
        self._cmd.bind(f"ipc://{self._dir}/cmd")
        loop = asyncio.get_running_loop()
        self._hello = loop.create_future()
        self._proc = await self._take_spare()
        proc = self._proc
        assert proc.stdin is not None
        proc.stdin.write(b"go\n")  # connect and say hello
        with contextlib.suppress(ConnectionError):  # it died meanwhile: the wait below says so
            await proc.stdin.drain()
        if first:
            await self._start_spare()
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
                await self._kill_group(proc)
            self.state = "failed"
            self.last_error = f"the engine process exited with code {proc.returncode} during start-up (see its log)"
            from impetus.install import check_backend

            backend = check_backend()
            if not backend.ok:  # the usual cause on a fresh install: name it and its fix
                self.last_error += f"; {backend.problem}: fix it with `{backend.fix}`"
            raise EngineError("engine_unavailable", self.last_error)
        waiter.cancel()
        hello = self._hello.result()
        self.pid = hello.pid
        self.blas = hello.blas
        self.ranks = hello.ranks
        if ready:
            self.state = "ready"
            self._ready.set()

    async def close(self, grace: float = 5.0) -> None:
        """Stop the engine process: ask it to shut down, then kill it after `grace` seconds."""
        self._closing = True
        await self._stop_spare()
        proc = self._proc
        if proc is not None and proc.returncode is None:
            with contextlib.suppress(Exception):
                await self._call(Shutdown(id=self._next_id()), type(None), timeout=grace)
            try:
                await asyncio.wait_for(proc.wait(), timeout=grace)
            except TimeoutError:
                await self._kill_group(proc)
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
        backoff = 0.0
        last_restart = -1e9
        while not self._closing:
            proc = self._proc
            assert proc is not None
            code = await proc.wait()
            if self._closing:
                return
            self.restarts += 1
            self.state = "restarting"
            self._ready.clear()
            if isinstance(proc, distributed.LocalRanks) and proc.ended is not None:
                rank, code = proc.ended
                self.last_error = (
                    f"rank {rank} of the engine group ({len(proc.procs)} ranks) exited "
                    f"with code {code}"
                )
            else:
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
            # A crash restarts at once (the spare has its libraries loaded: only the models are
            # loaded again); crashes in a row, or a failing start, back off from 0.5 s up to
            # 10 s, so that a model that kills the engine as it loads does not spin.
            now = time.monotonic()
            backoff = 0.0 if now - last_restart > 30.0 else min(max(2 * backoff, 0.5), 10.0)
            last_restart = now
            while not self._closing:
                await asyncio.sleep(backoff)
                try:
                    await self._spawn(ready=False)
                    break
                except EngineError:
                    backoff = min(max(2 * backoff, 0.5), 10.0)
            if self._closing:
                return
            # still "restarting" (so /ready says 503 and requests get a clear 503) until the
            # models it had are back
            if await self._reload():
                self.state = "ready"
                self._ready.set()
                await self._start_spare()

    async def _reload(self) -> bool:
        """Load the models the dead engine had into the new one; False if it died meanwhile
        (then the watcher restarts it again)."""
        proc = self._proc
        assert proc is not None
        died = asyncio.ensure_future(proc.wait())
        try:
            for model, load in list(self._wanted.items()):
                load.id = self._next_id()
                call = asyncio.ensure_future(self._call(load, ModelState))
                await asyncio.wait({call, died}, return_when=asyncio.FIRST_COMPLETED)
                if not call.done():
                    call.cancel()
                    return False
                try:
                    call.result()
                except EngineError as e:
                    log.error("could not reload %s after the restart: %s", model, e.message)
            return not died.done()
        finally:
            died.cancel()

    # ---- the reader ------------------------------------------------------------------------

    async def _read(self) -> None:
        assert self._evt is not None
        while True:
            try:
                raw = await self._evt.recv()
            except (asyncio.CancelledError, zmq.ContextTerminated):
                return
            self._read_frame(raw)

    def _read_frame(self, raw: bytes) -> None:
        """One frame of the engine (one step's events, or a reply): decoded typed, routed."""
        try:
            frame = decode_messages(raw)
        except Exception:
            log.exception("undecodable frame from the engine (%d bytes)", len(raw))
            return
        for msg in frame:
            try:
                self._route(msg)
            except Exception:
                log.exception("could not route %r", msg)

    def _route(self, msg: Message) -> None:
        if isinstance(msg, Delta):  # the per-token path: one dict lookup, one queue put
            gen = self._gens.get(msg.rid)
            if gen is not None:
                gen.queue.put_nowait(msg)
            return
        if isinstance(msg, Reply):
            fut = self._calls.pop(msg.id, None)
            if fut is not None and not fut.done():
                fut.set_result(msg)
            return
        if isinstance(msg, Hello):
            if self._hello is not None and not self._hello.done():
                self._hello.set_result(msg)
            return
        gen = self._gens.get(msg.rid)
        if gen is None:
            return
        if isinstance(msg, Start):
            if msg.model not in self._wanted:
                # loaded just in time: bring it back after a restart too
                self._wanted[msg.model] = Load(id=0, model=msg.model)
            gen._start(msg)
            self._notify(gen, msg)
        elif isinstance(msg, Done):
            self._notify(gen, msg)
            gen._done(msg)
        else:
            self._notify(gen, msg)
            self._gens.pop(gen.id, None)
            gen._fail(EngineError.from_info(msg.error))

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

    def generate(
        self, request: GenerateRequest, queue: asyncio.Queue[QueueItem] | None = None
    ) -> Generation:
        """Send a request to the engine; its events go into `queue` (see Generation)."""
        if self.state != "ready":
            raise EngineError("engine_unavailable", f"the engine is {self.state}")
        if len(self._gens) >= self.settings.max_queue:
            raise EngineError(
                "queue_full",
                f"{len(self._gens)} requests are already open (limit {self.settings.max_queue}); retry shortly",
            )
        gen = Generation(self, request, queue)
        raw = _encode_request(Generate(rid=gen.id, request=request))
        self._gens[gen.id] = gen
        assert self._cmd is not None
        self._cmd.send(raw, copy=False)
        return gen

    def _close_generation(self, gen: Generation, cancel: bool) -> None:
        if self._gens.pop(gen.id, None) is not None and cancel:
            self._send(Cancel(rid=gen.id))

    def _send(self, cmd: Command) -> None:
        assert self._cmd is not None
        self._cmd.send(encode(cmd), copy=False)

    def _next_id(self) -> int:
        return next(self._ids)

    async def _call(self, cmd: Call, result: type[T], timeout: float | None = None) -> T:
        """Send a call and wait for its Reply; the result decoded as `result`."""
        if self._cmd is None:
            raise EngineError("engine_unavailable", "the engine is not started")
        raw = _encode_request(cmd)  # before anything waits on it
        fut: asyncio.Future[Reply] = asyncio.get_running_loop().create_future()
        self._calls[cmd.id] = fut
        self._cmd.send(raw, copy=False)
        try:
            reply = await asyncio.wait_for(fut, timeout)
        finally:
            self._calls.pop(cmd.id, None)
        return decode_result(reply, result)

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
        cmd = Load(
            id=self._next_id(),
            model=model,
            dtype=dtype or None,
            keep_alive=keep_alive,
            allow_paths=allow_paths,
        )
        state = await self._call(cmd, ModelState)
        self._wanted[state.id] = cmd
        return state

    async def unload(self, model: str) -> bool:
        unloaded = await self._call(Unload(id=self._next_id(), model=model), bool)
        self._wanted.pop(model, None)
        return unloaded

    async def embed(self, model: str, texts: list[str]) -> EmbedResult:
        return await self._call(Embed(id=self._next_id(), model=model, texts=texts), EmbedResult)

    async def tokenize(self, request: GenerateRequest) -> list[int]:
        """The prompt's token ids as the engine would feed them (chat template applied)."""
        return await self._call(Tokenize(id=self._next_id(), request=request), list[int])

    async def status(self, timeout: float = 10.0) -> EngineStatus:
        if self.state != "ready":
            return EngineStatus(
                state=self.state,
                restarts=self.restarts,
                last_error=self.last_error,
                memory_budget=self.settings.memory_budget,
            )
        st = await self._call(GetStatus(id=self._next_id()), EngineStatus, timeout=timeout)
        st.restarts = self.restarts
        st.last_error = self.last_error
        return st

    async def ping(self, timeout: float = 5.0) -> bool:
        try:
            await self._call(Ping(id=self._next_id()), int, timeout=timeout)
            return True
        except (TimeoutError, EngineError):
            return False

    async def kill(self) -> None:
        """Kill the engine process, rank 0 of a group (tests of supervision; the watcher
        restarts it)."""
        if self._proc is not None and self._proc.returncode is None and self.pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGKILL)

    async def _kill_group(self, proc: EngineProcess) -> None:
        """Kill the engine process, or every rank of a group."""
        # it may exit between the check and the kill: then there is nothing to kill
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        await proc.wait()
