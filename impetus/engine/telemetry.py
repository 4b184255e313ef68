"""What the accelerator the engine runs on is doing, read where it can be read without root.

- NVIDIA (the CUDA backend): NVML through `nvidia-ml-py` (the `[cuda]` extra): utilisation,
  memory used / total, power, temperature, and the engine process's own GPU memory.
- Apple silicon (Metal): MLX's active / peak / cache memory always; GPU utilisation from the
  IOAccelerator's performance statistics (`ioreg`, no root needed) where the system exposes it.
- CPU: the engine process's CPU use (of all cores) and the system's.

Every reading says what it measured (`source`, `what`), so a chart never shows a CPU figure under a
GPU title. Fields a backend cannot read stay None rather than 0.
"""

from __future__ import annotations

import contextlib
import os
import re
import subprocess
import sys
import time
from typing import Any

import psutil

from impetus.protocol import AcceleratorInfo


def first_visible_gpu(pynvml: Any) -> Any:
    """NVML's handle of the first GPU CUDA sees (CUDA_VISIBLE_DEVICES: an index or a UUID)."""
    first = os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",")[0].strip()
    if first.startswith("GPU-"):
        return pynvml.nvmlDeviceGetHandleByUUID(first)
    return pynvml.nvmlDeviceGetHandleByIndex(int(first) if first.isdigit() else 0)


class _Nvml:
    """One NVML session for the engine's lifetime; the device is the first one CUDA sees."""

    def __init__(self) -> None:
        import pynvml  # nvidia-ml-py; loads the driver's libnvidia-ml

        pynvml.nvmlInit()
        self.nvml = pynvml
        self.handle = first_visible_gpu(pynvml)
        name = pynvml.nvmlDeviceGetName(self.handle)
        self.name = name.decode() if isinstance(name, bytes) else str(name)

    def read(self, pid: int) -> AcceleratorInfo:
        n, h = self.nvml, self.handle
        r = AcceleratorInfo(
            kind="cuda",
            source="nvml",
            name=self.name,
            what="GPU busy time (NVML, last sample period)",
            time=time.time(),
        )
        r.utilization_percent = float(n.nvmlDeviceGetUtilizationRates(h).gpu)
        mem = n.nvmlDeviceGetMemoryInfo(h)
        r.memory_used_bytes, r.memory_total_bytes = int(mem.used), int(mem.total)
        with contextlib.suppress(n.NVMLError):
            r.power_watts = n.nvmlDeviceGetPowerUsage(h) / 1000.0
        with contextlib.suppress(n.NVMLError):
            r.temperature_celsius = float(n.nvmlDeviceGetTemperature(h, n.NVML_TEMPERATURE_GPU))
        try:
            procs = n.nvmlDeviceGetComputeRunningProcesses(h)
            own = [p.usedGpuMemory for p in procs if p.pid == pid and p.usedGpuMemory]
            # containers may hide PIDs (another namespace): then the share is unknown, not 0
            r.process_memory_bytes = int(sum(own)) if own else None
        except n.NVMLError:
            pass
        return r


_IOREG_UTIL = re.compile(r'"Device Utilization %"\s*=\s*(\d+)')


def _metal_utilization() -> float | None:
    """GPU utilisation from `ioreg` (AGX performance statistics); None where not exposed."""
    try:
        out = subprocess.run(
            ["ioreg", "-r", "-d", "1", "-c", "IOAccelerator"],
            capture_output=True,
            text=True,
            timeout=2,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    m = _IOREG_UTIL.search(out)
    return float(m.group(1)) if m else None


class Telemetry:
    """Readings of the accelerator for `backend` ("cuda" | "metal" | "cpu"), for process `pid`."""

    def __init__(self, backend: str, device_name: str = "", pid: int | None = None) -> None:
        self.backend = backend
        self.device_name = device_name
        self.pid = pid or os.getpid()
        self.proc = psutil.Process(self.pid)
        self.proc.cpu_percent(None)  # the first call only starts the interval
        psutil.cpu_percent(None)
        self.nvml: _Nvml | None = None
        self.error: str | None = None  # why the accelerator could not be read, if so
        if backend == "cuda":
            try:
                self.nvml = _Nvml()
            except Exception as e:  # no driver library, no permission: say so, chart the CPU
                self.error = f"NVML unavailable: {e}"

    def read(self) -> AcceleratorInfo:
        if self.nvml is not None:
            try:
                return self.nvml.read(self.pid)
            except Exception as e:
                self.error = f"NVML read failed: {e}"
        if self.backend == "metal":
            return self._metal()
        return self._cpu()

    def _metal(self) -> AcceleratorInfo:
        import mlx.core as mx

        util = _metal_utilization() if sys.platform == "darwin" else None
        return AcceleratorInfo(
            kind="metal",
            source="ioreg+mlx" if util is not None else "mlx",
            name=self.device_name or "Apple GPU",
            what="GPU device utilisation (ioreg)" if util is not None else "not exposed",
            utilization_percent=util,
            process_memory_bytes=int(mx.get_active_memory()),
            memory_used_bytes=int(mx.get_active_memory() + mx.get_cache_memory()),
            memory_total_bytes=int(psutil.virtual_memory().total),  # unified memory
            time=time.time(),
        )

    def _cpu(self) -> AcceleratorInfo:
        cores = psutil.cpu_count() or 1
        return AcceleratorInfo(
            kind="cpu",
            source="psutil",
            name=self.device_name or "CPU",
            what=f"engine process CPU, % of all {cores} cores"
            + (f" ({self.error})" if self.error else ""),
            utilization_percent=self.proc.cpu_percent(None) / cores,
            memory_used_bytes=int(psutil.virtual_memory().used),
            memory_total_bytes=int(psutil.virtual_memory().total),
            process_memory_bytes=int(self.proc.memory_info().rss),
            time=time.time(),
        )
