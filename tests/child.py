"""Python run in a child process by tests that need a fresh interpreter (what is loaded before
the first `import mlx.core`) or other process rights than the test's own."""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any


def run_python(script: str, **run: Any) -> tuple[Any, str]:
    """Run `script` with this interpreter (keywords go to `subprocess.run`: env, cwd, ...): the
    JSON it printed as its last line, and its stderr. A child that fails fails the test, with
    the end of its stderr."""
    proc = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120, **run
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1]), proc.stderr
