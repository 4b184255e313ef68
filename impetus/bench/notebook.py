"""`impetus bench report`: notebooks/benchmark-report.ipynb run by papermill.

The notebook does the work (benchmarks, charts, the self-contained HTML page); this only finds
it, passes the parameters that were given (the rest keep the notebook's defaults) and keeps the
executed notebook beside the HTML report, outputs included, as the record of how it was made.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

# notebooks/ sits beside the package in a source tree (and an editable install)
NOTEBOOK = Path(__file__).resolve().parents[2] / "notebooks" / "benchmark-report.ipynb"


def run_report(
    parameters: dict[str, Any],
    *,
    output: str | Path,
    executed: str | Path | None = None,
    notebook: str | Path | None = None,
    kernel: str = "python3",
    progress: bool = True,
    log_output: bool = False,
) -> tuple[Path, Path]:
    """Execute the report notebook; return (HTML report, executed notebook)."""
    import papermill

    source = Path(notebook) if notebook else NOTEBOOK
    if not source.exists():
        raise FileNotFoundError(
            f"report notebook not found: {source} (pass --notebook PATH; it lives in the "
            "impetus source tree under notebooks/)"
        )
    html = Path(output).resolve()
    ran = Path(executed).resolve() if executed else html.with_suffix(".ipynb")
    html.parent.mkdir(parents=True, exist_ok=True)
    ran.parent.mkdir(parents=True, exist_ok=True)
    papermill.execute_notebook(
        str(source),
        str(ran),
        parameters={**parameters, "output_path": str(html)},
        kernel_name=kernel,
        cwd=str(source.parent),
        progress_bar=progress and sys.stderr.isatty(),
        # the notebook's own lines (one per finished load profile) reach the terminal as they come
        log_output=log_output,
        stdout_file=sys.stdout if log_output else None,
        stderr_file=sys.stderr if log_output else None,
    )
    return html, ran
