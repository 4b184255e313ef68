"""The engine issue's benchmark: impetus's engine process against raw mlx-lm, side by side.

    python benchmarks/engine_vs_mlx_lm.py [--model smollm2-135m] [--tokens 128] [--trials 3]

Prints a Markdown table of ratios for docs/benchmarks.md:
  1. single-stream decode tokens/s: engine process vs `mlx_lm.stream_generate` in-process
  2. aggregate decode tokens/s at 8 and 32 concurrent: engine vs `mlx_lm.batch_generate`
  3. turn-2 time to first token on a ~1500-token conversation: prompt cache on vs off
  4. float32 decode with vs without the optimized BLAS (two engine processes)
Both sides load the very same MLX folder in the same dtype, and this process loads the same
BLAS the engine does, so the comparison is of the serving machinery, not of the weights.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import threading
import time
from datetime import date
from pathlib import Path
from typing import Any

from impetus.engine.blas import load_optimized_blas

BLAS = load_optimized_blas("auto")  # before MLX, as in the engine

import mlx.core as mx  # noqa: E402
from mlx_lm import batch_generate, load, stream_generate  # noqa: E402
from mlx_lm.utils import dequantize_model  # noqa: E402

from impetus.config import Settings  # noqa: E402
from impetus.engine import Engine  # noqa: E402
from impetus.engine.loader import DTYPES, backend, serving_dtype  # noqa: E402
from impetus.protocol import GenerateRequest, SamplingParams  # noqa: E402


def raw_model(path: Path) -> tuple[Any, Any, str]:
    model, tok = load(str(path))[:2]
    cfg = json.loads((path / "config.json").read_text())
    dtype = serving_dtype("auto", backend(), bool(cfg.get("quantization")))
    if dtype in DTYPES:
        if cfg.get("quantization"):
            dequantize_model(model)
        model.set_dtype(DTYPES[dtype])
        mx.eval(model.parameters())
    return model, tok, dtype


def random_prompt(vocab: int, n: int, seed: int) -> list[int]:
    import random

    rng = random.Random(seed)
    return [rng.randrange(100, vocab - 100) for _ in range(n)]


def raw_single(model: Any, tok: Any, prompt: list[int], tokens: int) -> float:
    last = None
    for r in stream_generate(model, tok, prompt, max_tokens=tokens):
        last = r
    assert last is not None
    return float(last.generation_tps)


def engine_single(engine: Engine, model: str, prompt: list[int], tokens: int) -> float:
    out = engine.complete(
        GenerateRequest(
            model=model,
            prompt=prompt,
            max_tokens=tokens,
            ignore_eos=True,
            sampling=SamplingParams(temperature=0.0),
        )
    )
    return float(out[0]["done"].timings.decode_tps)


def engine_aggregate(engine: Engine, model: str, prompts: list[list[int]], tokens: int) -> float:
    counts = [0] * len(prompts)

    def run(i: int) -> None:
        out = engine.complete(
            GenerateRequest(
                model=model,
                prompt=prompts[i],
                max_tokens=tokens,
                ignore_eos=True,
                sampling=SamplingParams(temperature=0.0),
            )
        )
        counts[i] = out[0]["done"].usage.completion_tokens

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(prompts))]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return sum(counts) / (time.perf_counter() - t0)


def raw_aggregate(model: Any, tok: Any, prompts: list[list[int]], tokens: int) -> float:
    t0 = time.perf_counter()
    res = batch_generate(
        model,
        tok,
        prompts,
        max_tokens=tokens,
        completion_batch_size=max(len(prompts), 32),
        prefill_batch_size=8,
    )
    elapsed = time.perf_counter() - t0
    # batch_generate stops at EOS (the engine side ignores it): count what it really generated
    return float(res.stats.generation_tokens) / elapsed


def conversation(n_words: int) -> list[dict[str, str]]:
    text = " ".join(
        f"fact {i}: the number {i} is {'even' if i % 2 == 0 else 'odd'}." for i in range(n_words)
    )
    return [
        {"role": "system", "content": "You are a careful assistant."},
        {"role": "user", "content": f"Read these notes. {text}"},
    ]


def turn2_ttft(engine: Engine, model: str, target_tokens: int) -> tuple[float, int, int]:
    n = 10
    while (
        len(engine.tokenize(GenerateRequest(model=model, messages=conversation(n)))) < target_tokens
    ):
        n += 10
    turn1 = conversation(n)
    first = engine.complete(
        GenerateRequest(
            model=model, messages=turn1, max_tokens=32, sampling=SamplingParams(temperature=0.0)
        )
    )
    turn2 = [
        *turn1,
        {"role": "assistant", "content": first[0]["text"]},
        {"role": "user", "content": "Which numbers are even?"},
    ]
    second = engine.complete(
        GenerateRequest(
            model=model, messages=turn2, max_tokens=8, sampling=SamplingParams(temperature=0.0)
        )
    )
    done = second[0]["done"]
    return float(done.timings.ttft), done.usage.prompt_tokens, done.usage.cached_tokens


def med(xs: list[float]) -> float:
    return statistics.median(xs)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--tokens", type=int, default=128)
    ap.add_argument("--prompt", type=int, default=128)
    ap.add_argument("--trials", type=int, default=3)
    ap.add_argument("--concurrency", default="8,32")
    ap.add_argument("--conversation", type=int, default=1500)
    args = ap.parse_args()
    rows: list[tuple[str, str, str, str]] = []

    def add(row: tuple[str, str, str, str]) -> None:
        # each row as soon as it is measured: a later failure must not lose the earlier ones
        rows.append(row)
        print("| " + " | ".join(row) + " |", file=sys.stderr, flush=True)

    with Engine(Settings()) as engine:
        st = engine.load(args.model)
        path = Path(st.path)
        print(
            f"# {args.model}: {path} served as {st.dtype}; backend {backend()}; BLAS {BLAS.path if BLAS else 'reference'}",
            file=sys.stderr,
        )
        model, tok, _ = raw_model(path)
        vocab = int(tok.vocab_size)
        prompt = random_prompt(vocab, args.prompt, 0)
        # warm both
        engine_single(engine, st.id, prompt, 16)
        raw_single(model, tok, prompt, 16)
        e_s, r_s = [], []
        for _ in range(args.trials):  # interleaved, so that machine noise hits both sides alike
            e_s.append(engine_single(engine, st.id, prompt, args.tokens))
            r_s.append(raw_single(model, tok, prompt, args.tokens))
        add(
            (
                "single-stream decode tok/s",
                f"{med(e_s):.1f}",
                f"{med(r_s):.1f} (stream_generate)",
                f"{med(e_s) / med(r_s):.3f}",
            )
        )

        for c in [int(x) for x in args.concurrency.split(",")]:
            prompts = [random_prompt(vocab, args.prompt, 100 + i) for i in range(c)]
            e_a, r_a = [], []
            for _ in range(args.trials):
                e_a.append(engine_aggregate(engine, st.id, prompts, args.tokens))
                r_a.append(raw_aggregate(model, tok, prompts, args.tokens))
            add(
                (
                    f"aggregate tok/s, {c} concurrent",
                    f"{med(e_a):.1f}",
                    f"{med(r_a):.1f} (batch_generate)",
                    f"{med(e_a) / med(r_a):.3f}",
                )
            )
        del model

        hit = [turn2_ttft(engine, st.id, args.conversation) for _ in range(args.trials)]

    with Engine(Settings(prompt_cache_bytes=0)) as cold_engine:
        cold_engine.load(args.model)
        cold = [turn2_ttft(cold_engine, args.model, args.conversation) for _ in range(args.trials)]
    h, c_ = med([x[0] for x in hit]), med([x[0] for x in cold])
    add(
        (
            f"turn-2 TTFT, {hit[0][1]}-token conversation",
            f"{h * 1000:.0f} ms (cache on, {hit[0][2]} cached)",
            f"{c_ * 1000:.0f} ms (cache off)",
            f"{c_ / h:.1f}x faster",
        )
    )

    if backend() == "cpu":
        speeds = {}
        for mode in ("auto", "off"):
            with Engine(Settings(blas=mode)) as e:
                e.load(args.model, dtype="float32")
                engine_single(e, args.model, prompt, 16)
                speeds[mode] = med(
                    [engine_single(e, args.model, prompt, args.tokens) for _ in range(args.trials)]
                )
        add(
            (
                "float32 decode tok/s, OpenBLAS vs reference BLAS",
                f"{speeds['auto']:.1f}",
                f"{speeds['off']:.1f}",
                f"{speeds['auto'] / speeds['off']:.2f}x",
            )
        )

    print(
        f"\n{date.today()} · {platform.machine()} {platform.processor() or ''} · backend {backend()} · `python benchmarks/engine_vs_mlx_lm.py {' '.join(sys.argv[1:])}`\n"
    )
    print("| measure | impetus | reference | ratio |\n|---|---|---|---|")
    for r in rows:
        print("| " + " | ".join(r) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
