"""One model across several engine processes ("ranks") with MLX's distributed layer.

Every rank is an engine process (impetus.engine.process) holding a tensor-parallel shard of each
chat model (`model.shard(group)`, mlx-lm's sharding). Rank 0 is the engine the api talks to: it
owns the ZMQ link and sends the events. The other ranks follow it turn by turn: each loop turn,
rank 0 shares a `Turn` (the commands it took off its socket, as received, and its own
housekeeping decisions) and every rank applies the same commands to its own `EngineCore` and runs
the same batch step. The engine is deterministic given its commands (tokenization, admission,
prompt-cache lookups, the BatchGenerator's order), so the collectives inside the sharded model
line up, and the batch, the prompt cache and cancellation behave as with one rank. Logits are
the same on every rank (the sharded layers end in an all-sum), and the random state is seeded
alike on every rank, so sampling picks the same token everywhere; a digest of each step's tokens
travels with the next turn and a rank whose tokens differ stops the group rather than serve
garbage.

How the ranks start:
* `impetus serve --ranks N` (or the extension's `ranks` setting; `auto`, the default, picks N
  in impetus.engine.autoranks: 1 unless the models do not fit one GPU): `AsyncEngine` starts N
  engine processes on this machine with the environment mlx.launch would give them (`LocalRanks`) and
  supervises them as one: when a rank ends, the others are killed, the requests in flight fail
  and the group is started again, as a single engine process is.
* `mlx.launch --hosts ... impetus serve ...` (several machines): rank 0's `impetus serve` serves
  HTTP and starts its engine, which joins the group from the launcher's variables; the other
  ranks' `impetus serve` become followers (`follower_argv`). A failed rank ends the job
  (mlx.launch stops every rank); whatever runs mlx.launch restarts it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import socket
import sys
import tempfile
import zlib
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, cast

import msgspec

from impetus.config import Settings
from impetus.protocol import Delta, Event, RanksInfo

if TYPE_CHECKING:
    import mlx.core as mx

log = logging.getLogger("impetus.engine")

# set by every MLX launcher (mlx.launch, and impetus for its local ranks) for each rank
RANK_VAR = "MLX_RANK"


class RankFailure(RuntimeError):
    """The group cannot go on (a peer is gone, or a rank's tokens differ from rank 0's): the
    rank exits, the launcher stops the others, and the api restarts the group."""


def launched_rank() -> int | None:
    """This process's rank when an MLX launcher started it, else None."""
    value = os.environ.get(RANK_VAR)
    return int(value) if value not in (None, "") else None


def check_settings(settings: Settings, ranks: int | None = None) -> None:
    """Refuse `ranks` > 1 inside a process that a launcher already made a rank: the group is the
    launcher's then, and a second one inside it would fight over its variables. `ranks`: the
    count `auto` chose (impetus.engine.autoranks; it is 1 under a launcher), else the setting."""
    if ranks is None:
        ranks = settings.ranks if isinstance(settings.ranks, int) else 1
    if ranks > 1 and settings.distributed_backend == "jaccl":
        raise ValueError(
            "the jaccl backend needs RDMA devices named in a hostfile: run impetus serve under "
            "mlx.launch for it, not with ranks > 1"
        )
    if ranks > 1 and launched_rank() is not None:
        raise ValueError(
            f"ranks={ranks} cannot be used under an MLX launcher ({RANK_VAR} is set): "
            "the launcher already starts one impetus per rank"
        )


def free_port_run(n: int) -> int:
    """The first of `n` consecutive loopback ports that are free now (the ring backend listens
    on one port per rank, counting up from the starting port)."""
    for _ in range(64):
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            base = int(probe.getsockname()[1])
        if base + n > 65535:
            continue
        held: list[socket.socket] = []
        try:
            for port in range(base, base + n):
                s = socket.socket()
                held.append(s)
                s.bind(("127.0.0.1", port))
            return base
        except OSError:
            continue
        finally:
            for s in held:
                s.close()
    raise RuntimeError(f"no run of {n} free loopback ports")


def rank_environments(n: int, env: dict[str, str], hostfile: Path) -> list[dict[str, str]]:
    """Each of `n` local ranks' environment, as mlx.launch writes it for one host repeated `n`
    times (its launch_ring and launch_nccl): MLX_RANK; for ring a hostfile of one loopback
    address a rank (written to `hostfile`); for NCCL the rendezvous address and port, the world
    size and one GPU a rank. Both sets are written; the ranks initialise the backend of
    `distributed_backend`, or on `auto` NCCL where CUDA is available, else ring (mlx.launch's
    rule), which the api process cannot tell without importing MLX."""
    ring = free_port_run(n)
    hostfile.write_text(json.dumps([[f"127.0.0.1:{ring + r}"] for r in range(n)]))
    nccl = free_port_run(1)
    # One GPU a rank: the r-th of those the user made visible, else GPU r (mlx.launch's choice).
    # Fewer visible than ranks: left as set (on CPU it does not matter; on CUDA NCCL refuses
    # two ranks on one GPU, in the engine's log).
    visible = [d.strip() for d in env.get("CUDA_VISIBLE_DEVICES", "").split(",") if d.strip()]
    if len(visible) >= n:
        gpus = visible[:n]
    elif visible:
        gpus = [env["CUDA_VISIBLE_DEVICES"]] * n
    else:
        gpus = [str(r) for r in range(n)]
    return [
        dict(
            env,
            MLX_RANK=str(r),
            MLX_HOSTFILE=str(hostfile),
            MLX_WORLD_SIZE=str(n),
            NCCL_HOST_IP="127.0.0.1",
            NCCL_PORT=str(nccl),
            CUDA_VISIBLE_DEVICES=gpus[r],
            IMPETUS_RANKS_LAUNCHER="impetus",
        )
        for r in range(n)
    ]


class _Inputs:
    """The standard inputs of every rank as one (the api writes one "go" line to its engine)."""

    def __init__(self, writers: list[asyncio.StreamWriter]) -> None:
        self.writers = writers

    def write(self, data: bytes) -> None:
        for w in self.writers:
            w.write(data)

    async def drain(self) -> None:
        await asyncio.gather(*(w.drain() for w in self.writers))

    def close(self) -> None:
        for w in self.writers:
            w.close()


class LocalRanks:
    """The engine processes of a group on this machine, which `AsyncEngine` supervises as it
    does one engine process: it has ended when any rank has ended, and the rest are killed then
    (a rank whose peer died may wait in a collective). Not mlx.launch: its per-rank relay
    threads poll the ranks' always-writable input pipes without sleeping, a core's worth of
    busy loop beside the engine."""

    def __init__(self, procs: list[asyncio.subprocess.Process], hostfile: Path) -> None:
        self.procs = procs
        self.hostfile = hostfile
        self.pid = procs[0].pid  # rank 0: the engine the api talks to
        self.stdin = _Inputs([p.stdin for p in procs if p.stdin is not None])
        self.ended: tuple[int, int] | None = None  # (rank, exit code) of the first to end
        self._watcher: asyncio.Task[int] | None = None

    @classmethod
    async def start(cls, n: int, argv: list[str], env: dict[str, str]) -> LocalRanks:
        fd, name = tempfile.mkstemp(prefix="impetus-ranks-", suffix=".json")
        os.close(fd)
        hostfile = Path(name)
        procs = [
            await asyncio.create_subprocess_exec(*argv, env=e, stdin=asyncio.subprocess.PIPE)
            for e in rank_environments(n, env, hostfile)
        ]
        return cls(procs, hostfile)

    @property
    def returncode(self) -> int | None:
        if self._watcher is not None and self._watcher.done():
            return self._watcher.result()
        return None

    async def wait(self) -> int:
        if self._watcher is None:
            self._watcher = asyncio.ensure_future(self._watch())
        return await asyncio.shield(self._watcher)

    async def _watch(self) -> int:
        waits = {asyncio.ensure_future(p.wait()): r for r, p in enumerate(self.procs)}
        _, pending = await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        # A rank killed by a signal takes the others out within moments (their connections to
        # it break): among the ranks that end within half a second, the one a signal killed is
        # the cause, whichever exit was seen first.
        if pending:
            await asyncio.wait(pending, timeout=0.5)
        done = [f for f in waits if f.done()]
        first = min(done, key=lambda f: (f.result() >= 0, waits[f]))
        self.ended = (waits[first], first.result())
        if self.ended[1] != 0:
            self.kill()
        else:  # a shutdown: the others end on the same turn
            _, late = await asyncio.wait(waits, timeout=10)
            if late:
                self.kill()
        await asyncio.gather(*waits)
        self.hostfile.unlink(missing_ok=True)
        return self.ended[1]

    def kill(self) -> None:
        for p in self.procs:
            if p.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    p.kill()


def follower_argv(settings: Settings) -> list[str]:
    """The engine of a rank other than 0 started by an outside launcher: no api, no socket."""
    return [
        sys.executable,
        "-m",
        "impetus.engine.process",
        "--settings",
        settings.model_dump_json(),
        "--now",
    ]


def backend_from_launcher(setting: str) -> str:
    """The backend to initialise: the setting, else the one whose variables the launcher set:
    NCCL where CUDA is available and NCCL_HOST_IP is set, ring with MLX_HOSTFILE, jaccl with
    its variables (mlx.launch writes one set; impetus's own local ranks get both NCCL and ring,
    and CUDA decides, as in mlx.launch), else ring."""
    if setting != "auto":
        return setting
    import mlx.core as mx

    if os.environ.get("NCCL_HOST_IP") and mx.cuda.is_available():
        return "nccl"
    if os.environ.get("MLX_HOSTFILE"):
        return "ring"
    if os.environ.get("MLX_JACCL_COORDINATOR") or os.environ.get("MLX_IBV_DEVICES"):
        return "jaccl"
    return "ring"


class Turn(msgspec.Struct, array_like=True):
    """What rank 0 shares each loop turn: the raw commands every rank applies, in order, and the
    decisions that depend on rank 0's clock or parent (models idle past their keep-alive, stop)."""

    commands: list[bytes] = []
    expire: list[str] = []
    stop: bool = False


_turn_decoder = msgspec.msgpack.Decoder(Turn)
_encoder = msgspec.msgpack.Encoder()


def step_digest(events: Iterable[Event]) -> int:
    """A checksum of the tokens one step produced (request id and token ids, in order): equal
    on every rank as long as the ranks agree."""
    crc = 0
    for ev in events:
        if isinstance(ev, Delta):
            crc = zlib.crc32(ev.rid.encode(), crc)
            crc = zlib.crc32(b"".join(t.to_bytes(4, "little") for t in ev.token_ids), crc)
    return crc


class Group:
    """This process's place in the group of ranks, and the one collective the engine adds: the
    turn broadcast (an all-sum where only rank 0 contributes, as mlx-lm's server shares its
    requests)."""

    def __init__(self, group: mx.distributed.Group, backend: str, launcher: str) -> None:
        import mlx.core as mx
        from mlx_lm.generate import generation_stream

        self.mx = mx
        # Collectives run in the order their stream executes them, and each stream has its own
        # thread: the turn's all-sums must share mlx-lm's generation stream with the model's own
        # (whose step may still be running asynchronously), or two ranks could interleave the
        # two streams differently and pair one rank's turn with the other's activations.
        self.stream = generation_stream
        self.group = group
        self.rank: int = group.rank()
        self.size: int = group.size()
        self.backend = backend
        self.launcher = launcher
        self.pids = self._gather_pids()
        # the same random state on every rank: samplers without a seed of their own draw from it
        seed = self.mx.distributed.all_sum(
            self.mx.array(int.from_bytes(os.urandom(4), "little") >> 1 if self.rank == 0 else 0),
            group=self.group,
            stream=self.stream,
        )
        self.mx.random.seed(cast(int, seed.item()))

    @classmethod
    def join(cls, settings: Settings) -> Group | None:
        """The group of this process when a launcher started it as one of several ranks."""
        if launched_rank() is None:
            return None
        import mlx.core as mx

        backend = backend_from_launcher(settings.distributed_backend)
        group = mx.distributed.init(strict=True, backend=backend)
        if group.size() == 1:
            return None
        # through impetus (`--ranks`): the api process passed IMPETUS_RANKS_LAUNCHER
        launcher = os.environ.get("IMPETUS_RANKS_LAUNCHER", "external")
        g = cls(group, backend, launcher)
        log.info("rank %d of %d (%s backend), pid %d", g.rank, g.size, backend, os.getpid())
        return g

    @property
    def leader(self) -> bool:
        return self.rank == 0

    def info(self) -> RanksInfo:
        return RanksInfo(
            size=self.size, backend=self.backend, pids=self.pids, launcher=self.launcher
        )

    def _gather_pids(self) -> list[int]:
        mx = self.mx
        mine = mx.zeros(self.size, dtype=mx.int64)
        mine[self.rank] = os.getpid()
        pids = mx.distributed.all_sum(mine, group=self.group, stream=self.stream)
        return [int(p) for p in cast(list[int], pids.tolist())]

    def share(self, turn: Turn | None, digest: int) -> Turn:
        """Rank 0 passes its turn, the others None; every rank gets rank 0's turn. `digest` is the
        digest of the rank's previous step: a follower whose digest differs from rank 0's raises.

        One all-sum of a two-number header (payload size, rank 0's digest) every turn, and a
        second one of the payload only when there are commands, so an idle or plain decoding
        turn costs one small collective."""
        mx = self.mx
        try:
            payload = _encoder.encode(turn) if self.leader and turn is not None else b""
            if self.leader and turn is not None and not (turn.commands or turn.expire or turn.stop):
                payload = b""
            header = mx.array([len(payload), digest] if self.leader else [0, 0], dtype=mx.int64)
            summed = mx.distributed.all_sum(header, group=self.group, stream=self.stream)
            size, lead_digest = cast(list[int], summed.tolist())
            if size:
                data = (
                    mx.array(bytearray(payload), dtype=mx.uint8)
                    if self.leader
                    else mx.zeros(size, dtype=mx.uint8)
                )
                data = mx.distributed.all_sum(data, group=self.group, stream=self.stream)
                mx.eval(data)
                if not self.leader:
                    payload = bytes(memoryview(data))
        except RuntimeError as e:  # the ring backend: "connection to a peer was lost"
            raise RankFailure(f"rank {self.rank}: the group broke ({e})") from e
        if not self.leader and lead_digest != digest:
            raise RankFailure(
                f"rank {self.rank}: its last step's tokens differ from rank 0's; stopping the group"
            )
        if self.leader:
            return turn if turn is not None else Turn()
        return _turn_decoder.decode(payload) if payload else Turn()
