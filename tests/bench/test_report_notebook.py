"""notebooks/benchmark-report.ipynb run by papermill, as `make report` does, with small parameters."""

from __future__ import annotations

import re
from pathlib import Path

import nbformat
import papermill
import pytest

from impetus.bench.store import ResultStore

ROOT = Path(__file__).resolve().parents[2]
NOTEBOOK = ROOT / "notebooks" / "benchmark-report.ipynb"


def test_parameters_cell() -> None:
    nb = nbformat.read(NOTEBOOK, as_version=4)
    tagged = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    assert len(tagged) == 1
    for name in ("endpoints", "model", "concurrency", "trials", "output_path"):
        assert re.search(rf"^{name} = ", tagged[0].source, re.M), name


def test_report_notebook_writes_self_contained_html(
    impetus_home: Path, tiny_model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # the kernel papermill starts must import this source tree, installed or not
    monkeypatch.setenv("PYTHONPATH", str(ROOT))
    monkeypatch.delenv("IMPETUS_URL", raising=False)
    output = tmp_path / "report" / "benchmark-report.html"
    db = tmp_path / "bench.sqlite"
    papermill.execute_notebook(
        str(NOTEBOOK),
        str(tmp_path / "executed.ipynb"),
        parameters={
            "endpoints": ["impetus", "mlx_lm"],
            "model": str(tiny_model_dir),
            "concurrency": [1, 2],
            "requests": 4,
            "prompt_tokens": 32,
            "max_tokens": 8,
            "prompt_lengths": [16, 48],
            "multiturn_turns": 2,
            "multiturn_conversations": 1,
            "multiturn_first_tokens": 48,
            "trials": 2,
            "engine_prompt_tokens": 32,
            "engine_generation_tokens": 8,
            "output_path": str(output),
            "db_path": str(db),
        },
        kernel_name="python3",
        cwd=str(tmp_path),
        execution_timeout=600,
        progress_bar=False,
    )
    page = output.read_text(encoding="utf-8")
    # self-contained: BokehJS inline, no script loaded from anywhere
    assert not re.search(r"<script[^>]*\bsrc=", page)
    assert "Bokeh" in page and len(page) > 500_000
    runs = ResultStore(db).list()
    kinds = sorted(r.kind for r in runs)
    assert kinds == ["engine", "multiturn", "multiturn", "serve", "serve", "serve", "serve"]
    assert {r.label for r in runs if r.kind == "serve"} == {"impetus", "mlx_lm"}
    for run in runs:
        assert run.id in page  # every run of the report is named in it
        assert all(p.failed == 0 for p in run.profiles), [p.failure_reasons for p in run.profiles]
    for title in (
        "Throughput vs concurrency",
        "TTFT distribution",
        "TTFT vs prompt length",
        "Multi-turn",
        "Engine: tokens/s",
        "History",
    ):
        assert title in page
