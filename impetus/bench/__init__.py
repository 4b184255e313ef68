"""Benchmarks whose figures mean something: true token counts, failures counted, runs stored.

```python
from impetus.bench import ServeConfig, run_serve, ResultStore
record = await run_serve(ServeConfig(base_url="http://127.0.0.1:8000/v1", model="smollm2-135m",
                                     concurrency=[1, 4]), store=ResultStore())
```

* `run_serve` / `run_multiturn` (serve.py): OpenAI-compatible endpoints, streaming; progress
  callbacks `on_result`, `on_progress`, `on_profile`. `run_sync` runs either from blocking code.
* `run_engine_bench` (engine.py): the impetus engine with mlx-lm's benchmark conventions.
* `ResultStore` (store.py): SQLite history; `report.py` tables; `charts.py` Bokeh figures.
"""

from impetus.bench.engine import PRESETS, EngineBenchConfig, run_engine_bench
from impetus.bench.schema import (
    EngineSide,
    EngineSummary,
    EngineTrial,
    ProfileSpec,
    ProfileSummary,
    RequestResult,
    RunRecord,
    Stats,
    TurnSummary,
)
from impetus.bench.serve import MultiTurnConfig, ServeConfig, run_multiturn, run_serve, run_sync
from impetus.bench.store import ResultStore, RunNotFound

__all__ = [
    "PRESETS",
    "EngineBenchConfig",
    "EngineSide",
    "EngineSummary",
    "EngineTrial",
    "MultiTurnConfig",
    "ProfileSpec",
    "ProfileSummary",
    "RequestResult",
    "ResultStore",
    "RunNotFound",
    "RunRecord",
    "ServeConfig",
    "Stats",
    "TurnSummary",
    "run_engine_bench",
    "run_multiturn",
    "run_serve",
    "run_sync",
]
