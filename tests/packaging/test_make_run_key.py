"""`make run` prints the key that opens the server it starts (one token, drawn once)."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")
def test_make_run_prints_the_token_it_starts_jupyter_with() -> None:
    out = subprocess.run(
        ["make", "-n", "run", "PORT=8999"], cwd=ROOT, capture_output=True, text=True, timeout=120
    ).stdout
    printed = re.search(r"key \(the Jupyter token\):\s+([0-9a-f]{48})", out)
    started = re.search(r"--IdentityProvider\.token=([0-9a-f]{48})", out)
    url = re.search(r"lab\?token=([0-9a-f]{48})", out)
    assert printed and started and url, out[-2000:]
    assert printed.group(1) == started.group(1) == url.group(1)
    # and a token given on the command line is the one used
    given = "ab" * 24
    out = subprocess.run(
        ["make", "-n", "run", "PORT=8999", f"TOKEN={given}"],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    ).stdout  # fmt: skip
    assert set(re.findall(r"[0-9a-f]{48}", out)) == {given}
