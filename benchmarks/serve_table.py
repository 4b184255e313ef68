"""The side-by-side table of benchmarks/serve_vs_mlx_lm_gpu.sh, from its `--json` results.

    python benchmarks/serve_table.py FOLDER

FOLDER holds `impetus-c{N}.json`, `mlx_lm-c{N}.json` (one concurrency level each) and
`impetus-ttft.json`, `mlx_lm-ttft.json` (one stream, several prompt lengths), each the output of
`impetus bench serve --json`. Prints Markdown for docs/benchmarks.md.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from typing import Any


def profiles(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    runs = json.loads(path.read_text())
    if isinstance(runs, dict):
        runs = [runs]
    return [p for run in runs for p in run["profiles"]]


def md_row(*cells: object) -> None:
    """One row of a Markdown table on stdout, flushed: a long run shows each row as it comes
    (step_profile.py and ttft_breakdown.py print theirs with it)."""
    print("| " + " | ".join(str(c) for c in cells) + " |", flush=True)


def ms(stat: dict[str, Any] | None, key: str) -> str:
    return f"{stat[key] * 1000:.0f}" if stat and stat.get("count") else "–"


def main() -> int:
    folder = Path(sys.argv[1])
    levels = sorted(
        {
            int(m.group(1))
            for f in folder.glob("*-c*.json")
            if (m := re.search(r"-c(\d+)\.json$", f.name))
        }
    )
    print(
        "| streams | impetus out tok/s | failed | mlx_lm.server out tok/s | failed | ratio | TTFT p50 / p99 impetus (ms) | TTFT p50 / p99 mlx_lm (ms) |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for c in levels:
        a = profiles(folder / f"impetus-c{c}.json")
        b = profiles(folder / f"mlx_lm-c{c}.json")
        if not a:
            continue
        pa = a[0]
        pb = b[0] if b else None
        ratio = (
            f"**{pa['output_throughput'] / pb['output_throughput']:.2f}**"
            if pb and pb["output_throughput"]
            else "–"
        )
        other = f"{pb['output_throughput']:.1f} | {pb['failed']}" if pb else "– | –"
        print(
            f"| {c} ({pa['requests']} requests) | {pa['output_throughput']:.1f} | {pa['failed']} | "
            f"{other} | {ratio} | {ms(pa['ttft'], 'p50')} / {ms(pa['ttft'], 'p99')} | "
            f"{ms(pb['ttft'], 'p50') if pb else '–'} / {ms(pb['ttft'], 'p99') if pb else '–'} |"
        )
    ta, tb = profiles(folder / "impetus-ttft.json"), profiles(folder / "mlx_lm-ttft.json")
    if ta:
        print(
            "\n| prompt tokens (1 stream) | TTFT p50 / max impetus (ms) | TTFT p50 / max mlx_lm (ms) |"
        )
        print("|---|---|---|")
        other = {p["spec"]["prompt_tokens"]: p for p in tb}
        for p in ta:
            n = p["spec"]["prompt_tokens"]
            q = other.get(n)
            print(
                f"| {n} | {ms(p['ttft'], 'p50')} / {ms(p['ttft'], 'max')} | "
                f"{ms(q['ttft'], 'p50') if q else '–'} / {ms(q['ttft'], 'max') if q else '–'} |"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
