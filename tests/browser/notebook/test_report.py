"""Real browser: notebooks/benchmark-report.ipynb run in JupyterLab, as a user who opened it,
set small parameters and pressed Run All: against the engine of that Jupyter server, the
profiles print as they finish, the Bokeh charts render in the notebook and the HTML report is
written. Screenshots land in tests/artifacts/.
"""

from __future__ import annotations

import re
from pathlib import Path

import nbformat
from papermill.iorw import load_notebook_node
from papermill.parameterize import parameterize_notebook

from tests.browser.notebook.lab import ARTIFACTS, BROWSER_MARKS, lab_page, wait_all_cells_done

pytestmark = BROWSER_MARKS

# What `papermill -p` would inject: the server this kernel belongs to, a few short profiles.
SMALL = {
    "endpoints": ["impetus"],
    "model": "smollm2-135m",
    "concurrency": [1, 2],
    "requests": 4,
    "prompt_tokens": 32,
    "max_tokens": 8,
    "prompt_lengths": [16, 48],
    "multiturn_turns": 2,
    "multiturn_conversations": 1,
    "multiturn_first_tokens": 48,
    "trials": 1,
    "engine_prompt_tokens": 32,
    "engine_generation_tokens": 8,
    "output_path": "reports/small.html",
    "db_path": "bench.sqlite",
}


def test_benchmark_report_notebook_in_the_browser(lab: tuple[str, str, Path]) -> None:
    from playwright.sync_api import expect

    root = lab[2].parent / "work"  # the lab's root: a copy of notebooks/
    nb = load_notebook_node(str(root / "benchmark-report.ipynb"))  # as papermill reads it
    nbformat.write(parameterize_notebook(nb, SMALL), root / "benchmark-report-small.ipynb")

    with lab_page(lab, "benchmark-report-small.ipynb", "report-failure.png", 1200) as page:
        wait_all_cells_done(page, timeout=600_000)
        outputs = page.locator(".jp-NotebookPanel:not(.lm-mod-hidden) .jp-OutputArea-output")
        tracebacks = outputs.filter(has_text="Traceback")
        assert not tracebacks.count(), tracebacks.first.text_content()
        text = "\n".join(outputs.all_text_contents())
        # the endpoint is this Jupyter server; each profile printed as it finished
        assert re.search(r"impetus: http://127\.0\.0\.1:\d+/\S*impetus/", text), text[:2000]
        for profile in ("c=1 p32/g8", "c=2 p32/g8"):
            assert f"[impetus] {profile}: 4/4 requests" in text, text[:4000]
        assert "tok/s max" in text and "multi-turn done" in text
        # the charts render in the notebook (Bokeh draws each figure on a canvas)
        charts = page.locator(".jp-NotebookPanel:not(.lm-mod-hidden) .jp-OutputArea-output canvas")
        expect(charts.first).to_be_visible(timeout=60_000)
        assert charts.count() >= 6, charts.count()
        charts.first.scroll_into_view_if_needed()
        page.screenshot(path=str(ARTIFACTS / "benchmark-report-charts.png"))
        expect(outputs.filter(has_text="report written to").first).to_be_visible()
        page.screenshot(path=str(ARTIFACTS / "benchmark-report-written.png"))

    report = (root / "reports" / "small.html").read_text(encoding="utf-8")
    assert "impetus benchmark report: smollm2-135m" in report
    assert "Throughput vs concurrency" in report and "Multi-turn" in report
    assert not re.search(r"<script[^>]*\bsrc=", report)  # self-contained
