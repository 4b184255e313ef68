"""The engine benchmark, with mlx-lm's conventions (mlx_lm/benchmark.py): random prompt tokens,
EOS ignored so every trial generates exactly N tokens, greedy sampling, warm-up, N trials.

It runs through the impetus engine (its own process, the serving dtype, the batch scheduler), and
with `raw=True` also through `mlx_lm.stream_generate` in this process on the same weights in the
same dtype, for the ratio engine / mlx-lm. Every trial gets a fresh random prompt: the engine's
prompt cache must not turn a prefill benchmark into a cache lookup (`cached_tokens` is checked).
"""

from __future__ import annotations

import json
import logging
import secrets
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from pydantic import BaseModel, Field, model_validator

from impetus.bench.schema import EngineSide, EngineSummary, EngineTrial, RunRecord
from impetus.bench.stats import stats
from impetus.bench.store import ResultStore, new_run_id

if TYPE_CHECKING:
    from impetus.config import Settings
    from impetus.engine import Engine

log = logging.getLogger("impetus.bench")

# (prompt tokens, generation tokens)
PRESETS: dict[str, tuple[int, int]] = {"default": (512, 128), "long": (2048, 128)}

TrialCallback = Callable[[str, EngineTrial], None]


class EngineBenchConfig(BaseModel):
    model: str
    prompt_tokens: int = Field(512, ge=1)
    generation_tokens: int = Field(128, ge=1)
    trials: int = Field(5, ge=1)
    warmup: int = Field(1, ge=0)
    raw: bool = False  # also run mlx_lm.stream_generate in this process
    dtype: str | None = None  # serving dtype asked of the engine (None: its default)
    seed: int | None = None  # None: a fresh one per run, stored with it

    @model_validator(mode="after")
    def _fresh_seed(self) -> EngineBenchConfig:
        if self.seed is None:
            self.seed = secrets.randbits(31)
        return self


def vocab_size(path: Path) -> int:
    config = json.loads((path / "config.json").read_text())
    size = config.get("vocab_size") or (config.get("text_config") or {}).get("vocab_size")
    if not size:
        raise ValueError(f"no vocab_size in {path / 'config.json'}")
    return int(size)


def random_prompts(vocab: int, config: EngineBenchConfig) -> list[list[int]]:
    """Warm-up and trial prompts, uniform over the vocabulary like mlx-lm's benchmark."""
    rng = np.random.default_rng(config.seed)
    count = config.warmup + config.trials
    prompts: list[list[int]] = rng.integers(0, vocab, size=(count, config.prompt_tokens)).tolist()
    return prompts


def _side(name: str, load_seconds: float, dtype: str, trials: list[EngineTrial]) -> EngineSide:
    return EngineSide(
        name=name,
        load_seconds=load_seconds,
        dtype=dtype,
        trials=trials,
        prompt_tps=stats(t.prompt_tps for t in trials),
        generation_tps=stats(t.generation_tps for t in trials),
        peak_memory=max((t.peak_memory for t in trials), default=0),
    )


def _add_trial(
    trials: list[EngineTrial], side: str, on_trial: TrialCallback | None, **fields: Any
) -> None:
    """Number the next measured trial of `side`, keep it and report it to `on_trial`."""
    trial = EngineTrial(trial=len(trials), **fields)
    trials.append(trial)
    if on_trial is not None:
        on_trial(side, trial)


def bench_engine_side(
    engine: Engine,
    config: EngineBenchConfig,
    prompts: list[list[int]],
    load_seconds: float,
    dtype: str,
    warnings: list[str],
    on_trial: TrialCallback | None = None,
) -> EngineSide:
    from impetus.protocol import Done, GenerateRequest, SamplingParams

    trials: list[EngineTrial] = []
    for i, prompt in enumerate(prompts):
        request = GenerateRequest(
            model=config.model,
            prompt=prompt,
            max_tokens=config.generation_tokens,
            ignore_eos=True,
            sampling=SamplingParams(temperature=0.0),  # mlx-lm's default sampler: argmax
        )
        t0 = time.perf_counter()
        done = None
        for event in engine.generate(request):
            if isinstance(event, Done):
                done = event
        wall = time.perf_counter() - t0
        if done is None:
            raise RuntimeError("the engine ended a generation without a done event")
        if i < config.warmup:
            continue
        usage, timings = done.usage, done.timings
        if usage.completion_tokens != config.generation_tokens:
            warnings.append(
                f"engine trial {len(trials)}: {usage.completion_tokens} tokens generated, "
                f"not {config.generation_tokens} (finish_reason={done.finish_reason})"
            )
        if usage.cached_tokens:
            warnings.append(
                f"engine trial {len(trials)}: {usage.cached_tokens} prompt tokens came from the cache"
            )
        _add_trial(
            trials,
            "impetus",
            on_trial,
            prompt_tokens=usage.prompt_tokens,
            generation_tokens=usage.completion_tokens,
            cached_tokens=usage.cached_tokens,
            prompt_tps=timings.prefill_tps,
            generation_tps=timings.decode_tps,
            peak_memory=engine.status().peak_memory,
            wall=wall,
        )
    return _side("impetus", load_seconds, dtype, trials)


def bench_raw_side(
    path: Path,
    dtype: str,
    config: EngineBenchConfig,
    prompts: list[list[int]],
    on_trial: TrialCallback | None = None,
) -> EngineSide:
    """mlx_lm.load + stream_generate in this process, in the dtype the engine served."""
    import mlx.core as mx
    from mlx_lm import load, stream_generate
    from mlx_lm.utils import dequantize_model

    dtypes = {"float32": mx.float32, "bfloat16": mx.bfloat16, "float16": mx.float16}
    t0 = time.perf_counter()
    model, tokenizer = load(str(path))[:2]
    if dtype in dtypes:
        if json.loads((path / "config.json").read_text()).get("quantization"):
            model = dequantize_model(model)
        model.set_dtype(dtypes[dtype])
    mx.eval(model.parameters())
    load_seconds = time.perf_counter() - t0
    tokenizer._eos_token_ids = set()  # what mlx_lm.benchmark does: never stop early

    trials: list[EngineTrial] = []
    for i, prompt in enumerate(prompts):
        mx.reset_peak_memory()
        t0 = time.perf_counter()
        response = None
        for step in stream_generate(model, tokenizer, prompt, max_tokens=config.generation_tokens):
            response = step  # the last response carries the totals
        wall = time.perf_counter() - t0
        if response is None:
            raise RuntimeError("mlx_lm.stream_generate produced nothing")
        if i < config.warmup:
            continue
        _add_trial(
            trials,
            "mlx_lm",
            on_trial,
            prompt_tokens=response.prompt_tokens,
            generation_tokens=response.generation_tokens,
            prompt_tps=response.prompt_tps,
            generation_tps=response.generation_tps,
            peak_memory=int(mx.get_peak_memory()),
            wall=wall,
        )
    return _side("mlx_lm", load_seconds, dtype, trials)


def run_engine_bench(
    config: EngineBenchConfig,
    *,
    settings: Settings | None = None,
    engine: Engine | None = None,
    on_trial: TrialCallback | None = None,
    store: ResultStore | None = None,
) -> RunRecord:
    """Benchmark `config.model` on the impetus engine (started here unless `engine` is given)."""
    from impetus.config import Settings
    from impetus.engine import Engine

    settings = settings or Settings()
    warnings: list[str] = []
    raw_blas = ""
    if config.raw and sys.platform == "linux":
        # The raw side runs MLX in this process: give it the BLAS the engine process gets, which
        # only works before the first `import mlx.core` (so before machine_info below).
        from impetus.engine.blas import load_optimized_blas

        already = "mlx.core" in sys.modules
        info = load_optimized_blas(settings.blas)  # the one loaded earlier, if any
        raw_blas = info.path if info else ""
        if info is None and already:
            warnings.append(
                "mlx.core was imported before the benchmark: the mlx_lm side uses MLX's reference BLAS"
            )

    from impetus.bench.machine import machine_info

    now = datetime.now(UTC)
    record = RunRecord(
        id=new_run_id(now),
        kind="engine",
        created=now,
        label="engine",
        model=config.model,
        params=config.model_dump(mode="json"),
        machine=machine_info(),
    )
    owned = engine is None
    eng = engine if engine is not None else Engine(settings).start()
    try:
        t0 = time.perf_counter()
        state = eng.load(config.model, dtype=config.dtype)
        load_seconds = state.load_seconds or (time.perf_counter() - t0)
        status = eng.status()
        record.endpoint = {
            "backend": status.backend,
            "device": status.device,
            "blas": status.blas,
            "path": state.path,
            "dtype": state.dtype,
            "source_dtype": state.source_dtype,
            "context_length": state.context_length,
        }
        if config.raw:
            record.endpoint["raw_blas"] = raw_blas
        if config.prompt_tokens + config.generation_tokens > state.context_length:
            warnings.append(
                f"prompt + generation ({config.prompt_tokens + config.generation_tokens}) exceeds "
                f"the model's context ({state.context_length})"
            )
        path = Path(state.path)
        prompts = random_prompts(vocab_size(path), config)
        sides = [
            bench_engine_side(eng, config, prompts, load_seconds, state.dtype, warnings, on_trial)
        ]
    finally:
        if owned:
            eng.close()  # frees the engine's memory before the raw side loads its own copy
    if config.raw:
        sides.append(bench_raw_side(path, state.dtype, config, prompts, on_trial))
    summary = EngineSummary(sides=sides, warnings=warnings)
    if len(sides) == 2:
        ours, raw = sides
        for key in ("prompt_tps", "generation_tps"):
            a, b = getattr(ours, key).mean, getattr(raw, key).mean
            if a and b:
                summary.ratio[f"{key} impetus/mlx_lm"] = a / b
    record.engine = summary
    if store is not None:
        store.save(record)
    return record


def engine_params(args: Any) -> EngineBenchConfig:
    """CLI arguments -> config; a preset fills the lengths the flags left unset."""
    prompt, generate = PRESETS[args.preset]
    return EngineBenchConfig(
        model=args.model,
        prompt_tokens=args.prompt_tokens or prompt,
        generation_tokens=args.generation_tokens or generate,
        trials=args.trials,
        warmup=args.warmup,
        raw=args.raw,
        dtype=args.dtype,
        seed=args.seed,
    )
