"""`BenchChart`: a live view of a benchmark run, fed by the runner's callbacks.

```python
chart = iw.BenchChart()
display(chart)
record = await run_serve(config, **chart.callbacks())   # impetus.bench.serve
```

The runner calls `on_result(RequestResult)` per request, `on_progress(done, total)` and
`on_profile(ProfileSummary)` per load profile, on its event loop's thread. Pydantic objects or
plain dicts are accepted, so the chart does not depend on the runner's module.
"""

from __future__ import annotations

import threading
from html import escape
from typing import Any

import ipywidgets as w
from bokeh.layouts import gridplot
from bokeh.models import ColumnDataSource
from bokeh.plotting import figure

from impetus.widgets._base import Charts

NAN = float("nan")


def _as_dict(obj: Any) -> dict[str, Any]:
    if hasattr(obj, "model_dump"):
        return dict(obj.model_dump())
    return dict(obj)


def _ms(x: float | None) -> float:
    return NAN if x is None else 1000.0 * float(x)


def _stat(d: dict[str, Any], metric: str, key: str = "p50") -> float | None:
    value = (d.get(metric) or {}).get(key)
    return None if value is None else float(value)


def _panel(title: str, x_axis_label: str, y_axis_label: str) -> Any:
    """One of the live charts: no toolbar (the grid has none either)."""
    return figure(title=title, x_axis_label=x_axis_label, y_axis_label=y_axis_label, tools="")


class BenchChart(w.VBox):
    """Per-request TTFT and decode speed as requests finish; throughput per load profile."""

    def __init__(self, title: str = "Benchmark", history: int = 5000) -> None:
        self._lock = threading.Lock()  # the runner may call from any thread
        self.history = history
        self.results: list[dict[str, Any]] = []
        self.profiles: list[dict[str, Any]] = []
        self._t0: float | None = None
        self.requests = ColumnDataSource(
            {"t": [], "ttft_ms": [], "tpot_ms": [], "tps": [], "profile": []}
        )
        self.failures = ColumnDataSource({"t": [], "y": []})
        self.profile_source = ColumnDataSource(
            {
                "i": [],
                "name": [],
                "output_tps": [],
                "ttft_p50_ms": [],
                "tpot_p50_ms": [],
                "concurrency": [],
            }
        )
        self.figures = self._figures()
        self.charts = Charts(
            gridplot(self.figures, ncols=2, width=430, height=210, toolbar_location=None)
        )
        self.progress = w.IntProgress(
            value=0, min=0, max=1, description="requests", layout=w.Layout(width="60%")
        )
        self.progress_label = w.HTML()
        self.table = w.HTML()
        super().__init__(
            [
                w.HTML(f"<b>{escape(title)}</b>"),
                w.HBox([self.progress, self.progress_label]),
                self.charts,
                self.table,
            ]
        )

    def _figures(self) -> list[Any]:
        ttft = _panel("Time to first token (per request)", "s since start", "ms")
        ttft.scatter(
            "t",
            "ttft_ms",
            source=self.requests,
            size=5,
            color="#d62728",
            alpha=0.6,
            legend_label="ok",
        )
        ttft.scatter(
            "t", "y", source=self.failures, size=7, marker="x", color="black", legend_label="failed"
        )
        tpot = _panel("Decode speed (per request)", "s since start", "tok/s")
        tpot.scatter("t", "tps", source=self.requests, size=5, color="#1f77b4", alpha=0.6)
        thr = _panel("Output throughput (per profile)", "mean concurrency", "tok/s")
        thr.line(
            "concurrency", "output_tps", source=self.profile_source, color="#2ca02c", line_width=2
        )
        thr.scatter(
            "concurrency", "output_tps", source=self.profile_source, color="#2ca02c", size=7
        )
        lat = _panel("Latency p50 (per profile)", "mean concurrency", "ms")
        for column, color, label in (
            ("ttft_p50_ms", "#d62728", "TTFT"),
            ("tpot_p50_ms", "#1f77b4", "TPOT"),
        ):
            lat.line(
                "concurrency",
                column,
                source=self.profile_source,
                color=color,
                line_width=2,
                legend_label=label,
            )
        for fig in (ttft, lat):
            fig.legend.location = "top_left"
            fig.legend.label_text_font_size = "8pt"
        return [ttft, tpot, thr, lat]

    # ---------------------------------------------------------------- the runner's callbacks
    def callbacks(self) -> dict[str, Any]:
        return {
            "on_result": self.on_result,
            "on_progress": self.on_progress,
            "on_profile": self.on_profile,
        }

    def on_result(self, result: Any) -> None:
        r = _as_dict(result)
        with self._lock:
            self.results.append(r)
            sent = float(r.get("sent") or 0.0)
            if self._t0 is None or sent < self._t0:
                self._t0 = sent
            t = sent + float(r.get("elapsed") or 0.0) - self._t0
            if not r.get("success"):
                self.failures.stream({"t": [t], "y": [0.0]}, rollover=self.history)
                return
            tps = NAN
            e2e, ttft, out = r.get("e2e"), r.get("ttft"), r.get("output_tokens")
            tpot = NAN
            if e2e is not None and ttft is not None and out and out > 1 and e2e > ttft:
                tpot = 1000.0 * (e2e - ttft) / (out - 1)
                tps = (out - 1) / (e2e - ttft)
            self.requests.stream(
                {
                    "t": [t],
                    "ttft_ms": [_ms(ttft)],
                    "tpot_ms": [tpot],
                    "tps": [tps],
                    "profile": [len(self.profiles)],
                },
                rollover=self.history,
            )

    def on_progress(self, done: int, total: int) -> None:
        with self._lock:
            self.progress.max = max(total, 1)
            self.progress.value = min(done, self.progress.max)
            self.progress_label.value = f"{done} / {total}"

    def on_profile(self, summary: Any) -> None:
        s = _as_dict(summary)
        with self._lock:
            self.profiles.append(s)
            spec = s.get("spec") or {}
            self.profile_source.stream(
                {
                    "i": [len(self.profiles)],
                    "name": [_profile_name(spec)],
                    "output_tps": [s.get("output_throughput") or NAN],
                    "ttft_p50_ms": [_ms(_stat(s, "ttft"))],
                    "tpot_p50_ms": [_ms(_stat(s, "tpot"))],
                    "concurrency": [float(s.get("mean_concurrency") or 0.0)],
                }
            )
            self.table.value = self._table_html()

    def _table_html(self) -> str:
        head = "".join(
            f"<th style='padding:0 8px'>{h}</th>"
            for h in (
                "profile",
                "done",
                "failed",
                "req/s",
                "out tok/s",
                "TTFT p50",
                "TPOT p50",
                "e2e p50",
            )
        )
        rows = []
        for s in self.profiles:
            cells = [
                escape(_profile_name(s.get("spec") or {})),
                str(s.get("completed", "")),
                str(s.get("failed", "")),
                f"{s.get('request_throughput') or 0:.2f}",
                f"{s['output_throughput']:.1f}" if s.get("output_throughput") is not None else "–",
                _ms_text(_stat(s, "ttft")),
                _ms_text(_stat(s, "tpot")),
                _ms_text(_stat(s, "e2e")),
            ]
            rows.append(
                "<tr>" + "".join(f"<td style='padding:0 8px'>{c}</td>" for c in cells) + "</tr>"
            )
        return f"<table style='font-size:0.85em'><tr>{head}</tr>{''.join(rows)}</table>"


def _profile_name(spec: dict[str, Any]) -> str:
    kind = spec.get("kind", "?")
    if kind == "rate":
        load = f"rate {spec.get('rate')}/s"
    elif kind == "concurrent":
        load = f"c={spec.get('concurrency')}"
    else:
        load = str(kind)
    return f"{load} p{spec.get('prompt_tokens')}/g{spec.get('max_tokens')}"


def _ms_text(x: float | None) -> str:
    return "–" if x is None else f"{1000 * x:.0f} ms"
