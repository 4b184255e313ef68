"""Record what the dashboard shows on a GPU machine: `impetus serve` under load, polled as the
Dashboard polls it (admin/status + /metrics, once every `--interval` s).

    python benchmarks/gpu_telemetry.py MODEL_FOLDER OUT.json [--seconds 40] [--concurrency 8]

Checks the NVML path for real (the accelerator is reported as `cuda` through `nvml`, the GPU was
busy while requests ran, its memory and the engine's own share are read) and writes every poll
raw: its wall and monotonic times, the status and the full /metrics text (plus its accelerator
lines). Needs no widget stack (GPU machines have none): `benchmarks/render_dashboard.py` computes
the dashboard's chart rows from that file (impetus.widgets.dashboard.Sampler, at the recorded
times) and draws the dashboard.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model", help="an MLX model folder")
    ap.add_argument("out", type=Path)
    ap.add_argument("--seconds", type=float, default=40.0, help="how long to poll under load")
    ap.add_argument("--interval", type=float, default=0.5)
    ap.add_argument("--concurrency", type=int, default=8)
    args = ap.parse_args()

    port = _free_port()
    base = f"http://127.0.0.1:{port}/"
    server = subprocess.Popen(
        [sys.executable, "-m", "impetus.cli", "serve", "--port", str(port), "--no-auth",
         "--model", args.model, "--allow-model-paths"],
        start_new_session=True,
    )  # fmt: skip
    bench: subprocess.Popen[bytes] | None = None
    try:
        deadline = time.monotonic() + 600
        while True:
            try:
                if httpx.get(base + "ready", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if server.poll() is not None or time.monotonic() > deadline:
                raise SystemExit("impetus serve did not become ready")
            time.sleep(1)
        idle = httpx.get(base + "admin/status", timeout=10).json()
        bench = subprocess.Popen(
            [sys.executable, "-m", "impetus.cli", "bench", "serve", "--base-url", base + "v1",
             "--model", args.model, "--concurrency", str(args.concurrency),
             "--requests", "100000", "--max-tokens", "256", "--prompt-tokens", "256",
             "--warmup", "0", "--no-store", "--quiet", "--timeout", str(args.seconds + 60)],
            stdout=subprocess.DEVNULL,
            start_new_session=True,
        )  # fmt: skip
        polls: list[dict[str, Any]] = []
        t0 = time.monotonic()
        while time.monotonic() - t0 < args.seconds:
            started = time.monotonic()
            status = httpx.get(base + "admin/status", timeout=10).json()
            text = httpx.get(base + "metrics", timeout=10).text
            polls.append(
                {
                    "t": time.time(),
                    "mono": time.monotonic(),
                    "status": status,
                    "metrics_text": text,
                    "metrics": [ln for ln in text.splitlines() if "accelerator" in ln],
                }
            )
            time.sleep(max(0.0, args.interval - (time.monotonic() - started)))
    finally:
        for proc in (bench, server):
            if proc is not None and proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        for proc in (bench, server):
            if proc is not None:
                try:
                    proc.wait(30)
                except subprocess.TimeoutExpired:
                    os.killpg(proc.pid, signal.SIGKILL)

    accs = [p["status"].get("accelerator") or {} for p in polls]
    gen = [(p["status"].get("stats") or {}).get("generation_tokens_total") or 0 for p in polls]
    busy = [a.get("utilization_percent") or 0.0 for a in accs[len(accs) // 4 :]]
    checks = {
        "reported as cuda through nvml": all(
            a.get("kind") == "cuda" and a.get("source") == "nvml" for a in accs
        ),
        "GPU busy under load (median utilisation > 10%)": sorted(busy)[len(busy) // 2] > 10,
        "device memory read": all((a.get("memory_total_bytes") or 0) > 0 for a in accs),
        "engine's own GPU memory read": any(a.get("process_memory_bytes") for a in accs),
        "tokens/s charted": len(gen) > 1 and gen[-1] > gen[0],
        "gauges exported": any(
            "impetus:accelerator_utilization_percent{" in ln for p in polls for ln in p["metrics"]
        ),  # fmt: skip
    }
    args.out.write_text(json.dumps({"idle": idle, "polls": polls, "checks": checks}, indent=1))
    for name, ok in checks.items():
        print(("ok  " if ok else "FAIL"), name)
    last = accs[-1] if accs else {}
    print(
        f"{last.get('name')}: utilisation {busy and max(busy)}% max, "
        f"memory {last.get('memory_used_bytes')} / {last.get('memory_total_bytes')} B, "
        f"engine {last.get('process_memory_bytes')} B, {last.get('power_watts')} W, "
        f"{last.get('temperature_celsius')} C"
    )
    return 0 if all(checks.values()) else 1


if __name__ == "__main__":
    raise SystemExit(main())
