"""The notebooks (quickstart, chat, magics, compare) run top to bottom under papermill, headless.

No Jupyter server here: the kernel's client starts a private `impetus serve` with the embedded
default model (smollm2-135m) and stops it when the kernel exits.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
@pytest.mark.parametrize("name", ["quickstart", "chat", "magics", "compare"])
def test_notebook_runs_top_to_bottom(
    name: str, tmp_path: Path, impetus_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import papermill as pm

    # the kernel imports impetus from this tree, installed or not; no server may be inherited
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    monkeypatch.delenv("IMPETUS_URL", raising=False)
    monkeypatch.delenv("JPY_PARENT_PID", raising=False)
    out = tmp_path / f"{name}.ipynb"
    nb = pm.execute_notebook(
        str(ROOT / "notebooks" / f"{name}.ipynb"),
        str(out),
        kernel_name="python3",
        cwd=str(ROOT / "notebooks"),
        execution_timeout=600,
        progress_bar=False,
    )
    errors = [o for c in nb.cells for o in c.get("outputs", []) if o.get("output_type") == "error"]
    assert not errors
    text = "".join(
        o.get("text", "")
        for c in nb.cells
        for o in c.get("outputs", [])
        if o.get("output_type") == "stream"
    )
    assert "tok/s" in text  # answers were streamed and measured
