"""Plain-text tables of runs, for `impetus bench ...` (charts are in charts.py)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from impetus.bench.schema import EngineSide, ProfileSummary, RunRecord, Stats


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """Columns aligned; numbers right-aligned, text left-aligned."""
    cells = [[_cell(v) for v in row] for row in rows]
    widths = [max([len(h), *(len(r[i]) for r in cells)]) for i, h in enumerate(headers)]
    numeric = [all(_is_number(row[i]) for row in rows) and bool(rows) for i in range(len(headers))]

    def line(values: Sequence[str]) -> str:
        return "  ".join(
            v.rjust(w) if num else v.ljust(w)
            for v, w, num in zip(values, widths, numeric, strict=True)
        ).rstrip()

    out = [line(headers), line(["-" * w for w in widths])]
    out += [line(r) for r in cells]
    return "\n".join(out)


def _is_number(value: Any) -> bool:
    return value is None or isinstance(value, int | float)


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        if value == 0:
            return "0"
        if abs(value) >= 100:
            return f"{value:,.0f}"
        if abs(value) >= 10:
            return f"{value:.1f}"
        return f"{value:.3g}" if abs(value) < 1 else f"{value:.2f}"
    return str(value)


def ms(value: float | None) -> float | None:
    return None if value is None else value * 1000.0


def gib(value: int | float | None) -> float | None:
    return None if not value else value / 2**30


def machine_line(machine: dict[str, Any]) -> str:
    parts = [
        str(machine.get("cpu", "?")),
        f"{machine.get('cores_logical', '?')} cores",
        f"{machine.get('memory_gb', '?')} GB",
        f"MLX {machine.get('mlx', '?')} ({machine.get('backend', '?')})",
        str(machine.get("os", "")),
    ]
    if machine.get("gpu"):
        parts.insert(1, str(machine["gpu"]))
    return ", ".join(p for p in parts if p)


def headline(record: RunRecord) -> str:
    """One figure that says how the run went, for the history table."""
    if record.kind == "serve" and record.profiles:
        best = max((p.output_throughput or 0.0) for p in record.profiles)
        first = record.profiles[0]
        return f"{best:,.1f} tok/s max, TTFT p50 {_cell(ms(first.ttft.p50))} ms ({first.spec.name})"
    if record.kind == "multiturn" and record.turns:
        last = record.turns[-1]
        speedup = f"x{last.speedup:.2f}" if last.speedup else "-"
        return f"turn {last.turn}: TTFT p50 {_cell(ms(last.ttft.p50))} ms, cold/warm {speedup}"
    if record.kind == "engine" and record.engine and record.engine.sides:
        side = record.engine.sides[0]
        return (
            f"prompt {_cell(side.prompt_tps.mean)} tok/s, "
            f"generation {_cell(side.generation_tps.mean)} tok/s"
        )
    return "-"


def format_history(records: Sequence[RunRecord]) -> str:
    if not records:
        return "no benchmark runs stored yet"
    rows = [
        (
            r.id,
            r.created.strftime("%Y-%m-%d %H:%M"),
            r.kind,
            r.label,
            r.model,
            sum(p.failed for p in r.profiles) + sum(t.failed for t in r.turns),
            headline(r),
        )
        for r in records
    ]
    return table(["run", "date (UTC)", "kind", "endpoint", "model", "failed", "result"], rows)


def profile_rows(profiles: Sequence[ProfileSummary]) -> list[tuple[Any, ...]]:
    return [
        (
            p.spec.name,
            p.completed,
            p.failed,
            p.request_throughput,
            p.output_throughput,
            p.prompt_tokens.mean,
            p.cached_tokens.mean,
            ms(p.ttft.mean),
            ms(p.ttft.p50),
            ms(p.ttft.p90),
            ms(p.ttft.p99),
            ms(p.tpot.p50),
            ms(p.itl.p50),
            ms(p.e2e.p50),
            ms(p.e2e.p99),
            p.mean_concurrency,
        )
        for p in profiles
    ]


PROFILE_HEADERS = [
    "profile",
    "ok",
    "failed",
    "req/s",
    "out tok/s",
    "prompt",
    "cached",
    "TTFT mean",
    "TTFT p50",
    "p90",
    "p99",
    "TPOT p50",
    "ITL p50",
    "E2E p50",
    "E2E p99",
    "conc.",
]


def side_row(side: EngineSide) -> tuple[Any, ...]:
    return (
        side.name,
        side.dtype,
        len(side.trials),
        side.prompt_tps.mean,
        side.prompt_tps.std,
        side.generation_tps.mean,
        side.generation_tps.std,
        gib(side.peak_memory),
        side.load_seconds,
    )


SIDE_HEADERS = [
    "run",
    "dtype",
    "trials",
    "prompt tok/s",
    "±",
    "gen tok/s",
    "±",
    "peak GiB",
    "load s",
]


def format_run(record: RunRecord) -> str:
    lines = [
        f"run {record.id}  {record.kind}  {record.created:%Y-%m-%d %H:%M:%S} UTC",
        f"endpoint {record.label}  model {record.model}",
        f"machine  {machine_line(record.machine)}",
    ]
    p = record.params
    if record.kind == "serve":
        lines.append(
            f"requests {p.get('requests')} per profile, max_tokens {p.get('max_tokens')}, "
            f"ignore_eos {p.get('ignore_eos')}, prompts {p.get('prompt_source')}; times in ms"
        )
        lines += ["", table(PROFILE_HEADERS, profile_rows(record.profiles))]
        for prof in record.profiles:
            for reason, count in prof.failure_reasons.items():
                lines.append(f"  {prof.spec.name}: {count} failed: {reason}")
            for warning in prof.warnings:
                if not warning.endswith("requests failed"):
                    lines.append(f"  {prof.spec.name}: {warning}")
    elif record.kind == "multiturn":
        lines.append(
            f"{p.get('conversations')} conversations x {p.get('turns')} turns, first prompt "
            f"{p.get('first_prompt_tokens')} tokens, +{p.get('turn_prompt_tokens')} a turn; times in ms"
        )
        rows = [
            (
                t.turn,
                t.prompt_tokens.mean,
                t.cached_tokens.mean,
                ms(t.ttft.p50),
                ms(t.cold_ttft.p50),
                t.speedup,
                t.failed,
            )
            for t in record.turns
        ]
        lines += [
            "",
            table(
                [
                    "turn",
                    "prompt tok",
                    "cached tok",
                    "TTFT p50",
                    "cold TTFT p50",
                    "cold/warm",
                    "failed",
                ],
                rows,
            ),
        ]
        reasons: dict[str, int] = {}
        for part in record.results:
            for r in part:
                if not r.success:
                    reasons[r.error or "?"] = reasons.get(r.error or "?", 0) + 1
        lines += [f"  {n} failed: {reason}" for reason, n in reasons.items()]
    elif record.kind == "engine" and record.engine:
        lines.append(
            f"prompt {p.get('prompt_tokens')} tokens, generate {p.get('generation_tokens')}, "
            f"{p.get('trials')} trials after {p.get('warmup')} warm-up"
        )
        e = record.endpoint
        served = f"serving {e.get('dtype')} (stored {e.get('source_dtype')}) on {e.get('backend')}"
        blas = f"BLAS {e.get('blas') or 'MLX default'}"
        if "raw_blas" in e:
            blas += f", mlx_lm side {e.get('raw_blas') or 'MLX default'}"
        lines += [
            f"{served}; {blas}",
            "",
            table(SIDE_HEADERS, [side_row(s) for s in record.engine.sides]),
        ]
        for key, value in record.engine.ratio.items():
            lines.append(f"  {key}: {value:.3f}")
        lines += [f"  {w}" for w in record.engine.warnings]
    lines += [f"warning: {w}" for w in record.warnings]
    return "\n".join(lines)


def _stat(s: Stats, scale: float = 1.0) -> float | None:
    return None if s.p50 is None else s.p50 * scale


def _ratio(a: float | None, b: float | None) -> float | None:
    return b / a if a and b is not None else None


def compare(a: RunRecord, b: RunRecord) -> dict[str, Any]:
    """B relative to A (ratio B/A), matching profiles / turns / engine sides by name.

    -> {"a", "b", "kind", "group": column title, "rows": [{group, metric, a, b, ratio}], "notes"}
    """
    notes: list[str] = []
    rows: list[dict[str, Any]] = []
    out: dict[str, Any] = {
        "a": a.id,
        "b": b.id,
        "kind": a.kind,
        "group": "",
        "rows": rows,
        "notes": notes,
    }
    if a.kind != b.kind:
        notes.append(f"cannot compare a {a.kind} run with a {b.kind} run")
        return out
    for key in sorted(set(a.params) | set(b.params)):
        if key not in ("base_url", "label") and a.params.get(key) != b.params.get(key):
            notes.append(f"param {key}: {a.params.get(key)!r} -> {b.params.get(key)!r}")
    if machine_line(a.machine) != machine_line(b.machine):
        notes += [f"machine A: {machine_line(a.machine)}", f"machine B: {machine_line(b.machine)}"]

    def add(group: str, metric: str, va: float | None, vb: float | None) -> None:
        rows.append({"group": group, "metric": metric, "a": va, "b": vb, "ratio": _ratio(va, vb)})

    if a.kind == "serve":
        out["group"] = "profile"
        b_profiles = {p.spec.name: p for p in b.profiles}
        for pa in a.profiles:
            pb = b_profiles.get(pa.spec.name)
            if pb is None:
                continue
            name = pa.spec.name
            add(name, "out tok/s", pa.output_throughput, pb.output_throughput)
            add(name, "req/s", pa.request_throughput, pb.request_throughput)
            add(name, "TTFT p50 ms", _stat(pa.ttft, 1000), _stat(pb.ttft, 1000))
            add(name, "TPOT p50 ms", _stat(pa.tpot, 1000), _stat(pb.tpot, 1000))
            add(name, "E2E p50 ms", _stat(pa.e2e, 1000), _stat(pb.e2e, 1000))
            add(name, "failed", pa.failed, pb.failed)
        a_names = {p.spec.name for p in a.profiles}
        if unmatched := [p.spec.name for p in b.profiles if p.spec.name not in a_names]:
            notes.append(f"only in B: {', '.join(unmatched)}")
    elif a.kind == "multiturn":
        out["group"] = "turn"
        b_turns = {t.turn: t for t in b.turns}
        for ta in a.turns:
            tb = b_turns.get(ta.turn)
            if tb is None:
                continue
            add(f"turn {ta.turn}", "TTFT p50 ms", _stat(ta.ttft, 1000), _stat(tb.ttft, 1000))
            add(
                f"turn {ta.turn}",
                "cold TTFT p50 ms",
                _stat(ta.cold_ttft, 1000),
                _stat(tb.cold_ttft, 1000),
            )
            add(f"turn {ta.turn}", "cached tok", ta.cached_tokens.mean, tb.cached_tokens.mean)
    else:
        out["group"] = "run"
        b_sides = {s.name: s for s in (b.engine.sides if b.engine else [])}
        for sa in a.engine.sides if a.engine else []:
            sb = b_sides.get(sa.name)
            if sb is None:
                continue
            add(sa.name, "prompt tok/s", sa.prompt_tps.mean, sb.prompt_tps.mean)
            add(sa.name, "gen tok/s", sa.generation_tps.mean, sb.generation_tps.mean)
            add(sa.name, "peak GiB", gib(sa.peak_memory), gib(sb.peak_memory))
            add(sa.name, "load s", sa.load_seconds, sb.load_seconds)
    if not rows:
        notes.append("nothing in common to compare (different profiles)")
    return out


def format_compare(a: RunRecord, b: RunRecord) -> str:
    result = compare(a, b)
    lines = [
        f"A  {a.id}  {a.kind}  {a.label}  {a.model}  {a.created:%Y-%m-%d %H:%M}",
        f"B  {b.id}  {b.kind}  {b.label}  {b.model}  {b.created:%Y-%m-%d %H:%M}",
        *result["notes"],
    ]
    if result["rows"]:
        rows = [(r["group"], r["metric"], r["a"], r["b"], r["ratio"]) for r in result["rows"]]
        lines += ["", table([result["group"], "metric", "A", "B", "B/A"], rows)]
    return "\n".join(lines)
