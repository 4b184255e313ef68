"""The parts of impetus.engine.distributed that need no group: the ranks' environments, the
settings it refuses, the turn's encoding and the step digest (the groups themselves run in
tests/api/test_ranks.py)."""

from __future__ import annotations

import json
from pathlib import Path

import msgspec
import pytest

from impetus.config import Settings
from impetus.engine import distributed
from impetus.engine.distributed import Turn, rank_environments, step_digest
from impetus.protocol import Delta, Start


def test_each_rank_gets_what_mlx_launch_would_give_it(tmp_path: Path) -> None:
    hostfile = tmp_path / "hosts.json"
    envs = rank_environments(3, {"PATH": "/bin"}, hostfile)
    assert [e["MLX_RANK"] for e in envs] == ["0", "1", "2"]
    assert all(e["PATH"] == "/bin" and e["MLX_WORLD_SIZE"] == "3" for e in envs)
    hosts = json.loads(hostfile.read_text())  # the ring: one loopback address a rank
    ports = [int(h[0].rsplit(":", 1)[1]) for h in hosts]
    assert [h[0].rsplit(":", 1)[0] for h in hosts] == ["127.0.0.1"] * 3
    assert ports == [ports[0], ports[0] + 1, ports[0] + 2]
    assert {e["MLX_HOSTFILE"] for e in envs} == {str(hostfile)}
    assert len({e["NCCL_PORT"] for e in envs}) == 1 and envs[0]["NCCL_HOST_IP"] == "127.0.0.1"
    assert [e["CUDA_VISIBLE_DEVICES"] for e in envs] == ["0", "1", "2"]
    assert {e["IMPETUS_RANKS_LAUNCHER"] for e in envs} == {"impetus"}


def test_the_visible_gpus_are_shared_out_one_a_rank(tmp_path: Path) -> None:
    envs = rank_environments(2, {"CUDA_VISIBLE_DEVICES": "4, 6,7"}, tmp_path / "h")
    assert [e["CUDA_VISIBLE_DEVICES"] for e in envs] == ["4", "6"]


def test_refused_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(distributed.RANK_VAR, raising=False)
    distributed.check_settings(Settings(ranks=2))
    with pytest.raises(ValueError, match="jaccl"):
        distributed.check_settings(Settings(ranks=2, distributed_backend="jaccl"))
    monkeypatch.setenv(distributed.RANK_VAR, "0")  # already a rank of an outside launcher
    with pytest.raises(ValueError, match="MLX launcher"):
        distributed.check_settings(Settings(ranks=2))
    distributed.check_settings(Settings(ranks=1))


def test_a_turn_round_trips_with_its_raw_commands() -> None:
    turn = Turn([b"\x92\xa6cancel\xa1x", b""], ["m"], True)
    assert msgspec.msgpack.decode(msgspec.msgpack.encode(turn), type=Turn) == turn


def test_the_step_digest_sees_tokens_and_their_requests() -> None:
    step = [Delta(rid="a", index=0, text="x", token_ids=[5]), Delta(rid="b", index=0, text="", token_ids=[7])]
    assert step_digest(step) == step_digest(list(step))
    assert step_digest(step) != step_digest([step[0], Delta(rid="b", index=0, text="", token_ids=[8])])
    assert step_digest(step) != step_digest([step[1], step[0]])
    start = Start(rid="a", model="m", prompt_tokens=1, cached_tokens=0, max_tokens=1)
    assert step_digest([start]) == step_digest([]) == 0
