"""The engine's state: loaded models, the memory budget, keep-alive, stats.

The process loop (process.py) owns the socket, decodes each command and calls the matching method
here (`generate`, `cancel`, `load`, `embed`, `status`, ...); `step()` runs one batch step of a
model with work. Everything that goes back is an `impetus.protocol` type.
"""

from __future__ import annotations

import gc
import logging
import os
import time
from collections import deque
from pathlib import Path
from typing import cast

import mlx.core as mx
import psutil
from mlx_lm.models.cache import LRUPromptCache

from impetus.config import Settings
from impetus.engine import constrained
from impetus.engine.distributed import Group
from impetus.engine.loader import (
    LoadedChatModel,
    backend,
    device_name,
    load_chat_model,
    plan,
)
from impetus.engine.scheduler import ModelRunner
from impetus.engine.telemetry import Telemetry
from impetus.protocol import (
    Delta,
    Done,
    EmbedResult,
    EngineError,
    EngineStats,
    EngineStatus,
    Event,
    GenerateRequest,
    ModelState,
)

log = logging.getLogger("impetus.engine")


class Embedding:
    """A loaded embedding model (impetus.engine.embeddings does the maths)."""

    def __init__(self, model_id: str, path: Path) -> None:
        from impetus.engine.embeddings import Embedder

        t0 = time.perf_counter()
        self.id = model_id
        self.path = path
        self.embedder = Embedder.load(path)
        self.memory_bytes = int(self.embedder.memory_bytes)
        self.load_seconds = time.perf_counter() - t0
        self.loaded_at = time.time()
        self.last_used = time.time()


class EngineCore:
    def __init__(self, settings: Settings, blas: str = "", group: Group | None = None) -> None:
        self.settings = settings
        self.blas = blas
        self.group = group  # the ranks every chat model is sharded over (None: this process alone)
        self.runners: dict[str, ModelRunner] = {}
        self.embeddings: dict[str, Embedding] = {}
        self.keep_alive: dict[str, float] = {}  # model id -> seconds (<0: pinned)
        self.rid_model: dict[str, str] = {}
        self.stats = EngineStats()
        self.prompt_cache = LRUPromptCache(max_size=256, max_bytes=settings.prompt_cache_bytes)
        # MLX keeps freed buffers for reuse; unbounded, that cache grows to the peak of every
        # batch shape seen. Bound it so that memory goes back once a burst is over.
        mx.set_cache_limit(max(256 << 20, settings.memory_budget // 16))
        self._rr = 0
        self._tps_window: deque[tuple[float, int]] = deque()
        self.telemetry = Telemetry(backend(), device_name())
        # events produced outside a step or a generate (the errors of requests whose model was
        # unloaded under them); the process loop sends them with its next message
        self.outbox: list[Event] = []

    # ---- models ----------------------------------------------------------------------------

    def resolve(self, model_id: str, allow_paths: bool) -> tuple[str, str, Path]:
        """(canonical id, kind, folder) of a registry id or a model folder path (GGUF converted once)."""
        from impetus.models import registry

        r = registry.resolve(model_id, self.settings, allow_paths=allow_paths)
        return r.id, r.kind, Path(r.path)

    def loaded_ids(self) -> list[str]:
        return list(self.runners) + list(self.embeddings)

    def _find(self, model_id: str) -> str | None:
        if model_id in self.runners or model_id in self.embeddings:
            return model_id
        for mid, r in self.runners.items():
            if str(r.loaded.path) == model_id:
                return mid
        for mid, e in self.embeddings.items():
            if str(e.path) == model_id:
                return mid
        return None

    def used_bytes(self) -> int:
        return sum(r.loaded.memory_bytes for r in self.runners.values()) + sum(
            e.memory_bytes for e in self.embeddings.values()
        )

    def load(
        self,
        model_id: str,
        dtype: str | None = None,
        keep_alive: float | None = None,
        *,
        allow_paths: bool = False,
    ) -> str:
        found = self._find(model_id)
        if found is not None:
            if keep_alive is not None:
                self.keep_alive[found] = keep_alive
            return found
        canonical, kind, path = self.resolve(
            model_id, allow_paths or self.settings.allow_model_paths
        )
        if canonical in self.runners or canonical in self.embeddings:
            return canonical
        free = self.settings.memory_budget - self.used_bytes()
        evictable = sum(
            size for _, mid, size in self._idle_models() if self.keep_alive.get(mid, 0) >= 0
        )
        if kind == "embedding":
            need = _rough_size(path)
            if need > free + evictable:
                raise EngineError(
                    "out_of_memory",
                    f"{canonical} needs about {need >> 20} MiB; at most {max(free + evictable, 0) >> 20} MiB of the budget can be freed",
                )
        else:
            target, need = plan(
                canonical, path, dtype or self.settings.dtype, free + evictable, self.ranks
            )
        if (
            need > free
        ):  # only now that it is known to fit: unload idle models, least recently used first
            self._evict(need - free)
        if kind == "embedding":
            try:
                self.embeddings[canonical] = Embedding(canonical, path)
            except EngineError:
                raise
            except Exception as e:
                raise EngineError("model_load_failed", f"could not load {canonical}: {e}") from e
        else:
            loaded = load_chat_model(canonical, path, target, self.group)
            self.runners[canonical] = self.runner(loaded)
        self.keep_alive[canonical] = self.settings.keep_alive if keep_alive is None else keep_alive
        return canonical

    def runner(self, loaded: LoadedChatModel) -> ModelRunner:
        runner = ModelRunner(loaded, self.settings, self.prompt_cache, self.stats)
        runner.kv_room = self.kv_room
        return runner

    def kv_room(self) -> tuple[int, int]:
        """(bytes of the budget left for KV caches after the weights, bytes reserved by requests)."""
        return (
            self.settings.memory_budget - self.used_bytes(),
            sum(r.kv_reserved for r in self.runners.values()),
        )

    def _idle_models(self) -> list[tuple[float, str, int]]:
        """(last used, id, bytes) of the models no request is using, least recently used first."""
        return sorted(
            [
                (r.last_used, mid, r.loaded.memory_bytes)
                for mid, r in self.runners.items()
                if not r.busy
            ]
            + [(e.last_used, mid, e.memory_bytes) for mid, e in self.embeddings.items()],
        )

    def _evict(self, need: int) -> int:
        """Unload least recently used idle, unpinned models until `need` bytes are free."""
        freed = 0
        for _, mid, size in self._idle_models():
            if freed >= need:
                break
            if self.keep_alive.get(mid, 0) < 0:
                continue
            log.info("unloading %s to make room (%d MiB)", mid, size >> 20)
            self.unload(mid)
            freed += size
        return freed

    def unload(self, model_id: str) -> bool:
        found = self._find(model_id)
        if found is None:
            return False
        runner = self.runners.pop(found, None)
        if runner is not None:
            # every request still on it gets its error (or its client would wait forever)
            self.outbox.extend(runner.cancel_all("model_unloaded", f"{found} was unloaded"))
            for ev in self.outbox:
                self.rid_model.pop(ev.rid, None)
            runner.close()
            constrained.forget_tokenizer(runner.loaded.tokenizer)
            self.prompt_cache.trim_to(n_sequences=0)
        self.embeddings.pop(found, None)
        self.keep_alive.pop(found, None)
        del runner
        gc.collect()
        mx.clear_cache()
        return True

    @property
    def ranks(self) -> int:
        return self.group.size if self.group is not None else 1

    def expired(self) -> list[str]:
        """The models idle for longer than their keep-alive (the caller unloads them: in a group
        of ranks, rank 0 decides by its clock and every rank unloads the same ones)."""
        now = time.time()
        gone = []
        for mid, ka in list(self.keep_alive.items()):
            if ka < 0:
                continue
            runner = self.runners.get(mid)
            if runner is not None and not runner.busy and now - runner.last_used > ka:
                gone.append(mid)
            emb = self.embeddings.get(mid)
            if emb is not None and now - emb.last_used > ka:
                gone.append(mid)
        return gone

    # ---- requests --------------------------------------------------------------------------

    def generate(self, rid: str, req: GenerateRequest, arrival: float) -> list[Event]:
        mid = self.load(req.model)
        runner = self.runners.get(mid)
        if runner is None:
            raise EngineError(
                "invalid_request",
                f"{mid} is an embedding model; use the embeddings endpoint",
                "model",
            )
        events = runner.admit(rid, req, arrival)
        self.rid_model[rid] = mid
        return events

    def cancel(self, rid: str) -> list[Event]:
        mid = self.rid_model.pop(rid, None)
        runner = self.runners.get(mid) if mid else None
        return runner.cancel(rid) if runner else []

    def embed(self, model_id: str, texts: list[str], compute: bool = True) -> EmbedResult:
        """`compute=False`: a follower rank's part (embedding models are not sharded, and only
        rank 0 answers): the same load and the same last use, which eviction goes by, without
        the vectors."""
        mid = self.load(model_id)
        emb = self.embeddings.get(mid)
        if emb is None:
            raise EngineError("invalid_request", f"{mid} is not an embedding model", "model")
        emb.last_used = time.time()
        if not compute:
            return EmbedResult(model=mid, vectors=[], prompt_tokens=0)
        vectors, tokens = emb.embedder.embed(texts)
        emb.last_used = time.time()
        rows = vectors.tolist() if isinstance(vectors, mx.array) else vectors
        return EmbedResult(
            model=mid, vectors=cast(list[list[float]], rows), prompt_tokens=int(tokens)
        )

    @property
    def busy(self) -> bool:
        return any(r.busy for r in self.runners.values())

    def step(self) -> list[Event]:
        """One batch step of one busy model (round robin, so models share the loop fairly)."""
        busy = [r for r in self.runners.values() if r.busy]
        if not busy:
            return []
        self._rr = (self._rr + 1) % len(busy)
        runner = busy[self._rr]
        events = runner.step()
        n = 0
        for ev in events:
            if isinstance(ev, Delta):
                # every generated token travels in exactly one delta: count those, nothing else
                n += len(ev.token_ids)
            elif isinstance(ev, Done) and ev.rid not in runner.requests:
                self.rid_model.pop(ev.rid, None)
        now = time.perf_counter()
        self._tps_window.append((now, n))
        return events

    # ---- status ----------------------------------------------------------------------------

    def model_states(self) -> list[ModelState]:
        states = []
        for mid, r in self.runners.items():
            lm = r.loaded
            states.append(
                ModelState(
                    id=mid,
                    kind="chat",
                    path=str(lm.path),
                    dtype=lm.dtype,
                    source_dtype=lm.source_dtype,
                    memory_bytes=lm.memory_bytes,
                    context_length=lm.context_length,
                    loaded_at=lm.loaded_at,
                    last_used=r.last_used,
                    pinned=self.keep_alive.get(mid, 0) < 0,
                    keep_alive=self.keep_alive.get(mid),
                    active_requests=len(r.requests),
                    load_seconds=lm.load_seconds,
                    supports_tools=bool(lm.tokenizer.has_tool_calling),
                    supports_thinking=bool(lm.tokenizer.has_thinking),
                    ranks=self.ranks,
                )
            )
        for mid, e in self.embeddings.items():
            states.append(
                ModelState(
                    id=mid,
                    kind="embedding",
                    path=str(e.path),
                    dtype="float32",
                    source_dtype="float32",
                    memory_bytes=e.memory_bytes,
                    context_length=int(getattr(e.embedder, "max_length", 512)),
                    loaded_at=e.loaded_at,
                    last_used=e.last_used,
                    pinned=self.keep_alive.get(mid, 0) < 0,
                    keep_alive=self.keep_alive.get(mid),
                    load_seconds=e.load_seconds,
                )
            )
        return states

    def status(self) -> EngineStatus:
        now = time.perf_counter()
        while self._tps_window and now - self._tps_window[0][0] > 5.0:
            self._tps_window.popleft()
        span = now - self._tps_window[0][0] if len(self._tps_window) > 1 else 0.0
        self.stats.decode_tps_recent = (
            sum(n for _, n in self._tps_window) / span if span > 0.5 else 0.0
        )
        self.stats.running = sum(
            len(r.gen._generation_batch) + len(r.gen._prompt_batch) for r in self.runners.values()
        )
        self.stats.waiting = sum(len(r.gen._unprocessed_sequences) for r in self.runners.values())
        self.stats.prompt_cache_bytes = self.prompt_cache.nbytes
        return EngineStatus(
            state="ready",
            pid=os.getpid(),
            backend=backend(),
            device=device_name(),
            blas=self.blas,
            memory_budget=self.settings.memory_budget,
            memory_used=int(mx.get_active_memory()),
            peak_memory=int(mx.get_peak_memory()),
            process_rss=psutil.Process().memory_info().rss,
            models=self.model_states(),
            stats=self.stats,
            accelerator=self.telemetry.read(),
            ranks=self.group.info() if self.group is not None else None,
        )

    def close(self) -> None:
        for mid in list(self.runners):
            self.unload(mid)


def _rough_size(path: Path) -> int:
    """Size on disk: a cheap first guess for eviction before the exact serving-dtype estimate."""
    return sum(f.stat().st_size for f in path.glob("*.safetensors"))
