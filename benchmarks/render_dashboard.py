"""Draw the dashboard from polls recorded by benchmarks/gpu_telemetry.py (or nvml_check.py), as a PNG.

    python benchmarks/render_dashboard.py RECORDED.json OUT.png

The charts are the Dashboard's own (impetus.widgets.dashboard.dashboard_figures, titles from
the recorded status), fed with the recorded rows, written as a self-contained HTML page (Bokeh
inline) and photographed by Debian's headless chromium. A GPU machine here has no browser: this
is how its dashboard is looked at.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
from datetime import datetime
from html import escape
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import msgspec  # noqa: E402
from bokeh.embed import file_html  # noqa: E402
from bokeh.layouts import column, gridplot  # noqa: E402
from bokeh.models import ColumnDataSource, Div  # noqa: E402
from bokeh.resources import INLINE  # noqa: E402

from impetus.api.schemas import AdminStatus  # noqa: E402
from impetus.client import parse_metrics  # noqa: E402
from impetus.widgets.dashboard import (  # noqa: E402
    ACCEL_CHART,
    COLUMNS,
    Sampler,
    _summary_html,
    accelerator_title,
    dashboard_figures,
)


def _status(recorded: dict) -> AdminStatus:  # type: ignore[type-arg]
    """A recorded status in the client's type (nvml_check.py's carry no api `endpoint`)."""
    return msgspec.convert({"endpoint": "", **recorded}, AdminStatus)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("recorded", type=Path)
    ap.add_argument("out", type=Path)
    args = ap.parse_args()

    data = json.loads(args.recorded.read_text())
    polls = data["polls"]
    sampler = Sampler()
    rows = []
    for p in polls:
        # gpu_telemetry.py records the /metrics text and a monotonic time; nvml_check.py only
        # the accelerator's readings
        rows.append(
            sampler.row(
                _status(p["status"]),
                parse_metrics(p.get("metrics_text", "")),
                local=False,
                now=p.get("mono"),
                at=datetime.fromtimestamp(p["t"]),
            )
        )
    source = ColumnDataSource({c: [r.get(c, float("nan")) for r in rows] for c in COLUMNS})
    figures = dashboard_figures(source)
    last = _status(polls[-1]["status"])
    figures[ACCEL_CHART].title.text = accelerator_title(last)
    header = Div(
        text=_summary_html(last, rows[-1])
        + f"<p style='color:#888'>recorded by {escape(args.recorded.name)}, {len(polls)} polls; "
        + escape(", ".join(k for k, ok in data["checks"].items() if ok))
        + "</p>",
        width=880,
    )
    grid = gridplot(figures, ncols=2, width=430, height=190, toolbar_location=None)
    html = file_html(column(header, grid), INLINE, "impetus dashboard")
    chromium = shutil.which("chromium") or "/usr/bin/chromium"
    with tempfile.TemporaryDirectory() as tmp:
        page = Path(tmp) / "dashboard.html"
        page.write_text(html)
        subprocess.run(
            [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
             "--disable-background-networking", "--disable-component-update", "--no-first-run",
             f"--user-data-dir={tmp}/profile", f"--screenshot={args.out.resolve()}",
             "--window-size=900,860", "--virtual-time-budget=5000", page.as_uri()],
            check=True, capture_output=True, timeout=120,
        )  # fmt: skip
    print(args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
