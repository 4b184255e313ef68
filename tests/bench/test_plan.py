"""The report sized to the machine: profile choice, the printed plan and estimate, progress lines."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from impetus.bench.plan import PROFILES, Machine, ProfileLog, choose_profile, format_plan, plan
from impetus.bench.schema import ProfileSpec, ProfileSummary

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(
    ("machine", "requested", "expected"),
    [
        (Machine("cpu", 2), "auto", "quick"),
        (Machine("cpu", 64), "auto", "full"),
        (Machine("cuda", 16), "auto", "full"),
        (Machine("metal", 10), "auto", "full"),
        (Machine("cpu", 2), "full", "full"),
        (Machine("cuda", 16), "quick", "quick"),
    ],
)
def test_profile_follows_the_machine(machine: Machine, requested: str, expected: str) -> None:
    assert choose_profile(requested, machine)[0] == expected


def test_unknown_profile_is_an_error() -> None:
    with pytest.raises(ValueError, match="unknown profile"):
        choose_profile("huge", Machine("cpu", 2))


def test_plan_counts_every_profile_of_every_endpoint() -> None:
    params = {"endpoints": ["impetus", "mlx_lm"], **PROFILES["quick"]}
    steps = plan(params)
    per_endpoint = 2 + 2 + 1 + 1  # concurrency levels, prompt lengths, multi-turn, engine bench
    assert len(steps) == 2 * per_endpoint
    text = format_plan("quick", "cpu backend, 2 cores: a small CPU", params, Machine("cpu", 2))
    assert "impetus: 6 profiles" in text and "mlx_lm: 6 profiles" in text
    assert "estimate: about" in text
    # the quick profile is far smaller than the full one on the same machine
    full = plan({"endpoints": ["impetus", "mlx_lm"], **PROFILES["full"]})
    assert sum(s.requests * s.max_tokens for s in steps) * 5 < sum(
        s.requests * s.max_tokens for s in full
    )


def test_profile_log_prints_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    spec = ProfileSpec(
        kind="concurrent", concurrency=4, requests=8, prompt_tokens=128, max_tokens=32
    )
    summary = ProfileSummary(
        spec=spec, requests=8, completed=7, failed=1, duration=2.0, request_throughput=3.5,
        output_throughput=51.2, total_token_throughput=None, mean_concurrency=3.9,
    )  # fmt: skip
    ProfileLog("impetus")(summary)
    line = capsys.readouterr().out
    assert line.startswith("[impetus] ") and "7/8 requests" in line and "51.2 tok/s" in line
    assert "1 failed" in line


def test_report_prints_its_plan_before_running(tmp_path: Path) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "impetus.cli", "bench", "report", "--profile", "quick",
         "--notebook", str(tmp_path / "missing.ipynb"), "--output", str(tmp_path / "r.html")],
        capture_output=True, text=True, timeout=120, cwd=ROOT,
    )  # fmt: skip
    assert out.returncode == 1 and "report notebook not found" in out.stderr
    assert out.stdout.startswith("benchmark report: profile quick (asked for)")
    assert "estimate: about" in out.stdout
