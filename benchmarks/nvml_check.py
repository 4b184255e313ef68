"""The engine's NVML reader (impetus.engine.telemetry) on a real NVIDIA GPU, under a known load.

    python benchmarks/nvml_check.py OUT.json [--seconds 12]

Needs only the GPU, PyTorch (the load: bf16 matrix products in this process), msgspec, psutil and
nvidia-ml-py: no MLX build. Reads the GPU as the engine would, idle and then busy, checks what it
reports (kind and source, utilisation rising under load, device memory, this process's own GPU
memory, power, temperature) and writes the readings in the shape `admin/status` carries them,
for benchmarks/render_dashboard.py.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def _telemetry_module():  # type: ignore[no-untyped-def]
    """impetus/engine/telemetry.py alone: the engine package would import MLX and ZMQ."""
    spec = importlib.util.spec_from_file_location(
        "impetus_telemetry", ROOT / "impetus" / "engine" / "telemetry.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out", type=Path)
    ap.add_argument("--seconds", type=float, default=12.0)
    ap.add_argument("--interval", type=float, default=0.25)
    args = ap.parse_args()

    import torch

    telemetry = _telemetry_module().Telemetry("cuda", torch.cuda.get_device_name(0))
    if telemetry.nvml is None:
        print("NVML unavailable:", telemetry.error)
        return 1
    stop = threading.Event()

    def load() -> None:
        a = torch.randn(8192, 8192, device="cuda", dtype=torch.bfloat16)
        while not stop.is_set():
            for _ in range(20):
                a = (a @ a).clamp_(-1, 1)
            torch.cuda.synchronize()

    polls = []

    def sample(phase: str, seconds: float) -> None:
        t0 = time.monotonic()
        while time.monotonic() - t0 < seconds:
            acc = telemetry.read()
            status = {
                "state": "ready",
                "backend": "cuda",
                "device": acc.name,
                "pid": os.getpid(),
                "memory_used": int(torch.cuda.memory_allocated()),
                "memory_budget": int(torch.cuda.get_device_properties(0).total_memory),
                "process_rss": 0,
                "accelerator": {f: getattr(acc, f) for f in acc.__struct_fields__},
            }
            polls.append({"t": time.time(), "phase": phase, "status": status})
            time.sleep(args.interval)

    sample("idle", 2.0)
    worker = threading.Thread(target=load)
    worker.start()
    try:
        sample("load", args.seconds)
    finally:
        stop.set()
        worker.join()

    accs = [p["status"]["accelerator"] for p in polls]
    idle = [
        a["utilization_percent"] for p, a in zip(polls, accs, strict=True) if p["phase"] == "idle"
    ]
    busy = [
        a["utilization_percent"] for p, a in zip(polls, accs, strict=True) if p["phase"] == "load"
    ]
    checks = {
        "reported as cuda through nvml": all(
            a["kind"] == "cuda" and a["source"] == "nvml" for a in accs
        ),
        "utilisation rises under load (median > 50%)": sorted(busy)[len(busy) // 2] > 50,
        "device memory read": all(a["memory_total_bytes"] and a["memory_used_bytes"] for a in accs),
        "this process's GPU memory read": any(a["process_memory_bytes"] for a in accs),
        "power read": all(a["power_watts"] for a in accs),
        "temperature read": all(a["temperature_celsius"] for a in accs),
    }
    args.out.write_text(json.dumps({"polls": polls, "checks": checks}, indent=1))
    last = accs[-1]
    print(
        f"{last['name']}: idle utilisation {idle}, under load median {sorted(busy)[len(busy) // 2]}%"
    )
    print(
        f"memory {last['memory_used_bytes'] / 2**30:.1f} / {last['memory_total_bytes'] / 2**30:.1f} GiB, "
        f"this process {(last['process_memory_bytes'] or 0) / 2**30:.2f} GiB, "
        f"{last['power_watts']:.0f} W, {last['temperature_celsius']:.0f} C"
    )
    for name, ok in checks.items():
        print(("ok  " if ok else "FAIL"), name)
    return 0 if all(checks.values()) else 1


if __name__ == "__main__":
    raise SystemExit(main())
