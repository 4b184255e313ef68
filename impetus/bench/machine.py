"""Where a benchmark ran: chip, cores, memory, OS, MLX backend and versions.

Importing mlx.core binds its BLAS; call `machine_info` after any BLAS loading (see engine.py).
"""

from __future__ import annotations

import platform
import subprocess
import sys
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import psutil


def _version(dist: str) -> str | None:
    try:
        return version(dist)
    except PackageNotFoundError:
        return None


def cpu_name() -> str:
    if sys.platform == "darwin":
        try:
            out = subprocess.run(
                ["sysctl", "-n", "machdep.cpu.brand_string"],
                capture_output=True,
                text=True,
                timeout=5,
                check=False,
            )
            if out.stdout.strip():
                return out.stdout.strip()  # "Apple M3 Max"
        except OSError:
            pass
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text(errors="replace").splitlines():
            if line.lower().startswith(("model name", "hardware", "cpu model")):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def mlx_info() -> dict[str, Any]:
    """MLX's backend as this process sees it: metal, cuda or cpu, and the device."""
    info: dict[str, Any] = {"mlx": _version("mlx"), "mlx_lm": _version("mlx-lm")}
    for dist in ("mlx-metal", "mlx-cuda", "mlx-cpu"):
        if v := _version(dist):
            info[dist] = v
    try:
        import mlx.core as mx
    except ImportError as exc:
        info["backend"] = f"unavailable ({exc})"
        return info
    backend = "cpu"
    if mx.metal.is_available():
        backend = "metal"
    elif hasattr(mx, "cuda") and mx.cuda.is_available():
        backend = "cuda"
    if backend != "cpu":
        try:
            device = mx.device_info()
            info["gpu"] = device.get("device_name") or device.get("architecture")
            info["gpu_memory"] = device.get("memory_size") or device.get("total_memory")
        except Exception:  # older MLX: no device_info
            pass
    info["backend"] = backend
    info["default_device"] = str(mx.default_device())
    return info


def machine_info() -> dict[str, Any]:
    from impetus import __version__

    memory = psutil.virtual_memory().total
    info: dict[str, Any] = {
        "cpu": cpu_name(),
        "arch": platform.machine(),
        "cores_physical": psutil.cpu_count(logical=False),
        "cores_logical": psutil.cpu_count(logical=True),
        "memory_bytes": memory,
        "memory_gb": round(memory / 2**30, 1),
        "os": platform.platform(),
        "python": platform.python_version(),
        "impetus": __version__,
    }
    info.update(mlx_info())
    return info
