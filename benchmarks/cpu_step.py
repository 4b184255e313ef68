"""Where one single-stream decode step goes on a CPU, and what bounds it.

    python benchmarks/cpu_step.py MODEL_FOLDER [--dtypes float32,native] [--steps 64]

For each serving dtype (`native` = as stored, e.g. the embedded model's 4-bit weights), the model
is loaded as the engine loads it (`load_chat_model`: dequantize, cast, warm up) and timed, batch 1:

* `step`: `model(token, cache)` then the argmax, evaluated each step (no pipelining);
* `pipelined`: as mlx-lm's `generate_step` runs it, the next step built and `async_eval`-ed before
  the current token is read back, so graph building overlaps the computation;
* `matmuls`: every projection of the step (each layer's q/k/v/o, gate/up/down, and the output
  head) applied to a one-token input in one graph: the weight reads and the BLAS / quantized
  kernels, without attention, norms, RoPE or the per-layer graph;
* `bound`: the weights' bytes over the memory read bandwidth measured here (a one-thread and an
  all-threads sum over a buffer larger than the caches): the time a step cannot go below when
  every weight is read once from memory.

The rest of a step (`step - matmuls`) is the per-operation cost of the ~20 small operations per
layer (dispatch, allocation, attention over a short cache) that a fused or compiled step avoids.
Results print as a Markdown table; `--json FILE` keeps them.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from impetus.engine.blas import load_optimized_blas  # noqa: E402

BLAS = load_optimized_blas("auto")  # before MLX, as in the engine

import mlx.core as mx  # noqa: E402
import mlx.nn as nn  # noqa: E402
import numpy as np  # noqa: E402
from mlx_lm.models.cache import make_prompt_cache  # noqa: E402

from impetus.engine.loader import load_chat_model  # noqa: E402


def read_bandwidth(mib: int = 1024, repeats: int = 5) -> tuple[float, float]:
    """Memory read bandwidth in GB/s: one thread, then one thread per core (numpy's sum
    releases the GIL), over a buffer far larger than the caches."""
    buf = np.ones(mib << 18, dtype=np.float32)
    buf.sum()  # fault the pages in

    def timed(parts: int) -> float:
        chunks = np.array_split(buf, parts)
        best = float("inf")
        with ThreadPoolExecutor(parts) as pool:
            for _ in range(repeats):
                t = time.perf_counter()
                list(pool.map(np.sum, chunks))
                best = min(best, time.perf_counter() - t)
        return buf.nbytes / best / 1e9

    return timed(1), timed(os.cpu_count() or 1)


def projections(model: nn.Module) -> list[tuple[nn.Module, int]]:
    """Each projection a decode step applies (Linear or QuantizedLinear), with its input width;
    a tied output head is the embedding's `as_linear`."""
    found: list[tuple[nn.Module, int]] = []
    for _, m in model.named_modules():
        if isinstance(m, nn.QuantizedLinear):
            found.append((m, m.weight.shape[1] * 32 // m.bits))
        elif isinstance(m, nn.Linear):
            found.append((m, m.weight.shape[1]))
    if not any(name.endswith("lm_head") for name, _ in model.named_modules()):
        embed = model.model.embed_tokens
        width = embed.weight.shape[1]
        if isinstance(embed, nn.QuantizedEmbedding):
            width = width * 32 // embed.bits
        found.append((_Head(embed), width))
    return found


class _Head:
    def __init__(self, embed: Any) -> None:
        self.embed = embed

    def __call__(self, x: mx.array) -> mx.array:
        return self.embed.as_linear(x)


def median_ms(fn: Any, steps: int) -> float:
    times = []
    for _ in range(steps):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times) * 1e3


def measure(folder: Path, dtype: str, steps: int, prompt: int) -> dict[str, Any]:
    loaded = load_chat_model(folder.name, folder, dtype)
    model = loaded.model
    cache = make_prompt_cache(model)
    rng = np.random.default_rng(0)
    ids = mx.array(rng.integers(100, loaded.vocab_size - 100, size=(1, prompt)))
    mx.eval(model(ids, cache=cache))
    token = mx.array([[5]])

    def step() -> None:
        nonlocal token
        token = mx.argmax(model(token, cache=cache)[:, -1:], axis=-1)
        mx.eval(token)

    step_ms = median_ms(step, steps)

    # mlx-lm's generate_step: the next step is queued before the current token is read back
    times = []
    nxt = mx.argmax(model(token, cache=cache)[:, -1:], axis=-1)
    mx.async_eval(nxt)
    for _ in range(steps):
        t = time.perf_counter()
        cur = nxt
        nxt = mx.argmax(model(cur, cache=cache)[:, -1:], axis=-1)
        mx.async_eval(nxt)
        cur.item()
        times.append(time.perf_counter() - t)
    mx.eval(nxt)
    pipelined_ms = statistics.median(times) * 1e3

    projs = projections(model)
    act = model.model.embed_tokens(token).dtype  # the activations' dtype, as in the step
    # quantized projections alone are not timed: on their own (outside the step's graph) MLX's
    # CPU quantized kernels took seconds here, not the step's share, so the figure misleads
    matmul_ms = None
    if not any(isinstance(p, nn.QuantizedLinear) for p, _ in projs):
        inputs = [mx.ones((1, width), dtype=act) for _, width in projs]
        mx.eval(inputs)
        matmul_ms = median_ms(
            lambda: mx.eval([p(x) for (p, _), x in zip(projs, inputs, strict=True)]), steps
        )
    # the same float32 products as numpy's matrix-vector calls into its own OpenBLAS: what a GEMV
    # kernel reaches on these weights (quantized weights have no numpy counterpart)
    numpy_ms = None
    if act == mx.float32 and matmul_ms is not None:
        weights = [np.array(p.embed.weight if isinstance(p, _Head) else p.weight) for p, _ in projs]
        vecs = [np.ones(w.shape[1], dtype=np.float32) for w in weights]
        numpy_ms = median_ms(lambda: [w @ v for w, v in zip(weights, vecs, strict=True)], steps)
    return {
        "numpy_ms": numpy_ms,
        "dtype": loaded.dtype,
        "weights_mb": loaded.memory_bytes / 1e6,
        "step_ms": step_ms,
        "pipelined_ms": pipelined_ms,
        "matmul_ms": matmul_ms,
        "projections": len(projs),
        "layers": len(model.layers),
    }


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("model", type=Path, help="an MLX model folder")
    ap.add_argument("--dtypes", default="float32,native", help="serving dtypes, comma-separated")
    ap.add_argument("--steps", type=int, default=64, help="decode steps timed per measurement")
    ap.add_argument("--prompt", type=int, default=32, help="prompt tokens before the timed steps")
    ap.add_argument("--json", type=Path, help="write the results here too")
    args = ap.parse_args()

    one, all_threads = read_bandwidth()
    rows = [measure(args.model, d, args.steps, args.prompt) for d in args.dtypes.split(",")]
    blas = f"{BLAS.name}, {BLAS.core or 'default'} kernels" if BLAS else "MLX's bundled BLAS"
    print(
        f"{args.model.name}: {os.cpu_count()} cores, {blas}; read bandwidth {one:.1f} GB/s one thread, {all_threads:.1f} GB/s all"
    )
    print(
        "| serving dtype | weights MB | step ms | pipelined ms (tok/s) | matmuls ms | rest ms "
        "| numpy GEMV ms | bound ms (all threads) |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        r["bound_ms"] = r["weights_mb"] / 1e3 / all_threads * 1e3
        numpy_ms = "–" if r["numpy_ms"] is None else f"{r['numpy_ms']:.1f}"
        matmul = "– | –"
        if r["matmul_ms"] is not None:
            matmul = f"{r['matmul_ms']:.1f} | {r['step_ms'] - r['matmul_ms']:.1f}"
        print(
            f"| {r['dtype']} | {r['weights_mb']:.0f} | {r['step_ms']:.1f} | {r['pipelined_ms']:.1f} "
            f"({1e3 / r['pipelined_ms']:.1f}) | {matmul} "
            f"| {numpy_ms} | {r['bound_ms']:.1f} |"
        )
    if args.json:
        args.json.write_text(
            json.dumps({"bandwidth_gbs": [one, all_threads], "rows": rows}, indent=1)
        )


if __name__ == "__main__":
    main()
