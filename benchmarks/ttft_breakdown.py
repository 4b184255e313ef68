"""First-token time through the engine process, split as the engine records it.

    python benchmarks/ttft_breakdown.py MODEL [--lengths 128,512,2048] [--prefill-steps 512,2048]

For each prefill step size (the engine's `prefill_step`: prompt tokens per batch step), loads the
model in an engine process, sends one request at a time of each prompt length (random token ids,
2 generated tokens), and prints the medians of the engine's own timings: queue (arrival to the
first prefill step), prefill (first prefill step to the first token) and TTFT, next to the
client-side time to the first delta. No HTTP: what is left between the engine's TTFT and a
server's is the API's.
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.serve_table import md_row  # noqa: E402
from impetus.config import Settings  # noqa: E402
from impetus.engine import Engine  # noqa: E402
from impetus.protocol import Delta, Done, GenerateRequest, SamplingParams  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("model")
    ap.add_argument("--lengths", default="128,512,2048")
    ap.add_argument("--prefill-steps", default="512,2048")
    ap.add_argument("--requests", type=int, default=5)
    args = ap.parse_args()
    rng = random.Random(0)
    print(
        "| prefill_step | prompt tokens | queue ms | prefill ms | engine TTFT ms | client first delta ms |"
    )
    print("|---|---|---|---|---|---|")
    for step in [int(x) for x in args.prefill_steps.split(",")]:
        with Engine(Settings(prefill_step=step)) as engine:
            st = engine.load(args.model)
            for n in [int(x) for x in args.lengths.split(",")]:
                rows = []
                for i in range(args.requests + 1):  # the first of each length is a warm-up
                    prompt = [rng.randrange(100, 120000) for _ in range(n)]
                    req = GenerateRequest(
                        model=st.id,
                        prompt=prompt,
                        max_tokens=2,
                        ignore_eos=True,
                        sampling=SamplingParams(temperature=0.0),
                    )
                    t0 = time.perf_counter()
                    first = None
                    done = None
                    for ev in engine.generate(req):
                        if first is None and isinstance(ev, Delta):
                            first = time.perf_counter() - t0
                        if isinstance(ev, Done):
                            done = ev
                    if i and done is not None and first is not None:
                        t = done.timings
                        rows.append((t.queue, t.prefill, t.ttft, first))
                med = [statistics.median(r[k] for r in rows) * 1000 for k in range(4)]
                md_row(step, n, *(f"{m:.1f}" for m in med))
    return 0


if __name__ == "__main__":
    sys.exit(main())
