"""The soak benchmark's short form: 2 minutes of mixed load with the 30-minute run's checks.

benchmarks/soak.py does the work (and docs/reliability.md records its 30-minute result); here it
runs the same function for 2 minutes with the same 8 clients and the same checks: requests
served, failures by reason (none unexpected), prompt-cache bytes never above the bound, nothing
left running or open, no engine restart, and the engine RSS, MLX active memory and serve RSS
slopes flat after the warm-up (~28 samples, one every 3 s).
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

    result = soak.run(2.0, clients=8, sample_every=3.0)
    print(soak.summary(result))
    assert result.problems == [], soak.summary(result)
    assert result.served > 0 and result.outcomes.get("ok")
    assert len(result.slopes_mib_per_min) == 3  # engine RSS, MLX active, serve RSS
    # every kind of action ran, and the expected outcomes of cancels and disconnects were seen
    assert set(result.actions) == set(soak.Load.ACTIONS)
    assert result.outcomes.get("cancelled_by_client") and result.outcomes.get(
        "disconnected_by_client"
    )
