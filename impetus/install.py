"""What is installed: MLX's backend distributions, checked from their metadata.

Used by `impetus doctor` and by the engine client when the engine process fails to start, so that
a missing or mixed backend is named with the one command that fixes it.
"""

from __future__ import annotations

import importlib.metadata as md
import os
import platform
import shlex
import shutil
import sys
from collections.abc import Sequence
from dataclasses import dataclass

from impetus import DISTRIBUTION

# MLX's backend distributions on Linux, by the impetus extra that installs each. The CPU and CUDA
# wheels all ship mlx/lib/libmlx.so: with two of them installed, whichever came last wins.
LINUX_BACKENDS = {"mlx-cpu": "cpu", "mlx-cuda-12": "cuda", "mlx-cuda-13": "cuda"}


@dataclass(frozen=True)
class BackendInstall:
    """Which MLX backend distributions are installed, and the one command that fixes a bad mix."""

    installed: tuple[str, ...]  # backend distributions found (mlx-cpu, mlx-cuda-13, mlx-metal)
    problem: str | None  # None when exactly one backend is installed
    fix: str | None  # one shell command, for this interpreter

    @property
    def ok(self) -> bool:
        return self.problem is None


def _installed_dists(path: Sequence[str] | None) -> dict[str, str]:
    dists = md.distributions() if path is None else md.distributions(path=list(path))
    out: dict[str, str] = {}
    for d in dists:
        name = d.metadata["Name"]
        if name:
            out[name.lower().replace("_", "-")] = d.version
    return out


def _nvidia_gpu() -> bool:
    return os.path.exists("/proc/driver/nvidia/version") or shutil.which("nvidia-smi") is not None


def check_backend(
    path: Sequence[str] | None = None,
    system: str | None = None,
    python: str | None = None,
    want: str | None = None,
) -> BackendInstall:
    """Inspect the installed distributions' metadata (on `path`, default sys.path): never imports
    MLX, so it works where a broken mix makes `import mlx.core` crash.

    `want` ("cpu" or "cuda") is the backend the fix installs or keeps on Linux; by default CUDA
    where an NVIDIA driver is present, else CPU."""
    if want not in (None, "cpu", "cuda"):
        raise ValueError(f"unknown MLX backend {want!r}: choose cpu or cuda")
    want = want or ("cuda" if _nvidia_gpu() else "cpu")
    system = system or platform.system()
    pip = f"{shlex.quote(python or sys.executable)} -m pip"
    dists = _installed_dists(path)
    mlx_version = dists.get("mlx")
    pin = f"=={mlx_version}" if mlx_version else ""
    if system == "Darwin":
        if "mlx-metal" in dists and mlx_version:
            return BackendInstall(("mlx-metal",), None, None)
        return BackendInstall(
            (),
            "MLX's Metal backend (mlx-metal) is not installed",
            f"{pip} install --force-reinstall 'mlx{pin}'",
        )
    found = tuple(sorted(d for d in LINUX_BACKENDS if d in dists))
    if len(found) == 1 and mlx_version:
        return BackendInstall(found, None, None)
    if not found or not mlx_version:
        return BackendInstall(
            found,
            "no MLX backend is installed" if not found else "MLX itself (mlx) is not installed",
            f"{pip} install '{DISTRIBUTION}[{want}]'",
        )
    # Several: keep the wanted one if it is there, and reinstall the kept one so that its
    # libmlx.so is the one on disk (uninstalling the others deletes the shared file).
    wanted = [d for d in found if LINUX_BACKENDS[d] == want]
    keep = wanted[-1] if wanted else found[-1]
    drop = [d for d in found if d != keep]
    return BackendInstall(
        found,
        f"several MLX backends are installed ({', '.join(found)}); they overwrite each other's "
        "libmlx.so",
        f"{pip} uninstall -y {' '.join(drop)} && "
        f"{pip} install --force-reinstall --no-deps '{keep}=={dists[keep]}'",
    )
