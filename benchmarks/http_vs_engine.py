"""The API issue's overhead benchmark: the same engine reached over HTTP/SSE vs directly.

    python benchmarks/http_vs_engine.py [--model smollm2-135m] [--tokens 128] [--trials 5]

Starts `impetus serve` (its own engine process) and, beside it, an engine driven in-process
through `impetus.engine.Engine`; trials alternate between the two so that machine noise hits
both alike. Prints decode tokens/s and time to first token, client-side, as a Markdown table.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import socket
import statistics
import subprocess
import sys
import time
from datetime import date

import httpx

from impetus.config import Settings
from impetus.engine import Engine
from impetus.protocol import Done, GenerateRequest, SamplingParams

MESSAGES = [{"role": "user", "content": "Write a long story about a lighthouse keeper."}]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def over_http(base: str, model: str, tokens: int) -> tuple[float, float]:
    body = {
        "model": model,
        "messages": MESSAGES,
        "max_tokens": tokens,
        "temperature": 0,
        "stream": True,
        "stream_options": {"include_usage": True},
        "ignore_eos": True,
    }
    t0 = time.perf_counter()
    first = last = 0.0
    n = 0
    with httpx.stream("POST", f"{base}/v1/chat/completions", json=body, timeout=600) as r:
        r.raise_for_status()
        for line in r.iter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            chunk = json.loads(line[6:])
            if chunk.get("usage"):
                n = chunk["usage"]["completion_tokens"]
            if chunk.get("choices") and chunk["choices"][0]["delta"].get("content"):
                last = time.perf_counter()
                first = first or last
    return first - t0, (n - 1) / (last - first)


def direct(engine: Engine, model: str, tokens: int) -> tuple[float, float]:
    req = GenerateRequest(
        model=model,
        messages=MESSAGES,
        max_tokens=tokens,
        ignore_eos=True,
        sampling=SamplingParams(temperature=0.0),
    )
    t0 = time.perf_counter()
    first = last = 0.0
    n = 0
    for ev in engine.generate(req):
        if ev.type == "delta" and ev.text:
            last = time.perf_counter()
            first = first or last
        if isinstance(ev, Done):
            n = ev.usage.completion_tokens
    return first - t0, (n - 1) / (last - first)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--tokens", type=int, default=128)
    ap.add_argument("--trials", type=int, default=5)
    args = ap.parse_args()
    port = free_port()
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "impetus.cli",
            "serve",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--no-auth",
            "--model",
            args.model,
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 300
        while time.time() < deadline:
            try:
                if httpx.get(f"{base}/ready", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        else:
            raise SystemExit("impetus serve did not become ready")
        with Engine(Settings()) as engine:
            engine.load(args.model)
            over_http(base, args.model, 16)  # warm both paths
            direct(engine, args.model, 16)
            http_runs, direct_runs = [], []
            for _ in range(args.trials):
                http_runs.append(over_http(base, args.model, args.tokens))
                direct_runs.append(direct(engine, args.model, args.tokens))
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(30)
    h_ttft, h_tps = (statistics.median(x[i] for x in http_runs) for i in (0, 1))
    d_ttft, d_tps = (statistics.median(x[i] for x in direct_runs) for i in (0, 1))
    print(
        f"\n{date.today()} · {platform.machine()} · `python benchmarks/http_vs_engine.py {' '.join(sys.argv[1:])}` (medians of {args.trials})\n"
    )
    print("| measure | over HTTP (SSE) | engine directly | ratio / overhead |\n|---|---|---|---|")
    print(f"| single-stream decode tok/s | {h_tps:.1f} | {d_tps:.1f} | {h_tps / d_tps:.3f} |")
    print(
        f"| time to first token | {h_ttft * 1000:.1f} ms | {d_ttft * 1000:.1f} ms | +{(h_ttft - d_ttft) * 1000:.1f} ms |"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
