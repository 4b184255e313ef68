"""notebooks/benchmark-report.ipynb run by papermill through `impetus bench report` (`make report`)."""

from __future__ import annotations

import re
from pathlib import Path

import nbformat
import pytest

from impetus.bench.store import ResultStore
from impetus.cli import main

ROOT = Path(__file__).resolve().parents[2]
NOTEBOOK = ROOT / "notebooks" / "benchmark-report.ipynb"


def test_parameters_cell() -> None:
    nb = nbformat.read(NOTEBOOK, as_version=4)
    tagged = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    assert len(tagged) == 1
    for name in ("endpoints", "model", "concurrency", "trials", "output_path"):
        assert re.search(rf"^{name} = ", tagged[0].source, re.M), name


def test_bench_report_writes_self_contained_html(
    impetus_home: Path,
    tiny_model_dir: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """`impetus bench report` (what `make report` runs) with small parameters."""
    # the kernel papermill starts must import this source tree, installed or not
    monkeypatch.setenv("PYTHONPATH", str(ROOT))
    monkeypatch.delenv("IMPETUS_URL", raising=False)
    monkeypatch.chdir(tmp_path)  # relative paths are the caller's, not the notebook's folder
    small = {
        "prompt_lengths": "[16, 48]",
        "multiturn_turns": "2",
        "multiturn_conversations": "1",
        "multiturn_first_tokens": "48",
        "engine_prompt_tokens": "32",
        "engine_generation_tokens": "8",
    }
    rc = main(
        [
            "bench", "report", "--output", "report/benchmark-report.html", "--db", "bench.sqlite",
            "--endpoints", "impetus,mlx_lm", "--model", str(tiny_model_dir),
            "--concurrency", "1,2", "--requests", "4", "--prompt-tokens", "32", "--max-tokens", "8",
            "--trials", "2",
            *[arg for name, value in small.items() for arg in ("-p", name, value)],
        ]
    )  # fmt: skip
    assert rc == 0
    output = tmp_path / "report" / "benchmark-report.html"
    assert f"report: {output}" in capsys.readouterr().out
    executed = nbformat.read(output.with_suffix(".ipynb"), as_version=4)
    assert not [o for c in executed.cells for o in c.get("outputs", []) if o.output_type == "error"]

    page = output.read_text(encoding="utf-8")
    # self-contained: BokehJS inline, no script loaded from anywhere
    assert not re.search(r"<script[^>]*\bsrc=", page)
    assert "Bokeh" in page and len(page) > 500_000
    runs = ResultStore(tmp_path / "bench.sqlite").list()
    kinds = sorted(r.kind for r in runs)
    assert kinds == ["engine", "multiturn", "multiturn", "serve", "serve", "serve", "serve"]
    assert {r.label for r in runs if r.kind == "serve"} == {"impetus", "mlx_lm"}
    lengths = [
        r
        for r in runs
        if r.kind == "serve"
        and len(r.profiles) == 2
        and r.profiles[0].spec.concurrency == 1
        and r.profiles[1].spec.concurrency == 1
    ]
    assert sorted(p.spec.prompt_tokens for r in lengths for p in r.profiles) == [16, 16, 48, 48]
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
