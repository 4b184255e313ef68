"""Load profiles: who sends the next request, and when.

* `concurrent` / `synchronous` / `throughput`: a closed loop of C clients, each sending its next
  request when the previous one ends (synchronous: C = 1; throughput: every request at once).
* `rate`: open loop, requests arrive at R per second, evenly spaced or Poisson (exponential gaps),
  whatever the endpoint is doing; `max_concurrency` optionally caps those in flight. When the cap
  (or the client) holds a request back, `sent - scheduled` shows it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable

import numpy as np

from impetus.bench.schema import ProfileSpec, RequestResult

log = logging.getLogger("impetus.bench")

SendFn = Callable[[int], Awaitable[RequestResult]]
ResultCallback = Callable[[RequestResult], None]


def arrival_times(spec: ProfileSpec, seed: int = 0) -> list[float]:
    """Send offsets (seconds after the start) of a rate profile."""
    assert spec.rate is not None
    if spec.poisson:
        gaps = np.random.default_rng(seed).exponential(1.0 / spec.rate, size=spec.requests)
        gaps[0] = 0.0
        return np.cumsum(gaps).tolist()
    return [i / spec.rate for i in range(spec.requests)]


def concurrency_of(spec: ProfileSpec) -> int:
    if spec.kind == "synchronous":
        return 1
    if spec.kind == "throughput":
        return min(spec.requests, spec.max_concurrency or spec.requests)
    if spec.kind == "concurrent":
        return spec.concurrency or 1
    return spec.max_concurrency or spec.requests


async def execute(
    spec: ProfileSpec, send: SendFn, *, seed: int = 0, on_result: ResultCallback | None = None
) -> list[RequestResult]:
    """Run one profile to the end; every request yields a result, failed or not."""
    t0 = time.perf_counter()
    results: list[RequestResult] = []

    async def one(index: int, scheduled: float) -> None:
        try:
            result = await send(index)
        except Exception as exc:  # a bug in a send function must still count as a failure
            log.exception("request %d raised", index)
            now = time.perf_counter()
            result = RequestResult(
                index=index, success=False, error=f"client error: {exc!r}", sent=now
            )
        result.scheduled = scheduled
        result.sent -= t0
        results.append(result)
        if on_result is not None:
            on_result(result)

    if spec.kind == "rate":
        times = arrival_times(spec, seed)
        limit = asyncio.Semaphore(concurrency_of(spec))

        async def arrive(index: int, at: float) -> None:
            async with limit:
                await one(index, at)

        tasks = []
        for index, at in enumerate(times):
            delay = t0 + at - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(arrive(index, at)))
        await asyncio.gather(*tasks)
    else:
        pending = iter(range(spec.requests))

        async def client() -> None:
            for index in pending:  # a shared iterator: each index goes to exactly one client
                await one(index, time.perf_counter() - t0)

        await asyncio.gather(*(client() for _ in range(concurrency_of(spec))))
    results.sort(key=lambda r: r.index)
    return results


def sweep_rates(sync_rate: float, max_rate: float, count: int) -> list[float]:
    """GuideLLM's sweep: `count` constant rates evenly spaced strictly between the synchronous
    request rate and the max-throughput request rate."""
    if count <= 0 or max_rate <= sync_rate or sync_rate <= 0:
        return []
    return np.linspace(sync_rate, max_rate, count + 2)[1:-1].tolist()
