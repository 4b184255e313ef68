"""`impetus bench ...` end to end, the result store, and the arithmetic under the figures."""

from __future__ import annotations

import json
import socket
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest

from impetus.bench.load import arrival_times, sweep_rates
from impetus.bench.schema import ProfileSpec, RunRecord
from impetus.bench.stats import stats
from impetus.bench.store import ResultStore, RunNotFound
from impetus.cli import build_parser, main
from impetus.client import PrivateServer


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
    rc = main(list(argv))
    return rc, capsys.readouterr().out


def test_cli_serve_history_show_compare(
    impetus_server: PrivateServer,
    model_id: str,
    tiny_model_dir: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    db = str(tmp_path / "bench.sqlite")
    common = [
        "--base-url",
        impetus_server.base_url,
        "--model",
        model_id,
        "--tokenizer",
        str(tiny_model_dir),
        "--requests",
        "4",
        "--prompt-tokens",
        "16",
        "--max-tokens",
        "4",
        "--db",
        db,
        "--quiet",
    ]
    rc, out = _run(
        capsys, "bench", "serve", *common, "--concurrency", "1,2", "--label", "first", "--json"
    )
    assert rc == 0
    first = json.loads(out)
    assert [p["spec"]["concurrency"] for p in first["profiles"]] == [1, 2]
    assert first["results"] == []  # --json prints the summary; results stay in the store
    assert first["params"]["base_url"].endswith("/v1")  # a server root is completed to /v1

    rc, out = _run(capsys, "bench", "serve", *common, "--concurrency", "1", "--label", "second")
    assert rc == 0
    assert "c=1 p16/g4" in out and "TTFT p50" in out  # the table

    rc, out = _run(capsys, "bench", "history", "--db", db, "--json")
    history = json.loads(out)
    assert [r["label"] for r in history] == ["second", "first"]
    rc, out = _run(capsys, "bench", "history", "--db", db)
    assert "first" in out and "second" in out and "tok/s max" in out

    rc, out = _run(capsys, "bench", "show", first["id"][:17], "--db", db, "--json", "--results")
    shown = json.loads(out)
    assert shown["id"] == first["id"] and len(shown["results"]) == 2
    assert all(r["success"] and r["output_tokens"] == 4 for part in shown["results"] for r in part)

    rc, out = _run(capsys, "bench", "compare", "last~1", "last", "--db", db)
    assert rc == 0 and "B/A" in out and "c=1 p16/g4" in out and "out tok/s" in out
    rc, out = _run(capsys, "bench", "compare", "last~1", "last", "--db", db, "--json")
    compared = json.loads(out)
    assert compared["a"] == first["id"] and compared["group"] == "profile"
    rows = {(r["group"], r["metric"]): r for r in compared["rows"]}
    row = rows[("c=1 p16/g4", "out tok/s")]
    assert row["ratio"] == pytest.approx(row["b"] / row["a"])
    assert any(n.startswith("param concurrency") for n in compared["notes"])

    rc, out = _run(
        capsys,
        "bench",
        "multiturn",
        *common[:6],
        "--turns",
        "2",
        "--conversations",
        "1",
        "--first-prompt-tokens",
        "32",
        "--turn-tokens",
        "8",
        "--max-tokens",
        "4",
        "--session-header",
        "X-Conversation-Id",
        "--db",
        db,
        "--quiet",
    )
    assert rc == 0 and "cold/warm" in out
    rc, out = _run(capsys, "bench", "show", "last", "--db", db, "--json")
    assert json.loads(out)["params"]["session_header"] == "X-Conversation-Id"  # stored with it
    args = build_parser().parse_args(["bench", "multiturn", *common[:6], "--no-session-header"])
    assert args.session_header == ""

    assert main(["bench", "show", "nope", "--db", db]) == 1
    assert "no run 'nope'" in capsys.readouterr().err


def test_cli_unreachable_endpoint(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    rc, out = _run(
        capsys,
        "bench",
        "serve",
        "--base-url",
        f"http://127.0.0.1:{port}/v1",
        "--model",
        "m",
        "--concurrency",
        "1",
        "--requests",
        "2",
        "--db",
        str(tmp_path / "b.sqlite"),
        "--quiet",
    )
    assert rc == 1  # nothing was measured
    assert "2 failed: ConnectError" in out and "endpoint unreachable" in out
    # the failed run is stored all the same: failures are results too
    (record,) = ResultStore(tmp_path / "b.sqlite").list()
    assert record.profiles[0].failed == 2


def _record(run_id: str, created: datetime) -> RunRecord:
    return RunRecord(
        id=run_id, kind="serve", created=created, label="x", model="m", params={}, machine={}
    )


def test_store_references(tmp_path: Path) -> None:
    store = ResultStore(tmp_path / "s.sqlite")
    t0 = datetime(2025, 1, 1, tzinfo=UTC)
    for i, run_id in enumerate(
        ["20250101-000000-aaaa", "20250101-000001-aaab", "20250101-000002-bbbb"]
    ):
        store.save(_record(run_id, t0 + timedelta(seconds=i)))
    assert store.resolve("last") == "20250101-000002-bbbb"
    assert store.resolve("last~2") == "20250101-000000-aaaa"
    assert store.resolve("20250101-000002") == "20250101-000002-bbbb"
    with pytest.raises(RunNotFound, match="matches 3 runs"):
        store.resolve("2025")
    with pytest.raises(RunNotFound):
        store.resolve("last~3")
    store.delete("last")
    assert [r.id for r in store.list()] == ["20250101-000001-aaab", "20250101-000000-aaaa"]


def test_stats_match_numpy() -> None:
    values = np.random.default_rng(1).exponential(0.05, size=501)
    s = stats([*values.tolist(), None])  # None: not measured, left out
    assert s.count == 501
    assert s.p50 == pytest.approx(np.percentile(values, 50))
    assert s.p90 == pytest.approx(np.percentile(values, 90))
    assert s.p99 == pytest.approx(np.percentile(values, 99))
    assert s.mean == pytest.approx(values.mean()) and s.std == pytest.approx(values.std(ddof=1))
    assert stats([]).count == 0 and stats([]).p50 is None


def test_arrivals_and_sweep_rates() -> None:
    spec = ProfileSpec(
        kind="rate", rate=4.0, poisson=True, requests=4000, prompt_tokens=1, max_tokens=1
    )
    times = arrival_times(spec, seed=3)
    gaps = np.diff(times)
    assert times[0] == 0 and np.all(gaps >= 0)
    assert gaps.mean() == pytest.approx(0.25, rel=0.05)  # rate 4/s
    assert gaps.std() == pytest.approx(0.25, rel=0.1)  # exponential: std == mean
    even = arrival_times(spec.model_copy(update={"poisson": False, "requests": 5}))
    assert even == pytest.approx([0, 0.25, 0.5, 0.75, 1.0])
    assert sweep_rates(1.0, 5.0, 3) == pytest.approx([2.0, 3.0, 4.0])
    assert sweep_rates(0.0, 0.0, 3) == []
