"""`impetus bench engine`: the impetus engine and mlx_lm in-process, mlx-lm's conventions."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from impetus.bench.store import ResultStore
from impetus.cli import main


def test_engine_bench_with_raw_side(
    impetus_home: Path, tiny_model_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = tmp_path / "bench.sqlite"
    rc = main(
        [
            "bench",
            "engine",
            "--model",
            str(tiny_model_dir),
            "-p",
            "48",
            "-g",
            "8",
            "-n",
            "2",
            "--raw",
            "--db",
            str(db),
            "--json",
        ]
    )
    assert rc == 0
    record = json.loads(capsys.readouterr().out)
    assert record["kind"] == "engine" and record["params"]["trials"] == 2
    assert record["params"]["seed"] is not None  # the fresh seed is kept with the run
    engine = record["engine"]
    assert [s["name"] for s in engine["sides"]] == ["impetus", "mlx_lm"]
    for side in engine["sides"]:
        assert len(side["trials"]) == 2 and side["load_seconds"] > 0
        assert side["dtype"] == record["endpoint"]["dtype"]  # both sides ran the same dtype
        for trial in side["trials"]:
            # EOS ignored: exactly the tokens asked for; fresh random prompts: nothing cached
            assert trial["prompt_tokens"] == 48 and trial["generation_tokens"] == 8
            assert trial["cached_tokens"] == 0
            assert (
                trial["prompt_tps"] > 0 and trial["generation_tps"] > 0 and trial["peak_memory"] > 0
            )
        assert side["generation_tps"]["count"] == 2 and side["generation_tps"]["std"] is not None
    ratio = engine["ratio"]
    ours, raw = engine["sides"]
    assert ratio["generation_tps impetus/mlx_lm"] == pytest.approx(
        ours["generation_tps"]["mean"] / raw["generation_tps"]["mean"]
    )
    assert not [w for w in engine["warnings"] if "tokens generated" in w or "from the cache" in w]
    stored = ResultStore(db).get("last")
    assert stored.engine is not None and stored.engine.ratio == pytest.approx(ratio)

    main(["bench", "show", "last", "--db", str(db)])
    table = capsys.readouterr().out
    assert "gen tok/s" in table and "generation_tps impetus/mlx_lm" in table


def test_engine_bench_unknown_model(
    impetus_home: Path, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    rc = main(
        [
            "bench",
            "engine",
            "--model",
            "no-such-model",
            "-n",
            "1",
            "--db",
            str(tmp_path / "b.sqlite"),
        ]
    )
    assert rc == 1
    assert "model_not_found" in capsys.readouterr().err
