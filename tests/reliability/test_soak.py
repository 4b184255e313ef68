"""The soak benchmark's short form: 75 s of mixed load with the same checks as the 30-minute run.

benchmarks/soak.py does the work (and docs/reliability.md records its 30-minute result); here it
runs for 75 s, not 2 minutes, to keep `make test` short: long enough for every action to occur
many times and for a memory slope over ~10 samples after the warm-up.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

SOAK = Path(__file__).resolve().parents[2] / "benchmarks" / "soak.py"


def test_short_soak_passes_the_soak_checks() -> None:
    spec = importlib.util.spec_from_file_location("impetus_soak", SOAK)
    assert spec is not None and spec.loader is not None
    soak = importlib.util.module_from_spec(spec)
    sys.modules["impetus_soak"] = soak  # dataclasses resolve their module by name
    spec.loader.exec_module(soak)

    result = soak.run(1.25, clients=6, sample_every=3.0)
    print(soak.summary(result))
    assert result.problems == [], soak.summary(result)
    # every kind of action ran, and the expected outcomes of cancels and disconnects were seen
    assert set(result.actions) == set(soak.Load.ACTIONS)
    assert result.outcomes.get("cancelled_by_client") and result.outcomes.get(
        "disconnected_by_client"
    )
