"""Where a batch step's wall time goes: the engine's scheduler against mlx-lm's BatchGenerator.

    python benchmarks/step_profile.py MODEL_FOLDER [--clients 1,32,128] [--requests 2x] [--tokens 128]

One process, no HTTP, no engine process: closed-loop clients (each sends its next request when the
last one ends) drive (a) `BatchGenerator` alone, as mlx-lm's `batch_generate` would, and (b) the
engine's `ModelRunner` (admission, prompt cache, detokenizer, stop strings, events) around the
same generator. Per run: output tokens/s, steps, mean step time split into the generator's
`next()` (MLX: graph building, waits on the device) and the engine's own Python per step, and the
prefill share. When (b) stays within a few percent of (a), the engine's per-step work hides behind
the device's (mlx-lm pipelines each step with `async_eval`); when it does not, the split says where.
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.serve_table import md_row  # noqa: E402
from impetus.engine.blas import load_optimized_blas  # noqa: E402

load_optimized_blas("auto")  # before MLX, as in the engine

from mlx_lm.generate import BatchGenerator  # noqa: E402
from mlx_lm.models.cache import LRUPromptCache  # noqa: E402

from impetus.config import Settings  # noqa: E402
from impetus.engine.loader import load_chat_model, plan  # noqa: E402
from impetus.engine.scheduler import ModelRunner  # noqa: E402
from impetus.protocol import Delta, Done, EngineStats, GenerateRequest, SamplingParams  # noqa: E402


def prompts(vocab: int, n: int, length: int, seed: int) -> list[list[int]]:
    rng = random.Random(seed)
    return [[rng.randrange(100, vocab - 100) for _ in range(length)] for _ in range(n)]


class TimedNext:
    """A BatchGenerator's `next()`, summing the time spent inside it (MLX's part of a step)."""

    def __init__(self, gen: BatchGenerator) -> None:
        self.inner = gen.next
        self.seconds = 0.0

    def __call__(self) -> Any:
        a = time.perf_counter()
        r = self.inner()
        self.seconds += time.perf_counter() - a
        return r


def closed_loop(
    ps: list[list[int]],
    clients: int,
    admit: Callable[[list[int]], None],
    step: Callable[[], tuple[int, int]],
) -> tuple[int, int, float]:
    """Keep `clients` requests in flight (each one's end admits the next prompt) until `ps` is
    done; `step` runs one batch step: (tokens out, requests finished). (tokens, steps, wall)."""
    queue = list(ps)
    live = 0
    out = 0
    steps = 0
    t0 = time.perf_counter()
    while queue or live:
        while queue and live < clients:
            admit(queue.pop())
            live += 1
        produced, finished = step()
        steps += 1
        out += produced
        live -= finished
    return out, steps, time.perf_counter() - t0


def figures(loop: tuple[int, int, float], t_next: float, prompt_time: float) -> dict[str, float]:
    out, steps, wall = loop
    return {
        "tok_s": out / wall,
        "steps": steps,
        "step_ms": wall / steps * 1e3,
        "next_ms": t_next / steps * 1e3,
        "own_ms": (wall - t_next) / steps * 1e3,
        "prefill_share": prompt_time / wall,
    }


def run_raw(
    model: Any, settings: Settings, ps: list[list[int]], clients: int, tokens: int
) -> dict[str, float]:
    gen = BatchGenerator(
        model,
        max_tokens=tokens,
        completion_batch_size=settings.max_batch,
        prefill_batch_size=settings.prefill_batch,
        prefill_step_size=settings.prefill_step,
    )
    timed = TimedNext(gen)

    def admit(prompt: list[int]) -> None:
        gen.insert([prompt], max_tokens=[tokens])

    def step() -> tuple[int, int]:
        _, gr = timed()
        return len(gr), sum(1 for r in gr if r.finish_reason)

    loop = closed_loop(ps, clients, admit, step)
    c = gen._counters
    gen.close()
    return figures(loop, timed.seconds, c.prompt_time)


def run_engine(
    loaded: Any, settings: Settings, ps: list[list[int]], clients: int, tokens: int
) -> dict[str, float]:
    runner = ModelRunner(
        loaded,
        settings,
        LRUPromptCache(max_size=256, max_bytes=settings.prompt_cache_bytes),
        EngineStats(),
    )
    timed = TimedNext(runner.gen)
    runner.gen.next = timed  # type: ignore[method-assign]
    admitted = 0

    def admit(prompt: list[int]) -> None:
        nonlocal admitted
        admitted += 1
        req = GenerateRequest(
            model=loaded.id,
            prompt=prompt,
            max_tokens=tokens,
            ignore_eos=True,
            sampling=SamplingParams(temperature=0.0),
        )
        runner.admit(f"r{admitted}", req, time.perf_counter())

    def step() -> tuple[int, int]:
        events = runner.step()
        out = sum(len(e.token_ids) for e in events if isinstance(e, Delta))
        return out, sum(1 for e in events if isinstance(e, Done))

    loop = closed_loop(ps, clients, admit, step)
    c = runner.gen._counters
    runner.close()
    return figures(loop, timed.seconds, c.prompt_time)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("model", type=Path)
    ap.add_argument("--clients", default="1,32,128")
    ap.add_argument("--rounds", type=int, default=2, help="requests per client")
    ap.add_argument("--prompt", type=int, default=374)
    ap.add_argument("--tokens", type=int, default=128)
    ap.add_argument(
        "--dtype", default="auto", help="serving dtype (native: the stored weights, e.g. 4-bit)"
    )
    args = ap.parse_args()
    settings = Settings()
    target, _ = plan(args.model.name, args.model, args.dtype, 1 << 62)
    loaded = load_chat_model(args.model.name, args.model, target)
    print(
        f"# {args.model.name} as {loaded.dtype}; prompt {args.prompt}, {args.tokens} generated, {args.rounds} requests per client; max_batch {settings.max_batch}, prefill_batch {settings.prefill_batch}, prefill_step {settings.prefill_step}"
    )
    print(
        "| clients | side | out tok/s | steps | step ms | in next() ms | engine own ms | prefill share |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for clients in [int(x) for x in args.clients.split(",")]:
        n = clients * args.rounds
        for side in ("BatchGenerator", "engine"):
            ps = prompts(loaded.vocab_size, n, args.prompt, clients)
            r = (
                run_raw(loaded.model, settings, ps, clients, args.tokens)
                if side == "BatchGenerator"
                else run_engine(loaded, settings, ps, clients, args.tokens)
            )
            md_row(
                clients, side, f"{r['tok_s']:.1f}", r["steps"], f"{r['step_ms']:.1f}",
                f"{r['next_ms']:.1f}", f"{r['own_ms']:.2f}", f"{r['prefill_share']:.0%}",
            )  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
