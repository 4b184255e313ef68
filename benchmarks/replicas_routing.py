"""Two `impetus serve` replicas behind nginx: consistent hashing on X-Session-Id vs round robin.

    python benchmarks/replicas_routing.py                       # what docs/benchmarks.md records
    python benchmarks/replicas_routing.py --conversations 32 --concurrency 8 --model FOLDER

For each routing it starts two fresh replicas (empty prompt caches) and Debian's nginx running
the shipped deploy/nginx/ files (the upstream as shipped, or with its `hash` line removed for
round robin; rendered as tests/deploy does), then runs `impetus bench multiturn` through nginx
(each conversation sends its own X-Session-Id, the benchmark's default) and prints one Markdown
row per routing: the share of the later turns' prompt tokens served from the prompt cache
(`usage.prompt_tokens_details.cached_tokens`) on turn 2 and on all later turns, turn-2 TTFT
p50 / p99, the TTFT mean over all turns, and how many requests each replica served (from its
/metrics; the two warm-up requests, sent without the header, are counted there). The cold twins
are off: every request is part of a conversation, as a chat service sees them.
`--table FILE` prints the table of an earlier `--out FILE` again.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.deploy.nginx import DEPLOY, Nginx, free_port, render_upstream, rewrite  # noqa: E402

KEY = "routing-bench-key-0123456789"


def start_replica(model: str, port: int, log: Path) -> subprocess.Popen[bytes]:
    cmd = [sys.executable, "-m", "impetus.cli", "serve", "--host", "127.0.0.1"]
    cmd += ["--port", str(port), "--model", model, "--api-key", KEY]
    env = {k: v for k, v in os.environ.items() if k != "IMPETUS_API_KEY"}
    return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=log.open("w"), env=env)


def wait_ready(url: str, proc: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            sys.exit(f"impetus serve exited ({proc.returncode}):\n{log.read_text()[-2000:]}")
        try:
            if httpx.get(url + "ready", timeout=5).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(1)
    sys.exit(f"{url} not ready after 300 s")


def served(url: str) -> int:
    """Requests the replica finished, from its /metrics."""
    text = httpx.get(url + "metrics", headers={"Authorization": f"Bearer {KEY}"}, timeout=10).text
    return round(
        sum(float(v) for v in re.findall(r"^impetus:request_success_total\S* (\S+)$", text, re.M))
    )


def run(hashing: bool, args: argparse.Namespace, work: Path) -> dict[str, Any]:
    name = "hash" if hashing else "rr"
    ports = [free_port(), free_port()]
    urls = [f"http://127.0.0.1:{p}/" for p in ports]
    logs = [work / f"{name}-replica{i}.log" for i in range(2)]
    procs = []
    nginx = Nginx(work / f"nginx-{name}")
    try:
        # one after the other: the first converts the embedded GGUF model once for both
        for port, url, log in zip(ports, urls, logs, strict=True):
            procs.append(start_replica(args.model, port, log))
            wait_ready(url, procs[-1], log)
        nginx.conf("impetus-upstream.conf", render_upstream([u[7:-1] for u in urls], hashing))
        port = free_port()
        site = (DEPLOY / "impetus.conf").read_text()
        site = rewrite(site, r"^\s*listen 80;$", f"    listen 127.0.0.1:{port};", 1)
        nginx.site("impetus", rewrite(site, r"^\s*listen \[::\]:80;\n", "", 1))
        nginx.start()
        nginx.wait_http(f"http://127.0.0.1:{port}/health")
        before = [served(u) for u in urls]  # nothing yet; read the same way as after
        bench = subprocess.run(
            [
                sys.executable, "-m", "impetus.cli", "bench", "multiturn",
                "--base-url", f"http://127.0.0.1:{port}/v1", "--model", args.model,
                "--tokenizer", args.model, "--api-key", KEY,
                "--label", f"replicas: {'consistent hash' if hashing else 'round robin'}",
                "--conversations", str(args.conversations), "--turns", str(args.turns),
                "--concurrency", str(args.concurrency),
                "--first-prompt-tokens", str(args.first_prompt_tokens),
                "--turn-tokens", str(args.turn_tokens), "--max-tokens", str(args.max_tokens),
                # warm-up requests carry no session header: nginx sends them round robin, so
                # both replicas are warm before the clock starts
                "--warmup", "2", "--no-cold", "--json", "--quiet",
            ],
            capture_output=True,
            text=True,
            check=False,
        )  # fmt: skip
        if bench.returncode != 0:
            sys.exit(f"impetus bench multiturn failed:\n{bench.stderr[-3000:]}")
        record = json.loads(bench.stdout)
        record["served"] = [served(u) - b for u, b in zip(urls, before, strict=True)]
        return record
    finally:
        nginx.stop()
        for proc in procs:
            proc.terminate()
        for proc in procs:
            proc.wait(60)


def total(stat: dict[str, Any]) -> float:
    return (stat.get("mean") or 0.0) * stat.get("count", 0)


def share(turns: list[dict[str, Any]]) -> str:
    """Prompt tokens of these turns served from the cache, over all their prompt tokens."""
    cached = sum(total(t["cached_tokens"]) for t in turns)
    prompt = sum(total(t["prompt_tokens"]) for t in turns)
    return f"{100 * cached / prompt:.0f}%" if prompt else "–"


def row(label: str, record: dict[str, Any]) -> str:
    turns = record["turns"]
    second = turns[1]["ttft"]
    ttfts = [t["ttft"] for t in turns]
    mean = sum(total(t) for t in ttfts) / max(1, sum(t["count"] for t in ttfts))
    failed = sum(t["failed"] for t in turns)
    cells = [
        label,
        share(turns[1:2]),
        share(turns[1:]),
        f"{second['p50'] * 1000:.0f}",
        f"{second['p99'] * 1000:.0f}",
        f"{mean * 1000:.0f}",
        " / ".join(str(n) for n in record["served"]),
        str(failed),
    ]
    return "| " + " | ".join(cells) + " |"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="smollm2-135m")
    p.add_argument("--conversations", type=int, default=16)
    p.add_argument("--turns", type=int, default=4)
    p.add_argument("--concurrency", type=int, default=4, help="conversations in flight")
    p.add_argument("--first-prompt-tokens", type=int, default=512)
    p.add_argument("--turn-tokens", type=int, default=64)
    p.add_argument("--max-tokens", type=int, default=32)
    p.add_argument("--out", type=Path, help="also write both runs' JSON here")
    p.add_argument(
        "--table", type=Path, metavar="JSON", help="only print the table of an --out file"
    )
    args = p.parse_args()
    if args.table:
        records = json.loads(args.table.read_text())
    else:
        with tempfile.TemporaryDirectory(prefix="impetus-routing-") as tmp:
            records = {}
            for hashing in (True, False):
                records["hash" if hashing else "rr"] = run(hashing, args, Path(tmp))
        if args.out:
            args.out.write_text(json.dumps(records, indent=2))
    params = records["hash"]["params"]
    print(
        f"{params['conversations']} conversations x {params['turns']} turns, "
        f"{params['concurrency']} in flight, first prompt {params['first_prompt_tokens']} tokens, "
        f"{params['turn_prompt_tokens']} per later turn, {params['max_tokens']} generated per "
        f"turn; model {params['model']}\n"
    )
    print(
        "| routing | turn-2 prompt tokens cached | all later turns cached | turn-2 TTFT p50 ms "
        "| turn-2 TTFT p99 ms | TTFT mean, all turns, ms | requests per replica | failed |"
    )
    print("|---|---|---|---|---|---|---|---|")
    print(row("consistent hash on X-Session-Id", records["hash"]))
    print(row("round robin", records["rr"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
