"""The serving benchmark against real servers: impetus serve, mlx_lm.server, and broken ones."""

from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import Callable
from pathlib import Path

import pytest

from impetus.bench.schema import ProfileSummary, RequestResult, RunRecord
from impetus.bench.serve import MultiTurnConfig, ServeConfig, run_multiturn, run_serve
from impetus.bench.servers import MlxLmServer
from impetus.bench.store import ResultStore
from impetus.client import PrivateServer
from tests.bench.proxy import FlakyProxy


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _check_consistent(result: RequestResult, max_tokens: int | None = None) -> None:
    """What every successful request must satisfy, whoever served it."""
    assert result.success and result.error is None
    assert result.ttft is not None and result.e2e is not None
    assert 0 < result.ttft <= result.e2e <= result.elapsed
    assert result.chunks >= 1 and len(result.itl) == result.chunks - 1
    assert all(gap >= 0 for gap in result.itl)
    # ITL gaps sit between the first and the last text chunk, inside e2e - TTFT
    assert sum(result.itl) <= result.e2e - result.ttft + 1e-6
    assert result.output_tokens is not None and result.output_tokens >= 1
    if max_tokens is not None:
        assert result.output_tokens == max_tokens
    if result.output_tokens > 1:
        tpot = result.tpot
        assert tpot is not None
        assert tpot == pytest.approx((result.e2e - result.ttft) / (result.output_tokens - 1))


def _single_profile(config: ServeConfig) -> tuple[RunRecord, ProfileSummary]:
    """Run a benchmark of one load profile: its record and that profile's summary."""
    record = asyncio.run(run_serve(config))
    (summary,) = record.profiles
    return record, summary


def test_impetus_figures_are_consistent(
    impetus_url: str, model_id: str, tiny_model_dir: Path, store: ResultStore
) -> None:
    seen: list[RequestResult] = []
    progress: list[tuple[int, int]] = []
    profiles: list[str] = []
    config = ServeConfig(
        base_url=impetus_url,
        model=model_id,
        label="impetus",
        tokenizer=str(tiny_model_dir),
        concurrency=[1, 3],
        requests=6,
        prompt_tokens=[32],
        max_tokens=8,
    )
    record = asyncio.run(
        run_serve(
            config,
            on_result=seen.append,
            on_progress=lambda done, total: progress.append((done, total)),
            on_profile=lambda s: profiles.append(s.spec.name),
            store=store,
        )
    )
    assert [p.spec.name for p in record.profiles] == ["c=1 p32/g8", "c=3 p32/g8"] == profiles
    assert len(seen) == 12 and progress[-1] == (12, 12)
    assert record.params["prompt_source"] == "random" and "api_key" not in record.params
    for summary, results in zip(record.profiles, record.results, strict=True):
        assert summary.completed == 6 and summary.failed == 0 and summary.failure_reasons == {}
        for r in results:
            _check_consistent(r, max_tokens=8)  # impetus honours ignore_eos: exactly max_tokens
            assert r.tokens_source == "usage"
            # the prompt is 32 tokens of content plus the chat template's own tokens
            assert r.prompt_tokens is not None and r.prompt_tokens > 32
        assert summary.output_tokens.mean == 8 and summary.short_outputs == 0
        total_out = sum(r.output_tokens or 0 for r in results)
        assert summary.output_throughput == pytest.approx(total_out / summary.duration)
        assert summary.request_throughput == pytest.approx(6 / summary.duration)
        assert summary.ttft.count == summary.e2e.count == 6
        assert summary.ttft.p50 is not None and summary.e2e.p50 is not None
        assert summary.ttft.p50 <= summary.e2e.p50
        assert summary.itl.count == sum(len(r.itl) for r in results)
    # what the endpoint said about itself: impetus' engine status
    assert record.endpoint.get("impetus", {}).get("backend") in ("cpu", "metal", "cuda"), (
        record.endpoint
    )
    assert record.machine["mlx"] and record.machine["cores_logical"] >= 1
    loaded = store.get(record.id)
    assert loaded.summary() == record.summary()
    assert loaded.results == record.results


def test_mlx_lm_server(mlx_server: MlxLmServer, tiny_model_dir: Path) -> None:
    """mlx_lm.server sends `: keepalive` comments and ignores ignore_eos: still measured right."""
    record, summary = _single_profile(
        ServeConfig(
            base_url=mlx_server.openai_base_url,
            model=str(tiny_model_dir.resolve()),
            tokenizer=str(tiny_model_dir),
            concurrency=[2],
            requests=4,
            prompt_tokens=[48],
            max_tokens=8,
        )
    )
    assert summary.completed == 4, summary.failure_reasons
    for r in record.results[0]:
        _check_consistent(r)
        assert r.tokens_source == "usage" and (r.output_tokens or 0) <= 8
    assert not any("not in the endpoint's model list" in w for w in record.warnings)


def test_half_the_requests_fail(
    impetus_server: PrivateServer,
    model_id: str,
    tiny_model_dir: Path,
    proxy: Callable[..., FlakyProxy],
) -> None:
    flaky = proxy(impetus_server.base_url, fail_every=2)
    record, summary = _single_profile(
        ServeConfig(
            base_url=flaky.base_url,
            model=model_id,
            tokenizer=str(tiny_model_dir),
            concurrency=[2],
            requests=10,
            prompt_tokens=[16],
            max_tokens=4,
            warmup=0,
        )
    )
    assert summary.requests == 10 and summary.completed == 5 and summary.failed == 5
    assert summary.failure_reasons == {"HTTP 500: injected failure": 5}
    failed = [r for r in record.results[0] if not r.success]
    # a failure keeps its time in `elapsed` but never enters the latency figures
    assert all(r.ttft is None and r.e2e is None and r.status_code == 500 for r in failed)
    assert summary.ttft.count == summary.e2e.count == 5
    assert summary.request_throughput == pytest.approx(5 / summary.duration)
    assert any("5 of 10 requests failed" in w for w in summary.warnings)


def test_no_usage_counts_with_the_tokenizer(
    impetus_server: PrivateServer,
    model_id: str,
    tiny_model_dir: Path,
    proxy: Callable[..., FlakyProxy],
) -> None:
    plain = proxy(impetus_server.base_url, strip_usage=True)
    common = {
        "base_url": plain.base_url,
        "model": model_id,
        "concurrency": [1],
        "requests": 3,
        "prompt_tokens": [16],
        "max_tokens": 6,
    }
    with_tok = asyncio.run(run_serve(ServeConfig(**common, tokenizer=str(tiny_model_dir))))
    for r in with_tok.results[0]:
        _check_consistent(r)
        assert r.tokens_source == "tokenizer"
    assert with_tok.profiles[0].output_throughput is not None

    # No usage and no tokenizer: token figures are absent and said to be, never guessed.
    without, summary = _single_profile(ServeConfig(**common))
    assert summary.completed == 3
    assert all(r.output_tokens is None and r.tokens_source == "none" for r in without.results[0])
    assert summary.output_throughput is None and summary.tpot.count == 0
    assert any("no token count" in w for w in summary.warnings)
    assert any("synthetic prompt lengths are estimates" in w for w in without.warnings)
    assert without.params["prompt_source"] == "synthetic"


def test_unreachable_endpoint_finishes_and_says_why() -> None:
    config = ServeConfig(
        base_url=f"http://127.0.0.1:{_free_port()}/v1",
        model="anything",
        concurrency=[2],
        sweep=2,
        requests=3,
        prompt_tokens=[16],
        max_tokens=4,
    )
    record = asyncio.run(run_serve(config))
    assert [p.spec.kind for p in record.profiles] == ["concurrent", "synchronous", "throughput"]
    for summary in record.profiles:
        assert summary.completed == 0 and summary.failed == 3
        (reason,) = summary.failure_reasons
        assert reason.startswith("ConnectError")
        assert summary.ttft.count == 0 and summary.request_throughput == 0
    assert any(w.startswith("endpoint unreachable") for w in record.warnings)
    assert any("rate profiles skipped" in w for w in record.warnings)


def test_unknown_model(impetus_url: str) -> None:
    _, summary = _single_profile(
        ServeConfig(
            base_url=impetus_url,
            model="no-such-model",
            concurrency=[1],
            requests=2,
            prompt_tokens=[8],
            max_tokens=2,
        )
    )
    assert summary.failed == 2 and summary.completed == 0
    (reason,) = summary.failure_reasons
    assert reason.startswith("HTTP 404") and "no-such-model" in reason


def test_server_stopped_mid_run(impetus_home: Path, tiny_model_dir: Path) -> None:
    server = PrivateServer(str(tiny_model_dir), extra_args=["--shutdown-grace", "0"])
    server.start()
    stopper: list[threading.Thread] = []

    def on_result(result: RequestResult) -> None:
        if len(stopper) == 0 and result.success:
            # PrivateServer.stop blocks: off the event loop, like an operator's Ctrl-C would be
            stopper.append(threading.Thread(target=server.stop))
            stopper[0].start()

    config = ServeConfig(
        base_url=server.base_url + "v1",
        model=str(tiny_model_dir),
        concurrency=[2],
        requests=40,
        prompt_tokens=[32],
        max_tokens=32,
        tokenizer=str(tiny_model_dir),
        timeout=30,
    )
    try:
        record = asyncio.run(run_serve(config, on_result=on_result))
    finally:
        for t in stopper:
            t.join(30)
        server.stop()
    (summary,) = record.profiles
    results = record.results[0]
    assert len(results) == summary.requests == 40
    assert summary.completed >= 1 and summary.failed >= 10
    assert summary.completed + summary.failed == 40
    assert sum(summary.failure_reasons.values()) == summary.failed
    for r in results:
        if r.success:
            _check_consistent(r, max_tokens=32)
        else:
            assert r.error and r.ttft is None and r.e2e is None
    assert summary.ttft.count == summary.completed


def test_sweep_with_poisson_arrivals(impetus_url: str, model_id: str, tiny_model_dir: Path) -> None:
    config = ServeConfig(
        base_url=impetus_url,
        model=model_id,
        tokenizer=str(tiny_model_dir),
        sweep=2,
        poisson=True,
        requests=6,
        prompt_tokens=[16],
        # enough decode steps that six batched streams clearly outrun one at a time even on a
        # busy machine (with 4 tokens, a noisy run once measured no gain, and so no rates)
        max_tokens=16,
    )
    assert config.concurrency == []  # a sweep alone: no default concurrency levels added
    record = asyncio.run(run_serve(config))
    kinds = [p.spec.kind for p in record.profiles]
    assert kinds == ["synchronous", "throughput", "rate", "rate"]
    sync, peak, *rates = record.profiles
    assert all(p.failed == 0 for p in record.profiles)
    assert sync.mean_concurrency <= 1.0 + 1e-6
    assert peak.request_throughput > sync.request_throughput
    targets = [p.spec.rate for p in rates]
    assert all(t is not None for t in targets)
    assert sync.request_throughput < targets[0] < targets[1] < peak.request_throughput  # type: ignore[operator]
    assert all(p.spec.poisson for p in rates)
    # open loop: each rate request went out at its scheduled time (the client kept up)
    for part in record.results[2:]:
        assert all(r.sent - r.scheduled < 0.5 for r in part)


def test_multiturn_shows_prompt_cache_reuse(
    impetus_url: str, model_id: str, tiny_model_dir: Path
) -> None:
    config = MultiTurnConfig(
        base_url=impetus_url,
        model=model_id,
        tokenizer=str(tiny_model_dir),
        conversations=2,
        turns=3,
        first_prompt_tokens=96,
        turn_prompt_tokens=16,
        max_tokens=6,
    )
    record: RunRecord = asyncio.run(run_multiturn(config))
    results = record.results[0]
    assert len(results) == 2 * 3 * 2 and all(r.success for r in results)
    for r in results:
        _check_consistent(r, max_tokens=6)
    assert [t.turn for t in record.turns] == [0, 1, 2]
    prompts = [t.prompt_tokens.mean or 0 for t in record.turns]
    assert prompts[0] < prompts[1] < prompts[2]  # the conversation grows
    for turn in record.turns[1:]:
        warm = [r for r in results if r.turn == turn.turn and not r.cold]
        cold = [r for r in results if r.turn == turn.turn and r.cold]
        # the warm request reuses at least the whole first turn; its cold twin only the template
        assert all((w.cached_tokens or 0) >= 96 for w in warm)
        assert all(
            (w.cached_tokens or 0) > (c.cached_tokens or 0) for w, c in zip(warm, cold, strict=True)
        )
        # same length: the cold twin differs only in the content of its first message
        assert all(
            abs((w.prompt_tokens or 0) - (c.prompt_tokens or 0)) <= 4
            for w, c in zip(warm, cold, strict=True)
        )
        assert turn.speedup is not None
