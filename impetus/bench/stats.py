"""From per-request results to the figures a benchmark reports."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence

import numpy as np

from impetus.bench.schema import ProfileSpec, ProfileSummary, RequestResult, Stats, TurnSummary


def stats(values: Iterable[float | int | None]) -> Stats:
    """mean / std / p50 / p90 / p99 of the values that are present (None: not measured)."""
    data = np.asarray([v for v in values if v is not None], dtype=np.float64)
    if data.size == 0:
        return Stats()
    p50, p90, p99 = np.percentile(data, [50, 90, 99])
    return Stats(
        count=int(data.size),
        mean=float(data.mean()),
        std=float(data.std(ddof=1)) if data.size > 1 else 0.0,
        min=float(data.min()),
        p50=float(p50),
        p90=float(p90),
        p99=float(p99),
        max=float(data.max()),
    )


def reason_key(error: str | None) -> str:
    """Group failures by reason; long server messages are cut so that ids in them don't split groups."""
    text = (error or "unknown").strip().replace("\n", " ")
    return text if len(text) <= 160 else text[:157] + "..."


def summarize_profile(spec: ProfileSpec, results: Sequence[RequestResult]) -> ProfileSummary:
    ok = [r for r in results if r.success]
    failed = [r for r in results if not r.success]
    if results:
        start = min(r.sent for r in results)
        end = max(r.sent + r.elapsed for r in results)
        duration = max(end - start, 1e-9)
    else:
        duration = 0.0
    warnings: list[str] = []

    # Token throughput only when every completed request has a true token count: a sum that
    # silently skips requests would flatter the endpoint.
    counted = [r for r in ok if r.output_tokens is not None]
    output_throughput: float | None = None
    total_throughput: float | None = None
    if ok and len(counted) == len(ok) and duration > 0:
        out = sum(r.output_tokens or 0 for r in ok)
        output_throughput = out / duration
        if all(r.prompt_tokens is not None for r in ok):
            total_throughput = (out + sum(r.prompt_tokens or 0 for r in ok)) / duration
    elif ok:
        warnings.append(
            f"{len(ok) - len(counted)} of {len(ok)} completed requests have no token count "
            "(the endpoint sent no usage and no --tokenizer was given): token figures left out"
        )

    short = sum(1 for r in counted if (r.output_tokens or 0) < spec.max_tokens)
    if short:
        warnings.append(
            f"{short} requests stopped before max_tokens={spec.max_tokens} "
            "(the endpoint may not honour ignore_eos): throughput is not comparable"
        )
    if failed:
        warnings.append(f"{len(failed)} of {len(results)} requests failed")

    return ProfileSummary(
        spec=spec,
        requests=len(results),
        completed=len(ok),
        failed=len(failed),
        failure_reasons=dict(Counter(reason_key(r.error) for r in failed).most_common()),
        duration=duration,
        request_throughput=len(ok) / duration if duration > 0 else 0.0,
        output_throughput=output_throughput,
        total_token_throughput=total_throughput,
        mean_concurrency=sum(r.elapsed for r in results) / duration if duration > 0 else 0.0,
        prompt_tokens=stats(r.prompt_tokens for r in ok),
        cached_tokens=stats(r.cached_tokens for r in ok),
        output_tokens=stats(r.output_tokens for r in ok),
        ttft=stats(r.ttft for r in ok),
        tpot=stats(r.tpot for r in ok),
        itl=stats(gap for r in ok for gap in r.itl),
        e2e=stats(r.e2e for r in ok),
        short_outputs=short,
        tokens_source=dict(Counter(r.tokens_source for r in ok)),
        warnings=warnings,
    )


def summarize_turns(results: Sequence[RequestResult]) -> list[TurnSummary]:
    turns = sorted({r.turn for r in results if r.turn is not None})
    out: list[TurnSummary] = []
    for turn in turns:
        warm = [r for r in results if r.turn == turn and not r.cold and r.success]
        cold = [r for r in results if r.turn == turn and r.cold and r.success]
        summary = TurnSummary(
            turn=turn,
            prompt_tokens=stats(r.prompt_tokens for r in warm),
            cached_tokens=stats(r.cached_tokens for r in warm),
            ttft=stats(r.ttft for r in warm),
            cold_ttft=stats(r.ttft for r in cold),
            failed=sum(1 for r in results if r.turn == turn and not r.success),
        )
        if summary.ttft.p50 and summary.cold_ttft.p50:
            summary.speedup = summary.cold_ttft.p50 / summary.ttft.p50
        out.append(summary)
    return out
