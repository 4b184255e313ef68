"""`Dashboard`: live charts of the engine, from `admin/status` and `/metrics`, once a second.

Rates (tokens/s, TTFT, cache hits) are differences between two polls, so they show what happened
in the last interval rather than a lifetime average. Polling runs on the widgets' own event loop:
the kernel stays free, and the charts keep moving while a cell runs.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import math
import time
from datetime import datetime
from typing import Any

import ipywidgets as w
import psutil
from bokeh.layouts import gridplot
from bokeh.models import ColumnDataSource, Range1d
from bokeh.plotting import figure

from impetus.api.schemas import AdminStatus
from impetus.client import ImpetusError, parse_metrics
from impetus.protocol import EngineStatus
from impetus.widgets import _loop
from impetus.widgets._base import Charts, ClientLike, Connection, fmt_bytes, short_error

NAN = float("nan")
GB = 1 << 30

# (figure title, y label, [(column, legend, colour)])
CHARTS: list[tuple[str, str, list[tuple[str, str, str]]]] = [
    (
        "Tokens per second",
        "tok/s",
        [("gen_tps", "generated", "#1f77b4"), ("prompt_tps", "prompt", "#aec7e8")],
    ),
    ("Time to first token", "ms", [("ttft_ms", "mean in interval", "#d62728")]),
    (
        "Requests",
        "requests",
        [("running", "running", "#2ca02c"), ("waiting", "waiting", "#ff7f0e")],
    ),
    (
        "Prompt-cache hit rate",
        "%",
        [("cache_hit_pct", "requests", "#9467bd"), ("cache_token_pct", "tokens", "#c5b0d5")],
    ),
    (
        "Memory",
        "GB",
        [
            ("mem_used_gb", "MLX in use", "#8c564b"),
            ("rss_gb", "engine RSS", "#c49c94"),
            ("budget_gb", "budget", "#7f7f7f"),
            ("accel_mem_gb", "GPU memory, all processes", "#e377c2"),
            ("accel_engine_gb", "GPU memory, engine", "#f7b6d2"),
        ],
    ),
    (
        # retitled from the first status: what the engine reports it measured
        "Accelerator",
        "%",
        [("accel_pct", "utilisation", "#17becf"), ("system_cpu", "system CPU", "#9edae5")],
    ),
]
ACCEL_CHART = len(CHARTS) - 1
COLUMNS = ["t"] + [col for _, _, lines in CHARTS for col, _, _ in lines]


def _metric(metrics: dict[str, float], suffix: str) -> float | None:
    """Sum of the samples whose name ends with `suffix` (the prefix is `impetus:`)."""
    values = [v for k, v in metrics.items() if k.endswith(suffix)]
    return sum(values) if values else None


class Sampler:
    """Turns successive (status, metrics) polls into one chart row each."""

    def __init__(self) -> None:
        self.prev: dict[str, Any] | None = None
        self.prev_t: float | None = None
        self._proc: psutil.Process | None = None

    def cpu(self, pid: int | None, local: bool) -> tuple[float, float]:
        """Engine process CPU (% of the whole machine) and system CPU; NaN when not measurable."""
        if not local:
            return NAN, NAN
        system = psutil.cpu_percent(None)
        engine = NAN
        if pid:
            try:
                if self._proc is None or self._proc.pid != pid:
                    self._proc = psutil.Process(pid)
                    self._proc.cpu_percent(None)  # the first reading primes the counter
                engine = self._proc.cpu_percent(None) / (psutil.cpu_count() or 1)
            except psutil.Error:
                self._proc = None
        return engine, system

    def row(
        self,
        status: AdminStatus,
        metrics: dict[str, float],
        local: bool,
        *,
        now: float | None = None,
        at: datetime | None = None,
    ) -> dict[str, Any]:
        """One chart row. `now`: seconds on any monotonic clock for the rates (None: this
        machine's `time.monotonic()`); `at`: the row's time (None: `datetime.now()`)."""
        if now is None:
            now = time.monotonic()
        stats = status.stats
        cur = {
            "gen": float(stats.generation_tokens_total),
            "prompt": float(stats.prompt_tokens_total),
            "ttft_sum": _metric(metrics, "time_to_first_token_seconds_sum") or 0.0,
            "ttft_count": _metric(metrics, "time_to_first_token_seconds_count") or 0.0,
        }
        gen_tps = prompt_tps = ttft_ms = NAN
        if self.prev is not None and self.prev_t is not None:
            dt = max(now - self.prev_t, 1e-6)
            # a restarted engine starts its counters again: clamp to zero instead of a negative dip
            gen_tps = max(cur["gen"] - self.prev["gen"], 0.0) / dt
            prompt_tps = max(cur["prompt"] - self.prev["prompt"], 0.0) / dt
            dn = cur["ttft_count"] - self.prev["ttft_count"]
            if dn > 0:
                ttft_ms = 1000.0 * (cur["ttft_sum"] - self.prev["ttft_sum"]) / dn
        self.prev, self.prev_t = cur, now

        queries = stats.prompt_cache_queries
        qtokens = stats.prompt_cache_query_tokens
        engine_cpu, system_cpu = self.cpu(status.pid, local)
        acc = status.accelerator
        accel_pct, accel_mem, accel_engine = engine_cpu, NAN, NAN
        if acc is not None:  # the engine's own reading (NVML on NVIDIA; its CPU on a CPU backend)
            accel_pct = _num(acc.utilization_percent)
            if acc.kind != "cpu":  # on CPU the device memory is RAM: RSS says it already
                accel_mem = _num(acc.memory_used_bytes) / GB
                accel_engine = _num(acc.process_memory_bytes) / GB
        return {
            "t": datetime.now() if at is None else at,
            "gen_tps": gen_tps,
            "prompt_tps": prompt_tps,
            "ttft_ms": ttft_ms,
            "running": float(stats.running),
            "waiting": float(stats.waiting),
            "cache_hit_pct": 100.0 * stats.prompt_cache_hits / queries if queries else NAN,
            "cache_token_pct": 100.0 * stats.prompt_cache_hit_tokens / qtokens if qtokens else NAN,
            "mem_used_gb": status.memory_used / GB,
            "rss_gb": status.process_rss / GB,
            "budget_gb": status.memory_budget / GB,
            "accel_mem_gb": accel_mem,
            "accel_engine_gb": accel_engine,
            "accel_pct": accel_pct,
            "system_cpu": system_cpu,
        }


def _num(value: float | None) -> float:
    return NAN if value is None else float(value)


def accelerator_title(status: EngineStatus) -> str:
    """The utilisation chart's title: what the numbers are, never a CPU figure called GPU."""
    acc = status.accelerator
    if acc is None:
        return "Engine CPU (measured by this kernel; the server reports no accelerator)"
    if acc.kind == "cpu":
        return f"CPU: {acc.what}"
    return f"GPU utilisation: {acc.name} ({acc.what})"


def dashboard_figures(source: ColumnDataSource) -> list[Any]:
    """The dashboard's charts over `source` (columns: COLUMNS), on one time axis: utilisation,
    memory and tokens/s line up. Used live by `Dashboard` and on recorded polls by
    benchmarks/render_dashboard.py."""
    figures = [_figure(source, *spec) for spec in CHARTS]
    for fig in figures[1:]:
        fig.x_range = figures[0].x_range
    return figures


def _figure(
    source: ColumnDataSource, title: str, unit: str, lines: list[tuple[str, str, str]]
) -> Any:
    fig = figure(title=title, x_axis_type="datetime", y_axis_label=unit, tools="")
    fig.y_range.start = 0  # type: ignore[attr-defined]
    if unit == "%":
        fig.y_range = Range1d(start=0, end=100)
    for col, legend, colour in lines:
        fig.line("t", col, source=source, legend_label=legend, color=colour, line_width=2)
        if col == "ttft_ms":  # sparse: one value per interval with requests
            fig.scatter("t", col, source=source, color=colour, size=5)
    fig.legend.location = "top_left"
    fig.legend.label_text_font_size = "8pt"
    fig.legend.background_fill_alpha = 0.5
    return fig


class Dashboard(w.VBox):
    """Live engine charts: `iw.Dashboard()`; `interval` seconds between refreshes."""

    def __init__(
        self, client: ClientLike = None, *, interval: float = 1.0, history: int = 300
    ) -> None:
        self._conn = Connection(client)
        self.interval = interval
        self.history = history
        self.sampler = Sampler()
        self.titled = False
        self.latest: dict[str, Any] = {}  # the last row added to the charts
        self.last_status: AdminStatus | None = None
        self.source = ColumnDataSource({c: [] for c in COLUMNS})
        self.figures = dashboard_figures(self.source)
        self.charts = Charts(
            gridplot(self.figures, ncols=2, width=430, height=190, toolbar_location=None)
        )
        self.summary = w.HTML("<i>connecting…</i>")
        self.error = w.HTML("")
        super().__init__([self.summary, self.error, self.charts])
        self._stopped = False
        self._future: concurrent.futures.Future[None] | None = _loop.submit(self._run())

    # ---------------------------------------------------------------- public
    def refresh(self, timeout: float = 30.0) -> dict[str, Any]:
        """Poll once now (blocking) and return the row added to the charts."""
        _loop.submit(self._tick()).result(timeout)
        return self.latest

    def stop(self) -> None:
        self._stopped = True
        if self._future is not None:
            self._future.cancel()
            self._future = None

    def close(self) -> None:
        self.stop()
        self.charts.close()
        super().close()

    # ---------------------------------------------------------------- polling
    async def _run(self) -> None:
        while not self._stopped:
            started = time.monotonic()
            await self._tick()
            await asyncio.sleep(max(0.05, self.interval - (time.monotonic() - started)))

    async def _tick(self) -> None:
        try:
            client = await self._conn.get()
            status, metrics_text = await asyncio.wait_for(
                asyncio.gather(client.status(), client.metrics()),
                timeout=max(5.0, self.interval * 5),
            )
        except (ImpetusError, TimeoutError, OSError) as e:
            self.error.value = _error_html(f"engine unreachable, retrying: {short_error(e)}")
            return
        except Exception as e:  # a server bug must not kill the loop
            self.error.value = _error_html(short_error(e))
            return
        try:
            metrics = parse_metrics(metrics_text)
        except ValueError:
            metrics = {}
        row = self.sampler.row(status, metrics, client.endpoint.is_local)
        self.latest, self.last_status = row, status
        self.source.stream({k: [v] for k, v in row.items()}, rollover=self.history)
        title = accelerator_title(status)
        if self.figures[ACCEL_CHART].title.text != title:
            self.figures[ACCEL_CHART].title.text = title
        self.summary.value = _summary_html(status, row)
        state, last_error = status.state, status.last_error
        if state not in ("ready", "starting") or (state != "ready" and last_error):
            self.error.value = _error_html(
                f"engine {state}" + (f": {last_error}" if last_error else "")
            )
        else:
            self.error.value = ""


def _error_html(text: str) -> str:
    from html import escape

    return f'<div style="color:#b00020;background:#fde7ea;padding:4px 8px;border-radius:4px">{escape(text)}</div>'


def _summary_html(status: AdminStatus, row: dict[str, Any]) -> str:
    from html import escape

    models = (
        ", ".join(
            f"{escape(m.id)} ({escape(m.dtype)}, {fmt_bytes(m.memory_bytes)})"
            for m in status.models
        )
        or "none"
    )
    acc = status.accelerator
    util = row.get("accel_pct", NAN)
    util_label = "GPU" if acc is not None and acc.kind in ("cuda", "metal") else "engine CPU"
    extras = []
    if acc is not None and acc.power_watts is not None:
        extras.append(f"{acc.power_watts:.0f} W")
    if acc is not None and acc.temperature_celsius is not None:
        extras.append(f"{acc.temperature_celsius:.0f} °C")
    if acc is not None and acc.kind == "cuda" and acc.memory_total_bytes:
        extras.append(
            f"GPU memory {fmt_bytes(acc.memory_used_bytes)} / {fmt_bytes(acc.memory_total_bytes)}"
        )
    parts = [
        f"<b>{escape(status.state)}</b>",
        f"{escape(status.backend)} {escape(status.device)}".strip(),
        f"BLAS {escape(status.blas or 'reference')}",
        f"memory {fmt_bytes(status.memory_used)} / {fmt_bytes(status.memory_budget)}"
        + (f" (peak {fmt_bytes(status.peak_memory)})" if status.peak_memory else ""),
        f"{util_label} {util:.0f}%" if not math.isnan(util) else "",
        *extras,
        f"requests {status.stats.requests_total}",
        f"restarts {status.restarts}",
    ]
    line = " · ".join(p for p in parts if p)
    endpoint = escape(status.endpoint)
    return (
        f"<div style='font-size:0.9em'>{line}<br>models: {models}"
        + (f"<br>OpenAI endpoint: <code>{endpoint}</code>" if endpoint else "")
        + f"<br><span style='color:#888'>engine pid {status.pid} · "
        f"refreshed {datetime.now():%H:%M:%S}</span></div>"
    )
