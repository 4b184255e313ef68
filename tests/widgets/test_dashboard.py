"""Dashboard and BenchChart, headless: real polls of a real server, real benchmark records."""

from __future__ import annotations

import math

import pytest

from impetus.client import Endpoint, ImpetusClient, PrivateServer, parse_metrics
from impetus.protocol import AcceleratorInfo, EngineStatus
from impetus.widgets import BenchChart, Dashboard
from impetus.widgets.dashboard import ACCEL_CHART, accelerator_title
from tests.widgets.helpers import Recorder, wait_for


def test_dashboard_charts_what_the_engine_does(endpoint: Endpoint, client: ImpetusClient) -> None:
    dash = Dashboard(client=endpoint, interval=0.2)
    try:
        rec = Recorder(dash.charts)
        wait_for(lambda: len(dash.source.data["t"]) >= 2, timeout=30)
        client.chat([{"role": "user", "content": "Hello"}], max_tokens=32, temperature=0.0)
        # some interval saw the tokens and the first-token time of that request
        wait_for(
            lambda: any(v > 0 for v in dash.source.data["gen_tps"] if not math.isnan(v)), timeout=10
        )
        wait_for(lambda: any(not math.isnan(v) for v in dash.source.data["ttft_ms"]), timeout=10)
        row = dash.refresh()
        assert row["budget_gb"] > 0 and row["mem_used_gb"] > 0
        assert 0 <= row["system_cpu"] <= 100  # loopback server: CPU measured here
        assert "ready" in dash.summary.value and dash.error.value == ""
        # MLX's peak memory since the engine started, beside what is in use now
        assert dash.last_status is not None and dash.last_status.peak_memory > 0
        assert "(peak " in dash.summary.value
        # the chart really streams to the front end (Bokeh PATCH-DOC messages over the comm)
        assert any(m.get("msg") == "patch" for m in rec.custom())
    finally:
        dash.close()
    assert dash._future is None


def test_accelerator_is_reported_for_what_it_is(endpoint: Endpoint, client: ImpetusClient) -> None:
    """On a CPU backend the engine reports its own CPU, labelled as such: in admin/status, in
    /metrics and in the dashboard's chart title; no GPU figure is invented."""
    status = client.status()
    acc = status.accelerator
    assert acc is not None
    assert acc.kind == "cpu" and acc.source == "psutil"
    assert acc.utilization_percent is not None and 0 <= acc.utilization_percent <= 100
    assert "engine process CPU" in acc.what
    assert acc.power_watts is None and acc.temperature_celsius is None
    text = client.metrics()
    util = [
        ln for ln in text.splitlines() if ln.startswith("impetus:accelerator_utilization_percent{")
    ]
    assert len(util) == 1 and 'kind="cpu"' in util[0] and 'source="psutil"' in util[0]
    assert "impetus:accelerator_power_watts{" not in text  # not readable here: left out, not 0
    assert parse_metrics(text)["impetus:accelerator_memory_total_bytes"] > 0

    dash = Dashboard(client=endpoint, interval=0.2)
    try:
        wait_for(lambda: len(dash.source.data["t"]) >= 1, timeout=30)
        title = dash.figures[ACCEL_CHART].title.text
        assert title.startswith("CPU: engine process CPU") and "GPU" not in title
        row = dash.latest
        assert math.isnan(row["accel_mem_gb"]) and math.isnan(row["accel_engine_gb"])
        assert "engine CPU" in dash.summary.value and "GPU" not in dash.summary.value
        # every chart shares one time axis
        assert all(f.x_range is dash.figures[0].x_range for f in dash.figures)
    finally:
        dash.close()


def test_accelerator_titles() -> None:
    nvml = AcceleratorInfo(kind="cuda", source="nvml", name="NVIDIA H100 80GB HBM3",
                           what="GPU busy time (NVML, last sample period)")  # fmt: skip
    assert accelerator_title(EngineStatus(state="ready", accelerator=nvml)) == (
        "GPU utilisation: NVIDIA H100 80GB HBM3 (GPU busy time (NVML, last sample period))"
    )
    cpu = AcceleratorInfo(kind="cpu", source="psutil", name="", what="engine process CPU")
    assert accelerator_title(EngineStatus(state="ready", accelerator=cpu)) == (
        "CPU: engine process CPU"
    )
    assert accelerator_title(EngineStatus(state="ready")).startswith(
        "Engine CPU (measured by this kernel"
    )


def test_dashboard_shows_a_dead_server_in_place() -> None:
    port = PrivateServer(None).port
    dash = Dashboard(client=Endpoint(f"http://127.0.0.1:{port}/"), interval=0.2)
    try:
        wait_for(lambda: "unreachable" in dash.error.value, timeout=15)
        assert len(dash.source.data["t"]) == 0
    finally:
        dash.close()


def test_bench_chart_takes_the_runner_callbacks() -> None:
    from impetus.bench.schema import ProfileSpec, ProfileSummary, RequestResult, Stats

    chart = BenchChart()
    cb = chart.callbacks()
    ok = RequestResult(
        index=0, success=True, sent=10.0, elapsed=1.0, ttft=0.2, e2e=1.0, output_tokens=9
    )
    bad = RequestResult(index=1, success=False, error="HTTP 500: boom", sent=10.5, elapsed=0.1)
    cb["on_result"](ok)
    cb["on_result"](bad)
    cb["on_progress"](2, 4)
    spec = ProfileSpec(kind="concurrent", requests=2, concurrency=2, prompt_tokens=16, max_tokens=8)
    summary = ProfileSummary(
        spec=spec,
        requests=2,
        completed=1,
        failed=1,
        duration=1.1,
        request_throughput=0.9,
        output_throughput=8.2,
        total_token_throughput=20.0,
        mean_concurrency=1.5,
        ttft=Stats(count=1, p50=0.2),
        tpot=Stats(count=1, p50=0.1),
        e2e=Stats(count=1, p50=1.0),
    )
    cb["on_profile"](summary)
    assert chart.requests.data["ttft_ms"] == [200.0]
    assert chart.requests.data["tps"] == [10.0]  # 8 tokens after the first in 0.8 s
    assert chart.failures.data["t"] == [pytest.approx(0.6)]
    assert (chart.progress.value, chart.progress.max) == (2, 4)
    assert chart.profile_source.data["output_tps"] == [8.2]
    assert "c=2 p16/g8" in chart.table.value and "200 ms" in chart.table.value
