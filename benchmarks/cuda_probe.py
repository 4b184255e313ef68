"""Where first-token time and decode time go on an accelerator, one MLX process, no server.

    python benchmarks/cuda_probe.py MODEL_FOLDER [--lengths 128,374,375,400,512,1000,2048]

Prints, for the model folder in its serving dtype:
  1. the device's copy bandwidth and the single-stream decode bound (weight bytes / bandwidth),
     and a raw decode loop (`model` + argmax, `async_eval` pipelining) as a share of that bound;
  2. prefill time per prompt length, the first time a length is seen and the second time
     (a gap between the two is kernel compilation or graph building paid by that request);
  3. the first decode steps after each prefill, synchronised one by one;
  4. BatchGenerator steps when 32 prompts of mixed lengths arrive at once: how long each
     `next()` takes, and how many steps stall (> 5x the median).
Run it twice with `MLX_CUDA_USE_CUDNN_SDPA=0` and `=1` to see what cuDNN attention costs and
saves (the variable is MLX's own switch).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import mlx.core as mx  # noqa: E402
from mlx_lm import load  # noqa: E402
from mlx_lm.generate import BatchGenerator  # noqa: E402
from mlx_lm.models.cache import make_prompt_cache  # noqa: E402


def bandwidth_gbs() -> float:
    """Device copy bandwidth, bytes read plus bytes written."""
    a = mx.random.uniform(shape=(1 << 28,), dtype=mx.float32)  # 1 GiB
    mx.eval(a)
    best = float("inf")
    for _ in range(5):
        mx.synchronize()
        t0 = time.perf_counter()
        b = a + 1.0
        mx.eval(b)
        best = min(best, time.perf_counter() - t0)
        del b
    return 2 * a.nbytes / best / 1e9


def raw_decode(model: Any, n: int = 128) -> float:
    cache = make_prompt_cache(model)
    y = mx.array([[1, 2, 3, 4, 5, 6, 7, 8]])
    logits = model(y, cache=cache)
    y = mx.argmax(logits[:, -1, :], axis=-1)
    mx.eval(y)

    def step(tok: mx.array) -> mx.array:
        return mx.argmax(model(tok[:, None], cache=cache)[:, -1, :], axis=-1)

    nxt = step(y)
    mx.async_eval(nxt)
    t0 = time.perf_counter()
    for _ in range(n):
        cur = nxt
        nxt = step(cur)
        mx.async_eval(nxt)
        cur.item()
    mx.eval(nxt)
    return n / (time.perf_counter() - t0)


def prefill_ms(
    model: Any, length: int, rng: random.Random, vocab: int
) -> tuple[float, list[float]]:
    cache = make_prompt_cache(model)
    x = mx.array([[rng.randrange(100, vocab - 100) for _ in range(length)]])
    mx.synchronize()
    t0 = time.perf_counter()
    logits = model(x, cache=cache)
    tok = mx.argmax(logits[:, -1, :], axis=-1)
    mx.eval(tok)
    pre = (time.perf_counter() - t0) * 1000
    steps = []
    for _ in range(6):
        t0 = time.perf_counter()
        tok = mx.argmax(model(tok[:, None], cache=cache)[:, -1, :], axis=-1)
        mx.eval(tok)
        steps.append((time.perf_counter() - t0) * 1000)
    return pre, steps


def batch_burst(model: Any, vocab: int, n: int, rng: random.Random, tokens: int) -> dict[str, Any]:
    gen = BatchGenerator(
        model,
        max_tokens=tokens,
        completion_batch_size=64,
        prefill_batch_size=8,
        prefill_step_size=512,
    )
    prompts = [
        [rng.randrange(100, vocab - 100) for _ in range(rng.randrange(300, 450))] for _ in range(n)
    ]
    gen.insert(prompts, max_tokens=[tokens] * n)
    times = []
    finished = 0
    produced = 0
    t_all = time.perf_counter()
    while finished < n:
        t0 = time.perf_counter()
        _, gr = gen.next()
        times.append((time.perf_counter() - t0) * 1000)
        produced += len(gr)
        finished += sum(1 for r in gr if r.finish_reason)
    wall = time.perf_counter() - t_all
    gen.close()
    med = statistics.median(times)
    stalls = sorted((t for t in times if t > 5 * med), reverse=True)
    return {
        "steps": len(times),
        "median_ms": round(med, 1),
        "max_ms": round(max(times), 1),
        "stalls": len(stalls),
        "stall_ms_total": round(sum(stalls)),
        "worst": [round(t) for t in stalls[:8]],
        "tok_s": round(produced / wall, 1),
    }


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("model")
    ap.add_argument("--lengths", default="128,256,374,375,400,512,1000,1024,2048")
    ap.add_argument("--burst", type=int, default=32)
    ap.add_argument("--burst-tokens", type=int, default=64)
    ap.add_argument(
        "--impetus-warmup",
        action="store_true",
        help="run the engine's warm-up first (then nothing should compile later)",
    )
    args = ap.parse_args()
    model, tok = load(args.model)[:2]
    model.set_dtype(mx.bfloat16)
    mx.eval(model.parameters())
    vocab = int(model.args.vocab_size)
    weights = sum(
        v.nbytes for _, v in __import__("mlx.utils").utils.tree_flatten(model.parameters())
    )
    out: dict[str, Any] = {
        "cudnn_sdpa": os.environ.get("MLX_CUDA_USE_CUDNN_SDPA", "1"),
        "device": mx.device_info().get("device_name", ""),
    }
    bw = bandwidth_gbs()
    out["copy_GBs"] = round(bw)
    out["bound_tok_s"] = round(bw * 1e9 / weights, 1)
    rng = random.Random(0)
    if args.impetus_warmup:
        from types import SimpleNamespace

        from impetus.engine.loader import warm_up

        t0 = time.perf_counter()
        warm_up(SimpleNamespace(model=model, vocab_size=vocab))  # type: ignore[arg-type]
        out["impetus_warmup_s"] = round(time.perf_counter() - t0, 1)
        # the burst first, on a warmed model: any stall left is compilation the warm-up missed
        out["burst_after_warmup"] = batch_burst(model, vocab, args.burst, rng, args.burst_tokens)
    # generic kernels (elementwise, norms, rope) compile once per machine: pay that here
    prefill_ms(model, 64, rng, vocab)
    out["raw_decode_tok_s"] = round(raw_decode(model), 1)
    out["raw_decode_share_of_bound"] = round(out["raw_decode_tok_s"] / out["bound_tok_s"], 3)
    rows = []
    for n in [int(x) for x in args.lengths.split(",")]:
        first, steps1 = prefill_ms(model, n, rng, vocab)
        again, steps2 = prefill_ms(model, n, rng, vocab)
        rows.append(
            {
                "len": n,
                "first_ms": round(first, 1),
                "again_ms": round(again, 1),
                "decode_after_first_ms": [round(s) for s in steps1],
                "decode_after_again_ms": [round(s, 1) for s in steps2],
            }
        )
    out["prefill"] = rows
    out["burst"] = batch_burst(model, vocab, args.burst, rng, args.burst_tokens)
    out["burst_again"] = batch_burst(model, vocab, args.burst, rng, args.burst_tokens)
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
