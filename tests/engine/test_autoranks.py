"""`ranks = "auto"` (impetus.engine.autoranks): the rule on a table of machines, and the numbers
it is given for real settings (the registry's weight estimate, this machine's backend)."""

from __future__ import annotations

from pathlib import Path

import pytest

from impetus.config import Settings
from impetus.engine import autoranks
from impetus.engine.autoranks import Machine, StartModel, choose_ranks
from impetus.models.registry import describe

GB = 10**9
H100 = 80 * GB

# (id, machine, start-up models (id, weight bytes), launched by mlx.launch, expected ranks)
CASES = [
    ("cpu", Machine("cpu"), [("big", 300 * GB)], False, 1),
    ("metal", Machine("metal"), [("big", 300 * GB)], False, 1),
    ("cuda, one GPU", Machine("cuda", 1, H100), [("big", 300 * GB)], False, 1),
    ("cuda, fits one GPU", Machine("cuda", 4, 150 * GB), [("llama3-8b", 16 * GB)], False, 1),
    ("cuda, no model at start", Machine("cuda", 8, H100), [], False, 1),
    ("70 GB on 2x80 GB", Machine("cuda", 2, H100), [("llama3-70b-fp8", 70 * GB)], False, 2),
    ("70 GB on 8x80 GB: the fewest", Machine("cuda", 8, H100), [("m", 70 * GB)], False, 2),
    ("140 GB on 4x80 GB", Machine("cuda", 4, H100), [("llama3-70b", 140 * GB)], False, 4),
    ("300 GB on 8x80 GB: not 4", Machine("cuda", 8, H100), [("big", 300 * GB)], False, 8),
    ("bigger than all 8", Machine("cuda", 8, H100), [("huge", 900 * GB)], False, 8),
    (
        "bigger than all 6: the largest of 2, 4, 8",
        Machine("cuda", 6, H100),
        [("huge", 900 * GB)],
        False,
        4,
    ),
    ("two models together", Machine("cuda", 4, H100), [("a", 30 * GB), ("b", 30 * GB)], False, 2),
    ("under mlx.launch", Machine("cuda", 8, H100), [("big", 300 * GB)], True, 1),
]


@pytest.mark.parametrize(
    ("machine", "models", "launched", "expected"),
    [c[1:] for c in CASES],
    ids=[c[0] for c in CASES],
)
def test_the_rule(
    machine: Machine, models: list[tuple[str, int]], launched: bool, expected: int
) -> None:
    start = [StartModel(mid, size) for mid, size in models]
    choice = choose_ranks(machine, start, launched=launched, fraction=0.6, budget=None)
    assert choice.ranks == expected, choice.line()
    assert choice.line().startswith(f"ranks auto: {expected} (")


def test_the_reasons_say_why() -> None:
    fits = choose_ranks(Machine("cuda", 2, 150 * 2**30), [StartModel("llama3-8b", 15 * 2**30)])
    assert fits.line() == (
        "ranks auto: 1 (llama3-8b, 15.0 GiB, fits one 150.0 GiB GPU (90.0 GiB usable); "
        "sharding a model that fits costs throughput: docs/scale.md)"
    )
    split = choose_ranks(Machine("cuda", 4, H100), [StartModel("m", 140 * GB)])
    assert "does not fit one" in split.reason and "over 4 fits" in split.reason
    over = choose_ranks(Machine("cuda", 2, H100), [StartModel("m", 900 * GB)])
    assert over.ranks == 2 and "the load will fail" in over.reason
    unknown = choose_ranks(Machine("cuda", 2, H100), [StartModel("not-here", None)])
    assert unknown.ranks == 1 and "not-here" in unknown.reason


def test_the_budget_and_the_fraction_bound_a_rank() -> None:
    """A rank's weights are planned against the engine's memory budget as well as the GPU."""
    gpu = Machine("cuda", 8, H100)
    assert choose_ranks(gpu, [StartModel("m", 40 * GB)], fraction=0.6).ranks == 1
    assert choose_ranks(gpu, [StartModel("m", 40 * GB)], fraction=0.6, budget=30 * GB).ranks == 2
    assert choose_ranks(gpu, [StartModel("m", 40 * GB)], fraction=0.4).ranks == 2


def test_embedding_models_are_whole_on_every_rank() -> None:
    gpu = Machine("cuda", 8, 10 * GB)  # 6 GB usable
    chat, embed = StartModel("chat", 16 * GB), StartModel("embed", 1 * GB, sharded=False)
    assert choose_ranks(gpu, [chat]).ranks == 4  # 4 GB a rank
    assert choose_ranks(gpu, [chat, embed]).ranks == 4  # 5 GB a rank
    assert choose_ranks(gpu, [chat, StartModel("e", 3 * GB, sharded=False)]).ranks == 8


def test_the_registry_estimate_decides(
    monkeypatch: pytest.MonkeyPatch, tiny_model_dir: Path, tmp_path: Path
) -> None:
    """The real gathering on a pretend CUDA machine: the start-up model's size is the registry's
    `memory_bytes` in CUDA's serving dtype, weighed against one GPU's memory."""
    settings = Settings(models=[str(tiny_model_dir)], home=tmp_path)
    weights = describe(str(tiny_model_dir), settings, backend="cuda").memory_bytes
    assert weights
    monkeypatch.delenv("MLX_RANK", raising=False)
    monkeypatch.setattr(autoranks, "installed_backend", lambda: "cuda")
    monkeypatch.setattr(autoranks, "_nvml_gpus", lambda visible: (4, int(weights / 0.6 / 3)))
    choice = autoranks.choose_for(settings)
    assert choice.ranks == 4, choice.line()  # a third of the room per GPU: not 2, 4 fits
    monkeypatch.setattr(autoranks, "_nvml_gpus", lambda visible: (4, int(weights / 0.6) + 1))
    assert autoranks.choose_for(settings).ranks == 1
    monkeypatch.setenv("MLX_RANK", "0")  # rank 0 of mlx.launch: the launcher decides
    assert autoranks.choose_for(settings).ranks == 1


def test_this_machine_without_cuda_gets_one_rank(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MLX_RANK", raising=False)
    if autoranks.installed_backend() == "cuda":
        pytest.skip("a CUDA machine: the rule is the table above")
    choice = autoranks.choose_for(Settings(models=["smollm2-135m"]))
    assert choice.ranks == 1 and "auto shards over CUDA GPUs only" in choice.reason
