"""`ranks = "auto"`: how many engine processes the start-up models are sharded over.

The rule comes from measurements (docs/scale.md, H200s, a Llama-3-8B shape in bf16 that fits one
card, `impetus serve --ranks N` over MLX's NCCL backend): 1 rank gave 143.6 tok/s at 1 stream
and 1053 at 64; 2 ranks 57.3 / 770; 4 ranks 56.3 / 756. Tensor parallelism over NCCL on one
machine costs more than it gives whenever the model fits one GPU, so `auto` shards only what does
not fit: 1 rank when the weights fit one GPU, else the fewest of 2, 4, 8 GPUs they fit on.

`choose_ranks` is the rule, on numbers only (tests call it with a table of machines);
`choose_for` gathers the numbers for the settings: which MLX backend is installed (from the
distributions' metadata, without importing MLX into the api process), the visible GPUs and one
GPU's memory (NVML, else MLX's device info in a child process), and the registry's weight
estimate of each start-up model in the serving dtype (`RegistryEntry.memory_bytes`).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import platform
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from impetus.config import Settings, memory_fraction
from impetus.engine.distributed import launched_rank
from impetus.engine.telemetry import first_visible_gpu

log = logging.getLogger("impetus.engine")

SHARD_COUNTS = (2, 4, 8)  # the rank counts auto picks from (heads divide evenly by these)
WHY_NOT_SHARD = "sharding a model that fits costs throughput: docs/scale.md"


@dataclass(frozen=True)
class Machine:
    backend: str  # MLX's backend here: cpu | cuda | metal
    gpus: int = 0  # GPUs visible to this process (CUDA_VISIBLE_DEVICES, else all)
    gpu_memory: int | None = None  # total bytes of one GPU (None: unknown)


@dataclass(frozen=True)
class StartModel:
    id: str
    weight_bytes: int | None  # the registry's estimate in the serving dtype (None: unknown)
    sharded: bool = True  # chat models split over the ranks; embedding models load whole on each


@dataclass(frozen=True)
class RankChoice:
    ranks: int
    reason: str

    def line(self) -> str:
        return f"ranks auto: {self.ranks} ({self.reason})"


def _gib(n: float) -> str:
    return f"{n / 2**30:.1f} GiB"


def choose_ranks(
    machine: Machine,
    models: Sequence[StartModel],
    *,
    launched: bool = False,
    fraction: float = 0.6,
    budget: int | None = None,
) -> RankChoice:
    """The rank count for `ranks = "auto"`, with its reason.

    One GPU's room is `fraction` of its memory (the headroom the default memory budget keeps of
    RAM), and at most `budget` (the engine plans every rank's weights against its memory
    budget). A rank holds 1/N of the chat models' weights (as `loader.plan` estimates it) and
    the whole of each embedding model."""
    if launched:
        return RankChoice(1, "under an MLX launcher, which starts the ranks itself")
    if machine.backend != "cuda":
        return RankChoice(1, f"{machine.backend} backend: auto shards over CUDA GPUs only")
    if machine.gpus < 2:
        return RankChoice(1, f"{machine.gpus} GPU visible")
    if not models:
        return RankChoice(1, "no model to load at start")
    unknown = [m.id for m in models if m.weight_bytes is None]
    if unknown:
        return RankChoice(1, f"size of {', '.join(unknown)} unknown (not on this machine?)")
    if machine.gpu_memory is None:
        return RankChoice(1, "GPU memory unknown")
    room = int(machine.gpu_memory * fraction)
    if budget is not None:
        room = min(room, budget)
    split = sum(m.weight_bytes or 0 for m in models if m.sharded)
    whole = sum(m.weight_bytes or 0 for m in models if not m.sharded)
    names = f"{', '.join(m.id for m in models)}, {_gib(split + whole)}"
    gpu = f"{_gib(machine.gpu_memory)} GPU ({_gib(room)} usable)"
    if split + whole <= room:
        return RankChoice(1, f"{names}, fits one {gpu}; {WHY_NOT_SHARD}")
    counts = [n for n in SHARD_COUNTS if n <= machine.gpus]
    for n in counts:
        if split // n + whole <= room:
            return RankChoice(
                n,
                f"{names}, does not fit one {gpu}; {_gib(split // n + whole)} a rank over {n} fits",
            )
    n = counts[-1]
    return RankChoice(
        n,
        f"{names}, does not fit even {n} GPUs of {_gib(machine.gpu_memory)} "
        f"({_gib(split // n + whole)} a rank, {_gib(room)} usable): the load will fail",
    )


# ---- the numbers of this machine and these settings -------------------------------------------


def installed_backend() -> str:
    """MLX's backend from the installed distributions' metadata (impetus.install): the api
    process does not import MLX (its engine does, in another process)."""
    from impetus.install import LINUX_BACKENDS, check_backend

    if platform.system() == "Darwin":
        return "metal"
    kinds = {LINUX_BACKENDS[d] for d in check_backend().installed if d in LINUX_BACKENDS}
    return "cuda" if kinds == {"cuda"} else "cpu"


def _visible() -> list[str] | None:
    """CUDA_VISIBLE_DEVICES as a list (None: unset, every GPU is visible)."""
    value = os.environ.get("CUDA_VISIBLE_DEVICES")
    if value is None:
        return None
    return [d.strip() for d in value.split(",") if d.strip()]


def _nvml_gpus(visible: list[str] | None) -> tuple[int, int] | None:
    """(visible GPUs, total bytes of the first) from NVML, None where NVML is not there."""
    try:
        import pynvml  # nvidia-ml-py (the cuda extra)

        pynvml.nvmlInit()
    except Exception:  # not installed, or no driver: the fallbacks below
        return None
    try:
        count = int(pynvml.nvmlDeviceGetCount())
        total = int(pynvml.nvmlDeviceGetMemoryInfo(first_visible_gpu(pynvml)).total)
        return (len(visible) if visible is not None else count), total
    except pynvml.NVMLError:
        return None
    finally:
        with contextlib.suppress(Exception):
            pynvml.nvmlShutdown()


def _mlx_gpu_memory() -> int | None:
    """One GPU's total memory from MLX's device info, in a child process (importing MLX with
    CUDA here would give the api process a CUDA context of its own)."""
    probe = (
        "import json, mlx.core as mx; i = mx.device_info(); "
        "print(json.dumps(i.get('total_memory') or i.get('memory_size')))"
    )
    with contextlib.suppress(Exception):
        out = subprocess.run(
            [sys.executable, "-c", probe], capture_output=True, text=True, timeout=120, check=True
        )
        value = json.loads(out.stdout.strip().splitlines()[-1])
        return int(value) if value else None
    return None


def this_machine() -> Machine:
    backend = installed_backend()
    if backend != "cuda":
        return Machine(backend)
    visible = _visible()
    nvml = _nvml_gpus(visible)
    if nvml is not None:
        return Machine(backend, *nvml)
    gpus_dir = Path("/proc/driver/nvidia/gpus")
    if visible is not None:
        count = len(visible)
    elif gpus_dir.is_dir():
        count = len(list(gpus_dir.iterdir()))
    else:
        count = 0
    return Machine(backend, count, _mlx_gpu_memory() if count >= 2 else None)


def start_models(settings: Settings, backend: str) -> list[StartModel]:
    """The start-up models with the registry's weight estimate in `backend`'s serving dtype."""
    from impetus.models.errors import ModelError
    from impetus.models.registry import describe

    out = []
    for model_id in settings.models:
        try:
            e = describe(model_id, settings, backend=backend)
        except ModelError:
            out.append(StartModel(model_id, None))
            continue
        out.append(StartModel(e.id, e.memory_bytes, sharded=e.kind == "chat"))
    return out


def choose_for(settings: Settings) -> RankChoice:
    """`choose_ranks` for these settings on this machine (the registry is read only where the
    machine could shard at all)."""
    launched = launched_rank() is not None
    machine = Machine(installed_backend()) if launched else this_machine()
    could_shard = not launched and machine.backend == "cuda" and machine.gpus >= 2
    return choose_ranks(
        machine,
        start_models(settings, machine.backend) if could_shard else [],
        launched=launched,
        fraction=memory_fraction(),
        budget=settings.memory_budget,
    )
