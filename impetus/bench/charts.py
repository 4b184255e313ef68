"""Bokeh charts of benchmark runs; each function returns a figure (or layout) to show or embed.

`report_html` writes a self-contained page: BokehJS inline, no CDN, readable offline.
Times are shown in milliseconds.
"""

from __future__ import annotations

import html
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from bokeh.embed import file_html
from bokeh.layouts import column
from bokeh.models import ColumnDataSource, FactorRange, HoverTool
from bokeh.models.annotations import Whisker
from bokeh.models.widgets import Div
from bokeh.palettes import Category10_10
from bokeh.plotting import figure
from bokeh.resources import INLINE

from impetus.bench.report import SIDE_HEADERS, headline, machine_line, side_row
from impetus.bench.schema import ProfileSummary, RequestResult, RunRecord

WIDTH, HEIGHT = 760, 360
LATENCY_METRICS = {"ttft": "TTFT", "tpot": "TPOT", "itl": "ITL", "e2e": "E2E latency"}


def _color(i: int) -> str:
    return Category10_10[i % len(Category10_10)]


def _runs(records: RunRecord | Iterable[RunRecord], kind: str) -> list[RunRecord]:
    items = [records] if isinstance(records, RunRecord) else list(records)
    return [r for r in items if r.kind == kind]


def _x_concurrency(p: ProfileSummary) -> float:
    """Fixed-concurrency profiles at their level; rate profiles at the concurrency they produced."""
    if p.spec.kind == "synchronous":
        return 1.0
    if p.spec.kind == "concurrent" and p.spec.concurrency:
        return float(p.spec.concurrency)
    return p.mean_concurrency


def _empty(fig: Any, text: str, x: Any = 0.0) -> Any:
    """Say so on a figure with nothing to draw (`x`: a factor for categorical axes)."""
    fig.title.text += f" — {text}"
    fig.text(x=[x], y=[0.0], text=[text], text_align="center", text_color="gray")
    return fig


def _figure(title: str, **axes: Any) -> Any:
    """A line chart's figure, at the charts' common size."""
    return figure(title=title, width=WIDTH, height=HEIGHT, **axes)


def _legend_or_empty(fig: Any, drawn: bool, nothing: str) -> Any:
    """The legend top left (where lines rise to the right, it is clear of them), or, when
    nothing was drawn, `nothing` said on the figure."""
    if not drawn:
        return _empty(fig, nothing)
    fig.legend.location = "top_left"
    return fig


def throughput_vs_concurrency(
    records: RunRecord | Iterable[RunRecord], metric: str = "output_throughput"
) -> Any:
    """Output tokens/s (or `request_throughput`) against concurrency, one line per run."""
    label = {"output_throughput": "output tokens/s", "request_throughput": "requests/s"}.get(
        metric, metric
    )
    fig = _figure(
        f"Throughput vs concurrency ({label})",
        x_axis_label="concurrency (rate profiles: measured mean)",
        y_axis_label=label,
    )
    runs = _runs(records, "serve")
    for i, run in enumerate(runs):
        for j, length in enumerate(sorted({p.spec.prompt_tokens for p in run.profiles})):
            profiles = sorted(
                (p for p in run.profiles if p.spec.prompt_tokens == length), key=_x_concurrency
            )
            data = {
                "x": [_x_concurrency(p) for p in profiles],
                "y": [getattr(p, metric) or 0.0 for p in profiles],
                "profile": [p.spec.name for p in profiles],
                "ttft": [(p.ttft.p50 or 0) * 1000 for p in profiles],
                "failed": [p.failed for p in profiles],
            }
            source = ColumnDataSource(data)
            name = (
                f"{run.label} p{length}"
                if len({p.spec.prompt_tokens for p in run.profiles}) > 1
                else run.label
            )
            color = _color(i * 3 + j)
            fig.line("x", "y", source=source, color=color, line_width=2, legend_label=name)
            fig.scatter("x", "y", source=source, color=color, size=8, legend_label=name)
    fig.add_tools(
        HoverTool(
            tooltips=[
                ("profile", "@profile"),
                ("value", "@y{0,0.0}"),
                ("TTFT p50 ms", "@ttft{0.0}"),
                ("failed", "@failed"),
            ]
        )
    )
    return _legend_or_empty(fig, bool(runs), "no serve runs")


def _values(result: RequestResult, metric: str) -> list[float]:
    if not result.success:
        return []
    if metric == "itl":
        return [v * 1000 for v in result.itl]
    value = result.tpot if metric == "tpot" else getattr(result, metric)
    return [] if value is None else [value * 1000]


def latency_distribution(records: RunRecord | Iterable[RunRecord], metric: str = "ttft") -> Any:
    """Box (p25-p75, median) and whiskers (p5-p95) per profile, with every request as a dot.
    Needs per-request results (a run from the store opened with results, or fresh)."""
    title = LATENCY_METRICS.get(metric, metric)
    groups: list[tuple[str, list[float], int]] = []
    runs = _runs(records, "serve")
    for i, run in enumerate(runs):
        for summary, results in zip(run.profiles, run.results, strict=False):
            values = [v for r in results for v in _values(r, metric)]
            name = f"{run.label}: {summary.spec.name}" if len(runs) > 1 else summary.spec.name
            groups.append((name, values, i))
    fig = figure(
        title=f"{title} distribution (ms)",
        x_range=FactorRange(factors=[g[0] for g in groups] or ["-"]),
        width=max(WIDTH, 90 * len(groups)),
        height=HEIGHT,
        y_axis_label=f"{title} (ms)",
    )
    fig.xaxis.major_label_orientation = 0.6
    if not any(g[1] for g in groups):
        return _empty(fig, "no successful requests with results", x=groups[0][0] if groups else "-")
    rng = np.random.default_rng(0)
    boxes: dict[str, list[Any]] = {k: [] for k in ("x", "q1", "q2", "q3", "lo", "hi", "color", "n")}
    dots: dict[str, list[Any]] = {"x": [], "y": [], "color": []}
    for name, values, i in groups:
        if not values:
            continue
        lo, q1, q2, q3, hi = np.percentile(values, [5, 25, 50, 75, 95])
        for key, value in zip(
            ("x", "q1", "q2", "q3", "lo", "hi", "color", "n"),
            (name, q1, q2, q3, lo, hi, _color(i), len(values)),
            strict=True,
        ):
            boxes[key].append(value)
        jitter = rng.uniform(-0.25, 0.25, size=len(values))
        dots["x"] += [(name, float(j)) for j in jitter]
        dots["y"] += values
        dots["color"] += [_color(i)] * len(values)
    box = ColumnDataSource(boxes)
    fig.vbar(
        x="x",
        width=0.6,
        bottom="q1",
        top="q3",
        source=box,
        fill_color="color",
        fill_alpha=0.25,
        line_color="color",
    )
    fig.vbar(x="x", width=0.6, bottom="q2", top="q2", source=box, line_color="black", line_width=2)
    fig.add_layout(Whisker(base="x", lower="lo", upper="hi", source=box))
    fig.scatter(x="x", y="y", source=ColumnDataSource(dots), color="color", size=3, alpha=0.35)
    fig.add_tools(
        HoverTool(
            tooltips=[("profile", "@x"), ("p50", "@q2{0.00}"), ("p95", "@hi{0.00}"), ("n", "@n")]
        )
    )
    return fig


def ttft_vs_prompt_length(records: RunRecord | Iterable[RunRecord]) -> Any:
    """Each request's TTFT against its prompt tokens (low-concurrency profiles), and the medians."""
    fig = _figure("TTFT vs prompt length", x_axis_label="prompt tokens", y_axis_label="TTFT (ms)")
    runs = _runs(records, "serve")
    for i, run in enumerate(runs):
        pairs = list(zip(run.profiles, run.results, strict=False))
        # TTFT under load mixes queueing into prefill; use the least loaded profiles.
        least = min((_x_concurrency(p) for p, _ in pairs), default=1.0)
        chosen = [(p, rs) for p, rs in pairs if _x_concurrency(p) == least]
        color = _color(i)
        measured = [
            r
            for _, rs in chosen
            for r in rs
            if r.success and r.ttft is not None and r.prompt_tokens
        ]
        xs = [float(r.prompt_tokens or 0) for r in measured]
        ys = [(r.ttft or 0.0) * 1000 for r in measured]
        if xs:
            fig.scatter(xs, ys, color=color, alpha=0.4, size=5, legend_label=run.label)
        medians = sorted(
            (p.prompt_tokens.p50 or p.spec.prompt_tokens, (p.ttft.p50 or 0) * 1000)
            for p, _ in chosen
            if p.ttft.p50 is not None
        )
        if medians:
            fig.line(
                [m[0] for m in medians],
                [m[1] for m in medians],
                color=color,
                line_width=2,
                legend_label=f"{run.label} median",
            )
    return _legend_or_empty(fig, bool(runs), "no serve runs")


def multiturn_ttft(records: RunRecord | Iterable[RunRecord]) -> Any:
    """TTFT p50 per turn: warm (prefix reusable) solid, cold (same length, fresh prefix) dashed."""
    fig = _figure(
        "Multi-turn: TTFT per turn, warm vs cold prompt cache",
        x_axis_label="turn",
        y_axis_label="TTFT p50 (ms)",
    )
    runs = _runs(records, "multiturn")
    for i, run in enumerate(runs):
        color = _color(i)
        turns = [t.turn for t in run.turns]
        warm = [(t.ttft.p50 or np.nan) * 1000 for t in run.turns]
        cold = [(t.cold_ttft.p50 or np.nan) * 1000 for t in run.turns]
        source = ColumnDataSource({
            "turn": turns, "warm": warm, "cold": cold,
            "prompt": [t.prompt_tokens.mean or 0 for t in run.turns],
            "cached": [t.cached_tokens.mean or 0 for t in run.turns],
        })  # fmt: skip
        fig.line(
            "turn",
            "warm",
            source=source,
            color=color,
            line_width=2,
            legend_label=f"{run.label} warm",
        )
        fig.scatter(
            "turn", "warm", source=source, color=color, size=8, legend_label=f"{run.label} warm"
        )
        if any(not np.isnan(c) for c in cold):
            fig.line(
                "turn",
                "cold",
                source=source,
                color=color,
                line_width=2,
                line_dash="dashed",
                legend_label=f"{run.label} cold",
            )
    fig.add_tools(
        HoverTool(
            tooltips=[
                ("turn", "@turn"),
                ("warm ms", "@warm{0.0}"),
                ("cold ms", "@cold{0.0}"),
                ("prompt tok", "@prompt{0}"),
                ("cached tok", "@cached{0}"),
            ]
        )
    )
    return _legend_or_empty(fig, bool(runs), "no multi-turn runs")


def engine_throughput(records: RunRecord | Iterable[RunRecord]) -> Any:
    """Prompt and generation tokens/s per engine side (impetus, mlx_lm), mean ± std."""
    bars: dict[str, list[Any]] = {"x": [], "mean": [], "lo": [], "hi": [], "color": []}
    for run in _runs(records, "engine"):
        for i, side in enumerate(run.engine.sides if run.engine else []):
            for metric, stat in (("prompt", side.prompt_tps), ("generation", side.generation_tps)):
                mean, std = stat.mean or 0.0, stat.std or 0.0
                bars["x"].append((f"{run.id[-4:]} {metric}", side.name))
                bars["mean"].append(mean)
                bars["lo"].append(mean - std)
                bars["hi"].append(mean + std)
                bars["color"].append(_color(i))
    fig = figure(
        title="Engine: tokens/s (mean ± std)",
        x_range=FactorRange(factors=bars["x"] or ["-"]),
        width=max(WIDTH, 70 * len(bars["x"])),
        height=HEIGHT,
        y_axis_label="tokens/s",
    )
    if not bars["x"]:
        return _empty(fig, "no engine runs", x="-")
    source = ColumnDataSource(bars)
    fig.vbar(x="x", top="mean", width=0.8, source=source, fill_color="color", line_color="color")
    fig.add_layout(Whisker(base="x", lower="lo", upper="hi", source=source))
    fig.xaxis.major_label_orientation = 0.6
    fig.add_tools(HoverTool(tooltips=[("", "@x"), ("mean", "@mean{0,0.0}")]))
    return fig


def _history_value(run: RunRecord) -> float | None:
    if run.kind == "serve":
        values = [p.output_throughput for p in run.profiles if p.output_throughput is not None]
        return max(values) if values else None
    if run.kind == "engine" and run.engine and run.engine.sides:
        return run.engine.sides[0].generation_tps.mean
    if run.kind == "multiturn" and run.turns:
        return run.turns[-1].speedup
    return None


def history(records: Iterable[RunRecord], kind: str = "serve") -> Any:
    """One line per (endpoint, model) over time: best output tok/s (serve), generation tok/s
    (engine) or last-turn cold/warm TTFT ratio (multiturn)."""
    label = {
        "serve": "best output tokens/s",
        "engine": "generation tokens/s",
        "multiturn": "last turn cold/warm TTFT",
    }[kind]
    fig = _figure(f"History: {label}", x_axis_type="datetime", y_axis_label=label)
    runs = sorted(_runs(records, kind), key=lambda r: r.created)
    keys = sorted({(r.label, r.model) for r in runs})
    for i, key in enumerate(keys):
        points = [(r, _history_value(r)) for r in runs if (r.label, r.model) == key]
        points = [(r, v) for r, v in points if v is not None]
        if not points:
            continue
        source = ColumnDataSource({
            "t": [r.created for r, _ in points], "y": [v for _, v in points],
            "run": [r.id for r, _ in points], "machine": [machine_line(r.machine) for r, _ in points],
        })  # fmt: skip
        name = f"{key[0]} / {key[1]}"
        fig.line("t", "y", source=source, color=_color(i), line_width=2, legend_label=name)
        fig.scatter("t", "y", source=source, color=_color(i), size=8, legend_label=name)
    fig.add_tools(
        HoverTool(
            tooltips=[("run", "@run"), ("value", "@y{0,0.00}"), ("machine", "@machine")],
            formatters={"@t": "datetime"},
        )
    )
    return _legend_or_empty(fig, bool(keys), f"no {kind} runs")


# --- the HTML report ------------------------------------------------------------------------


def _fmt(value: Any, scale: float = 1.0) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        v = value * scale
        return f"{v:,.0f}" if abs(v) >= 100 else f"{v:.3g}"
    return html.escape(str(value))


def summary_table_html(records: Sequence[RunRecord]) -> str:
    """An HTML table per run: serve profiles, multi-turn turns or engine sides."""
    parts: list[str] = []
    style = 'style="border-collapse:collapse;font:13px sans-serif" border="1" cellpadding="4"'
    for run in records:
        parts.append(
            f"<h3>{html.escape(run.label)} · {html.escape(run.model)} · {run.kind} · "
            f"<code>{run.id}</code></h3><p>{html.escape(machine_line(run.machine))}</p>"
        )
        if run.kind == "serve":
            head = [
                "profile",
                "ok",
                "failed",
                "req/s",
                "out tok/s",
                "TTFT p50",
                "TTFT p99",
                "TPOT p50",
                "ITL p50",
                "E2E p50",
                "E2E p99",
            ]
            rows = [
                [
                    p.spec.name,
                    p.completed,
                    p.failed,
                    _fmt(p.request_throughput),
                    _fmt(p.output_throughput),
                    _fmt(p.ttft.p50, 1000),
                    _fmt(p.ttft.p99, 1000),
                    _fmt(p.tpot.p50, 1000),
                    _fmt(p.itl.p50, 1000),
                    _fmt(p.e2e.p50, 1000),
                    _fmt(p.e2e.p99, 1000),
                ]
                for p in run.profiles
            ]
        elif run.kind == "multiturn":
            head = [
                "turn",
                "prompt tok",
                "cached tok",
                "TTFT p50 warm",
                "TTFT p50 cold",
                "cold/warm",
                "failed",
            ]
            rows = [
                [
                    t.turn,
                    _fmt(t.prompt_tokens.mean),
                    _fmt(t.cached_tokens.mean),
                    _fmt(t.ttft.p50, 1000),
                    _fmt(t.cold_ttft.p50, 1000),
                    _fmt(t.speedup),
                    t.failed,
                ]
                for t in run.turns
            ]
        else:
            head = SIDE_HEADERS
            rows = [
                [_fmt(x) for x in side_row(s)] for s in (run.engine.sides if run.engine else [])
            ]
        cells = "".join(f"<th>{h}</th>" for h in head)
        body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>" for row in rows)
        parts.append(f"<table {style}><tr>{cells}</tr>{body}</table>")
        failures: dict[str, int] = {}
        for prof in run.profiles:
            for reason, n in prof.failure_reasons.items():
                failures[reason] = failures.get(reason, 0) + n
        for part in run.results if run.kind == "multiturn" else []:
            for r in part:
                if not r.success:
                    failures[r.error or "?"] = failures.get(r.error or "?", 0) + 1
        notes = [f"{n} failed: {reason}" for reason, n in failures.items()]
        notes += run.warnings + (run.engine.warnings if run.engine else [])
        if notes:
            parts.append("<ul>" + "".join(f"<li>{html.escape(n)}</li>" for n in notes) + "</ul>")
        parts.append(f"<p><i>{html.escape(headline(run))}</i></p>")
    return "\n".join(parts)


def report_html(path: str | Path, title: str, blocks: Sequence[Any]) -> Path:
    """Write `blocks` (Bokeh figures/layouts, or HTML strings) as one self-contained page."""
    items = [Div(text=b, width=WIDTH + 200) if isinstance(b, str) else b for b in blocks]
    page = file_html(column(*items), resources=INLINE, title=title)
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(page, encoding="utf-8")
    return out
