"""Loading a model folder into the engine: serving dtype, memory estimate, warm-up."""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import mlx.core as mx
import mlx.nn as nn
from mlx.utils import tree_flatten

from impetus.engine.distributed import Group
from impetus.models import folder
from impetus.models.backend import detect_backend, serving_dtype_for_backend
from impetus.protocol import EngineError

log = logging.getLogger("impetus.engine")

DTYPES = {"float32": mx.float32, "bfloat16": mx.bfloat16, "float16": mx.float16}

CUDNN_SDPA_VAR = "MLX_CUDA_USE_CUDNN_SDPA"


def prefer_shape_generic_attention() -> str:
    """Attention through MLX's own kernels on CUDA, not cuDNN's; returns the setting in force.

    MLX's CUDA backend builds a cuDNN attention graph for every new combination of query length,
    key length and batch (0.1-1.1 s each on an H100), and, for a single sequence, a decode graph
    for every 256-token growth of its KV cache (0.6-0.9 s). Serving traffic brings a new
    combination with nearly every request (prompt lengths vary, cached prefixes vary), so those
    builds land in the first-token time and stall every stream of the batch. MLX's own kernels
    take shapes as arguments and compile once. Measured on an H100, Llama-3-8B shape
    (benchmarks/cuda_probe.py): prefill of a new length 24-98 ms instead of 70-1100 ms, a
    32-request burst 1009 tok/s instead of 745, single-stream decode 156 tok/s instead of 139;
    the cost is a slower prefill of long prompts once their graph exists (2048 tokens: 78 ms
    instead of 52). MLX reads the variable at the first attention call on the GPU, so this runs
    when the engine's model code is imported; a value the user set is kept.
    """
    return os.environ.setdefault(CUDNN_SDPA_VAR, "0")


ATTENTION_SETTING = prefer_shape_generic_attention()


def backend() -> str:
    return detect_backend()


def device_name() -> str:
    try:
        info = mx.device_info()
        return str(info.get("device_name", ""))
    except Exception:
        return ""


def serving_dtype(requested: str, backend_name: str, quantized: bool) -> str:
    """The dtype that decodes fastest here (DESIGN.md: quantized kernels are slow off Apple silicon)."""
    if requested not in ("auto", ""):
        return requested
    return serving_dtype_for_backend(backend_name)


def read_config(path: Path) -> dict[str, Any]:
    try:
        return dict(json.loads((path / "config.json").read_text()))
    except FileNotFoundError as e:
        raise EngineError(
            "model_load_failed", f"{path} has no config.json: not an MLX model folder"
        ) from e
    except json.JSONDecodeError as e:
        raise EngineError("model_load_failed", f"{path}/config.json is not valid JSON: {e}") from e


def context_length(config: dict[str, Any]) -> int:
    """The model's context (the registry reads it the same way); 4096 when the config says none."""
    return folder.context_length(config) or 4096


def estimate_bytes(path: Path, config: dict[str, Any], dtype: str) -> int:
    """Weights as they will sit in memory once converted to `dtype` (KV cache comes on top)."""
    weights = sum(f.stat().st_size for f in path.glob("*.safetensors"))
    q = config.get("quantization") or config.get("quantization_config")
    if dtype in ("native", "") or not q:
        if not q and dtype in DTYPES:
            source = str(config.get("torch_dtype") or config.get("dtype") or "float32")
            source_size = 4 if "32" in source else 2
            return int(weights * DTYPES[dtype].size / source_size)
        return weights
    bits = int(q.get("bits", 4)) if isinstance(q, dict) else 4
    group = int(q.get("group_size", 64)) if isinstance(q, dict) else 64
    # packed bits plus a scale and a bias (16-bit) per group, per weight
    per_weight = bits / 8 + 4 / group
    return int(weights / per_weight * DTYPES[dtype].size)


@dataclass
class LoadedChatModel:
    id: str
    path: Path
    model: nn.Module
    tokenizer: Any
    config: dict[str, Any]
    dtype: str
    source_dtype: str
    context_length: int
    vocab_size: int
    memory_bytes: int
    load_seconds: float
    loaded_at: float = field(default_factory=time.time)
    ranks: int = 1  # processes its weights are sharded over


def plan(model_id: str, path: Path, dtype: str, room: int, ranks: int = 1) -> tuple[str, int]:
    """(serving dtype, bytes it will take) for a model that may use up to `room` bytes.

    The fastest dtype for the backend if it fits, else the stored weights, else out_of_memory.
    Over several ranks each holds about 1/ranks of the weights (the layers' projections are
    split; embeddings and norms, a small share, are whole on every rank).
    """
    config = read_config(path)
    target = serving_dtype(dtype, backend(), bool(config.get("quantization")))
    estimate = estimate_bytes(path, config, target) // ranks
    if estimate > room and target != "native" and dtype in ("auto", ""):
        native = estimate_bytes(path, config, "native") // ranks
        if native <= room:
            log.info(
                "%s: a %s copy (%d MiB) does not fit the budget; serving its stored weights",
                model_id,
                target,
                estimate >> 20,
            )
            target, estimate = "native", native
    if estimate > room:
        raise EngineError(
            "out_of_memory",
            f"{model_id} needs about {estimate / 2**20:.0f} MiB but at most {max(room, 0) / 2**20:.0f} MiB of the memory budget can be freed for it",
        )
    return target, estimate


def load_chat_model(
    model_id: str, path: Path, target: str, group: Group | None = None
) -> LoadedChatModel:
    """Load a model folder and convert it to `target` (a dtype name or "native"); see `plan`.

    With a group of ranks, each rank keeps its tensor-parallel shard (`shard_across`)."""
    from mlx_lm.utils import dequantize_model, load

    t0 = time.perf_counter()
    config = read_config(path)
    quantized = bool(config.get("quantization"))
    if group is not None:
        check_shardable(model_id, config, group.size)
    try:
        model, tokenizer = load(str(path), lazy=True)[:2]
    except EngineError:
        raise
    except Exception as e:
        raise EngineError("model_load_failed", f"could not load {model_id} from {path}: {e}") from e

    source_dtype = _param_dtype(model)
    if quantized:
        source_dtype = f"q{config['quantization'].get('bits', '?')}"
    if target in DTYPES and quantized:
        dequantize_model(model)  # before sharding: the dense layers are what `shard` splits
    if group is not None:
        shard_across(model_id, config, model, group)
    if target in DTYPES:
        model.set_dtype(DTYPES[target])
    mx.eval(model.parameters())
    memory = sum(v.nbytes for _, v in _arrays(model))
    served = target if target in DTYPES else source_dtype
    log.info(
        "%s: serving in %s (stored as %s) on %s, %d MiB%s%s",
        model_id,
        served,
        source_dtype,
        backend(),
        memory >> 20,
        f" (rank {group.rank}'s shard of {group.size})" if group is not None else "",
        ""
        if backend() != "cuda"
        else f"; attention kernels: {'cuDNN' if os.environ.get(CUDNN_SDPA_VAR) != '0' else 'MLX'}"
        f" ({CUDNN_SDPA_VAR}={os.environ.get(CUDNN_SDPA_VAR)})",
    )
    vocab = (
        int(model.args.vocab_size)
        if hasattr(model, "args") and hasattr(model.args, "vocab_size")
        else int(config.get("vocab_size", 0))
    )
    loaded = LoadedChatModel(
        id=model_id,
        path=path,
        model=model,
        tokenizer=tokenizer,
        config=config,
        dtype=served,
        source_dtype=source_dtype,
        context_length=context_length(config),
        vocab_size=vocab,
        memory_bytes=memory,
        load_seconds=0.0,
        ranks=group.size if group is not None else 1,
    )
    t_warm = time.perf_counter()
    warm_up(loaded)
    log.info("%s: warm-up took %.1f s", model_id, time.perf_counter() - t_warm)
    loaded.load_seconds = time.perf_counter() - t0
    return loaded


def check_shardable(model_id: str, config: dict[str, Any], ranks: int) -> None:
    """Refuse, before reading any weight, a model whose attention heads do not divide over the
    ranks: mlx-lm's `shard` splits every projection evenly and divides the head counts without
    checking, so an uneven split would load and then compute garbage."""
    arch = config.get("model_type", "unknown")
    text_config = config.get("text_config")
    text = text_config if isinstance(text_config, dict) else config
    heads = text.get("num_attention_heads")
    kv_heads = text.get("num_key_value_heads") or heads
    for name, count in (("attention heads", heads), ("key-value heads", kv_heads)):
        if isinstance(count, int) and count % ranks:
            raise EngineError(
                "model_load_failed",
                f"{model_id} ({arch}) has {count} {name}, which do not divide over {ranks} ranks "
                f"for tensor parallelism; serve it on a number of ranks that divides {count}",
            )


def shard_across(model_id: str, config: dict[str, Any], model: nn.Module, group: Group) -> None:
    """Keep this rank's tensor-parallel shard of a lazily loaded model (mlx-lm's `shard`).

    `model.shard(group)` on the lazy model, not mlx-lm's `sharded_load`: its barrier runs on the
    CPU stream, which fails under NCCL on CUDA ("There is no Stream(gpu, 1)"), while sharding
    the lazy arrays works on every backend, and only this rank's slices are ever read."""
    arch = config.get("model_type", "unknown")
    if not hasattr(model, "shard"):
        raise EngineError(
            "model_load_failed",
            f"{model_id}: mlx-lm has no tensor parallelism for the {arch} architecture "
            f"(its model class has no shard method), so it cannot run across {group.size} "
            "ranks; serve it with one rank",
        )
    try:
        model.shard(group.group)
    except Exception as e:
        raise EngineError(
            "model_load_failed",
            f"{model_id} ({arch}) could not be sharded over {group.size} ranks: {e}",
        ) from e


KV_STEP = 256  # mlx-lm's KVCache grows in steps of this many tokens


def kv_bytes_per_token(model: nn.Module, dtype: str, ranks: int = 1) -> int:
    """Bytes of keys and values one token takes in every layer's cache (of this rank: the
    key-value heads are split over the ranks); 0 if the model's arguments do not say (then the
    engine cannot reserve KV memory for it)."""
    args = getattr(model, "args", None)
    layers = getattr(model, "layers", None)
    heads = getattr(args, "num_attention_heads", None)
    hidden = getattr(args, "hidden_size", None)
    if args is None or not layers or not heads:
        return 0
    kv_heads = getattr(args, "num_key_value_heads", None) or heads
    head_dim = getattr(args, "head_dim", None) or (hidden // heads if hidden else 0)
    size = DTYPES[dtype].size if dtype in DTYPES else 2  # quantized weights: 16-bit activations
    return int(2 * len(layers) * kv_heads * head_dim * size) // ranks


def _arrays(model: nn.Module) -> list[tuple[str, mx.array]]:
    flat: list[tuple[str, Any]] = tree_flatten(model.parameters())  # type: ignore[assignment]
    return [(k, v) for k, v in flat if isinstance(v, mx.array)]


def _param_dtype(model: nn.Module) -> str:
    for _, v in _arrays(model):
        if mx.issubdtype(v.dtype, mx.floating):
            return str(v.dtype).removeprefix("mlx.core.")
    return "unknown"


def warm_up(loaded: LoadedChatModel) -> None:
    """Run once, at load, every kind of step real traffic will run, so that no request pays for
    kernel compilation (seconds per kernel on CUDA, where MLX compiles kernels at first use).

    A single short prompt is not enough: a batch of prompts of different lengths (padding, the
    batched KV cache and its masks), KV caches that cross the cache's 256-token growth step,
    a sequence joining a batch that is already decoding, sequences leaving it, and a prompt
    that continues a cached prefix each run kernels of their own. Sizes do not matter to the
    compiled kernels (their shapes are arguments), only which operations run, so small prompts
    cover every later size.
    """
    from mlx_lm.generate import BatchGenerator

    from impetus.engine.sampling import build_sampler
    from impetus.protocol import SamplingParams

    vocab = max(loaded.vocab_size, 2)
    # the default sampling of requests (temperature, top-p) runs kernels greedy decoding does not
    sampler = build_sampler(SamplingParams(temperature=0.7, top_p=0.9))

    def prompt(n: int, seed: int) -> list[int]:
        return [(seed * 7919 + i * 104729) % (vocab - 1) + 1 for i in range(n)]

    gen = BatchGenerator(loaded.model, max_tokens=4, completion_batch_size=4, prefill_batch_size=2)
    try:
        # two prompts prefilled together: right padding, then the roll to left padding
        samplers: list[Any] = [sampler, None]  # None: the batch's greedy fallback
        first = gen.insert([prompt(260, 1), prompt(20, 2)], max_tokens=[4, 2], samplers=samplers)
        cached: Any = None
        steps = 0
        pending = set(first)
        joined = False
        while pending and steps < 64:
            steps += 1
            for r in gen.next()[1]:
                if r.finish_reason:
                    pending.discard(r.uid)
                    if r.uid == first[0]:
                        cached = (r.prompt_cache, list(r.all_tokens))
            if not joined and steps == 2:
                # a prompt joins a batch that is decoding (its cache is merged into the batch)
                pending.update(gen.insert([prompt(257, 3)], max_tokens=[2]))
                joined = True
        if cached is not None:
            # a prompt that continues a cached prefix (the engine's prompt cache)
            cache, tokens = cached
            rest = prompt(9, 4)
            uids = gen.insert_segments(
                [[rest]], max_tokens=[2], caches=[cache], all_tokens=[tokens]
            )
            pending = set(uids)
            while pending and steps < 128:
                steps += 1
                pending -= {r.uid for r in gen.next()[1] if r.finish_reason}
    finally:
        gen.close()
