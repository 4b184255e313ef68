"""Prometheus metrics, named after vLLM's (`vllm:time_to_first_token_seconds` -> `impetus:...`).

One private `CollectorRegistry` per app, so that two apps in one process (tests, a Jupyter server
and a script) never share or clash. Latencies come from the engine's own timings on each `done`
event (engine clock, no HTTP overhead), fed through `AsyncEngine.add_listener`; the gauges of
running / waiting requests and the engine restart count are read from `EngineStatus` at scrape time.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from impetus.protocol import Done, EngineStatus, Event, Start

log = logging.getLogger(__name__)

# vLLM's buckets (seconds); TTFT and inter-token latency share their upper end
_LATENCY_TAIL = (0.75, 1.0, 2.5, 5.0, 7.5, 10.0, 20.0, 40.0, 80.0)
TTFT_BUCKETS = (0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, *_LATENCY_TAIL)
ITL_BUCKETS = (0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, *_LATENCY_TAIL)
E2E_BUCKETS = (
    *(0.3, 0.5, 0.8, 1.0, 1.5, 2.0, 2.5, 5.0, 10.0, 15.0, 20.0),
    *(30.0, 40.0, 50.0, 60.0, 120.0, 240.0, 480.0, 960.0),
)

PREFIX = "impetus:"
# engine finish reasons -> vLLM's finished_reason label values
FINISHED = {
    "stop": "stop",
    "length": "length",
    "tool_calls": "stop",
    "cancelled": "abort",
    "error": "error",
}


class _StatusCollector(Collector):
    """Values that live in the engine: read from the last `EngineStatus` at scrape time."""

    def __init__(self) -> None:
        self.status: EngineStatus | None = None

    def collect(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        st = self.status
        running = GaugeMetricFamily(
            PREFIX + "num_requests_running", "Requests in the running batch."
        )
        waiting = GaugeMetricFamily(
            PREFIX + "num_requests_waiting", "Requests waiting to be admitted."
        )
        restarts = CounterMetricFamily(
            PREFIX + "engine_restarts", "Times the engine process was restarted."
        )
        memory = GaugeMetricFamily(PREFIX + "memory_used_bytes", "MLX memory in use by the engine.")
        loaded = GaugeMetricFamily(PREFIX + "models_loaded", "Models loaded in the engine.")
        up = GaugeMetricFamily(PREFIX + "engine_ready", "1 when the engine is ready.")
        # the accelerator, labelled with what it is and how it was read (NVML, psutil...)
        accel_labels = ["kind", "device", "source"]
        accel: dict[str, GaugeMetricFamily] = {
            "utilization_percent": GaugeMetricFamily(
                PREFIX + "accelerator_utilization_percent",
                "Accelerator utilisation (GPU busy time; on CPU, the engine process's CPU).",
                labels=accel_labels,
            ),
            "memory_used_bytes": GaugeMetricFamily(
                PREFIX + "accelerator_memory_used_bytes",
                "Accelerator memory in use, all processes.",
                labels=accel_labels,
            ),
            "memory_total_bytes": GaugeMetricFamily(
                PREFIX + "accelerator_memory_total_bytes",
                "Accelerator memory in all.",
                labels=accel_labels,
            ),
            "process_memory_bytes": GaugeMetricFamily(
                PREFIX + "accelerator_engine_memory_bytes",
                "Accelerator memory held by the engine process.",
                labels=accel_labels,
            ),
            "power_watts": GaugeMetricFamily(
                PREFIX + "accelerator_power_watts", "Accelerator power draw.", labels=accel_labels
            ),
            "temperature_celsius": GaugeMetricFamily(
                PREFIX + "accelerator_temperature_celsius",
                "Accelerator temperature.",
                labels=accel_labels,
            ),
        }
        cache = GaugeMetricFamily(
            PREFIX + "prompt_cache_bytes", "Bytes of KV cache kept for prompt reuse."
        )
        if st is not None:
            running.add_metric([], st.stats.running)
            waiting.add_metric([], st.stats.waiting)
            restarts.add_metric([], st.restarts)
            memory.add_metric([], st.memory_used)
            loaded.add_metric([], len(st.models))
            up.add_metric([], 1.0 if st.state == "ready" else 0.0)
            cache.add_metric([], st.stats.prompt_cache_bytes)
            acc = st.accelerator
            if acc is not None:
                values = [acc.kind, acc.name, acc.source]
                for field, family in accel.items():
                    value = getattr(acc, field)
                    if value is not None:  # a field this backend cannot read is left out
                        family.add_metric(values, float(value))
        yield from (running, waiting, restarts, memory, loaded, up, cache)
        yield from accel.values()


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        labels = ["model_name"]
        self.ttft = Histogram(
            PREFIX + "time_to_first_token_seconds",
            "Time to first token.",
            labels,
            buckets=TTFT_BUCKETS,
            registry=r,
        )
        self.itl = Histogram(
            PREFIX + "inter_token_latency_seconds",
            "Time between successive token deltas.",
            labels,
            buckets=ITL_BUCKETS,
            registry=r,
        )
        self.e2e = Histogram(
            PREFIX + "e2e_request_latency_seconds",
            "Request latency, arrival to last token.",
            labels,
            buckets=E2E_BUCKETS,
            registry=r,
        )
        self.queue = Histogram(
            PREFIX + "request_queue_time_seconds",
            "Time waiting before admission to the batch.",
            labels,
            buckets=E2E_BUCKETS,
            registry=r,
        )
        self.prefill = Histogram(
            PREFIX + "request_prefill_time_seconds",
            "Time processing the prompt.",
            labels,
            buckets=E2E_BUCKETS,
            registry=r,
        )
        self.prompt_tokens = Counter(
            PREFIX + "prompt_tokens", "Prompt tokens processed.", labels, registry=r
        )
        self.generation_tokens = Counter(
            PREFIX + "generation_tokens", "Tokens generated.", labels, registry=r
        )
        self.cache_queries = Counter(
            PREFIX + "prefix_cache_queries",
            "Prompt tokens looked up in the prompt cache.",
            labels,
            registry=r,
        )
        self.cache_hits = Counter(
            PREFIX + "prefix_cache_hits",
            "Prompt tokens found in the prompt cache.",
            labels,
            registry=r,
        )
        self.success = Counter(
            PREFIX + "request_success",
            "Finished sequences by finish reason.",
            labels + ["finished_reason"],
            registry=r,
        )
        self.aborted = Counter(
            PREFIX + "request_aborted",
            "Requests the api cancelled, by reason.",
            ["reason"],
            registry=r,
        )
        self.http_errors = Counter(
            PREFIX + "http_errors", "Error responses by status.", ["status"], registry=r
        )
        self.http_requests = Counter(
            PREFIX + "http_requests",
            "HTTP requests answered, by endpoint (the route pattern), method and status.",
            ["endpoint", "method", "status"],
            registry=r,
        )
        self.http_latency = Histogram(
            PREFIX + "http_request_duration_seconds",
            "HTTP request latency, arrival to the last byte (a whole stream), by endpoint.",
            ["endpoint", "method"],
            buckets=E2E_BUCKETS,
            registry=r,
        )
        self.http_in_flight = Gauge(
            PREFIX + "http_requests_in_flight",
            "Generation requests being served over HTTP.",
            registry=r,
        )
        self.http_handlers = Gauge(
            PREFIX + "http_handlers_open",
            "HTTP request handlers running (reading a body, waiting or answering); one that "
            "never ends is a leak.",
            registry=r,
        )
        # with http_handlers_open, a leak detector: 0 once no request is open
        self.open_generations = Gauge(
            PREFIX + "engine_open_generations",
            "Generations the api still awaits from the engine.",
            registry=r,
        )
        self._status = _StatusCollector()
        r.register(self._status)

    def observe_http(self, endpoint: str, method: str, status: int, seconds: float) -> None:
        self.http_requests.labels(endpoint, method, str(status)).inc()
        self.http_latency.labels(endpoint, method).observe(seconds)

    def set_status(self, status: EngineStatus | None) -> None:
        self._status.status = status

    def on_event(self, gen: Any, event: Event) -> None:
        """Engine listener, called with the `Generation` and each of its events. Never raises:
        it runs inside the engine client's reader task."""
        try:
            self._observe(gen.model or gen.request.model, event)
        except Exception:  # pragma: no cover - a metrics bug must not break serving
            log.exception("metrics listener failed")

    def _observe(self, model: str, event: Event) -> None:
        if isinstance(event, Start):
            self.prompt_tokens.labels(model).inc(event.prompt_tokens)
            self.cache_queries.labels(model).inc(event.prompt_tokens)
            self.cache_hits.labels(model).inc(event.cached_tokens)
        elif isinstance(event, Done):
            self.generation_tokens.labels(model).inc(event.usage.completion_tokens)
            self.success.labels(model, FINISHED.get(event.finish_reason, "stop")).inc()
            t = event.timings
            if event.finish_reason != "cancelled":
                self.ttft.labels(model).observe(t.ttft)
                self.e2e.labels(model).observe(t.e2e)
                self.queue.labels(model).observe(t.queue)
                self.prefill.labels(model).observe(t.prefill)
                for gap in t.itl:
                    self.itl.labels(model).observe(gap)

    def render(self) -> bytes:
        return generate_latest(self.registry)
