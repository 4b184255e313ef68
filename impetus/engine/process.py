"""The engine process: `python -m impetus.engine.process --cmd ADDR --evt ADDR --settings JSON`.

One thread owns MLX. Each loop iteration takes every waiting command without blocking (blocking
only while idle), runs one batch step, and sends one frame holding the events of every request
that produced something in that step. Commands and events are `impetus.protocol` types, typed by
the msgpack decoder itself.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
import traceback
from typing import Any

import msgspec
import zmq
from msgspec import Raw

from impetus.config import Settings
from impetus.engine.distributed import Group, RankFailure, Turn, step_digest
from impetus.protocol import (
    Call,
    Cancel,
    Command,
    Embed,
    EngineError,
    ErrorInfo,
    Failed,
    Generate,
    GetStatus,
    Hello,
    Load,
    Message,
    Ping,
    Reply,
    Shutdown,
    Tokenize,
    Unload,
    decode_command,
    encode,
)

log = logging.getLogger("impetus.engine")

IDLE_POLL_MS = 500
# In a group of ranks an idle turn comes this often. The followers wait for rank 0's turns
# inside a collective, and MLX's ring backend waits there by polling its sockets (measured: a
# whole core per idle follower), so every rank sleeps this long between idle turns instead
# (~3% of a core per rank), and a command arriving meanwhile waits at most this long.
IDLE_TURN_MS = 50


def _load_blas(settings: Settings) -> str:
    try:
        from impetus.engine.blas import load_optimized_blas
    except ImportError:
        return ""
    info = load_optimized_blas(settings.blas)
    return str(info.path) if info else ""


class Server:
    """The loop of one engine process. In a group of ranks (impetus.engine.distributed) rank 0
    runs it with the sockets and shares each turn's commands; the other ranks run the same loop
    on the shared turns, without sockets, and drop the events they produce."""

    def __init__(
        self,
        settings: Settings,
        cmd: str | None,
        evt: str | None,
        blas: str,
        group: Group | None = None,
        api_pid: int | None = None,
    ) -> None:
        from impetus.engine.core import EngineCore  # imports MLX: only after the BLAS is in place

        self.group = group
        self.leader = group is None or group.leader
        self.core = EngineCore(settings, blas=blas, group=group)
        self.ctx = zmq.Context()
        self.pull: zmq.Socket[bytes] | None = None
        self.push: zmq.Socket[bytes] | None = None
        if self.leader:
            assert cmd and evt, "rank 0 needs the api's sockets"
            self.pull = self.ctx.socket(zmq.PULL)
            self.pull.connect(cmd)
            self.push = self.ctx.socket(zmq.PUSH)
            self.push.setsockopt(zmq.LINGER, 2000)
            self.push.connect(evt)
        self.parent = os.getppid()
        # under mlx.launch the parent is the launcher, which outlives a killed api: watch both
        self.api_pid = api_pid
        self.running = True
        self.out: list[Message] = []
        self.digest = 0  # of the last step's tokens (compared between ranks)

    def send(self) -> None:
        if self.core.outbox:
            self.out.extend(self.core.outbox)
            self.core.outbox.clear()
        if self.out and self.push is not None:
            self.push.send(encode(self.out))
        elif self.out:
            # a follower's events go nowhere; its errors are logged (rank 0 reports them too)
            for msg in self.out:
                error = msg.error if isinstance(msg, Failed | Reply) else None
                if error is not None:
                    log.warning(
                        "rank %s: %s: %s",
                        self.group.rank if self.group else 0,
                        error.code,
                        error.message,
                    )
        self.out = []

    def run(self) -> None:
        if self.leader:
            ranks = self.group.info() if self.group else None
            self.out.append(Hello(pid=os.getpid(), blas=self.core.blas, ranks=ranks))
            self.send()
        last_housekeeping = time.monotonic()
        while self.running:
            commands: list[bytes] = []
            expire: list[str] = []
            stop = False
            idle = not self.core.busy
            if self.pull is not None:
                timeout = 0 if not idle else IDLE_TURN_MS if self.group else IDLE_POLL_MS
                while self.pull.poll(timeout):
                    commands.append(self.pull.recv())
                    timeout = 0
                now = time.monotonic()
                if now - last_housekeeping > 1.0:
                    last_housekeeping = now
                    if self.parent_gone():
                        log.warning("parent process went away; engine exiting")
                        stop = True
                    expire = self.core.expired()
            elif idle:
                time.sleep(IDLE_TURN_MS / 1000)  # a follower: rank 0 sleeps as long in its poll
            if self.group is not None:
                turn = self.group.share(Turn(commands, expire, stop), self.digest)
                commands, expire, stop = turn.commands, turn.expire, turn.stop
            for raw in commands:
                self.take(raw)
            for mid in expire:
                log.info("unloading %s: idle for longer than its keep-alive", mid)
                self.core.unload(mid)
            if stop:
                break
            if self.core.busy:
                try:
                    events = self.core.step()
                except Exception as e:
                    if self.group is not None:
                        # the other ranks are inside the same step's collectives: the group
                        # cannot go on, and the api restarts it
                        raise RankFailure(f"rank {self.group.rank}: batch step failed: {e}") from e
                    # an MLX failure must not take the other requests' replies with it
                    log.exception("batch step failed")
                    self.fail_running(f"generation failed: {e}")
                else:
                    if self.group is not None:
                        self.digest = step_digest(events)
                    self.out.extend(events)
            self.send()
        self.core.close()
        self.send()
        if self.push is not None:
            self.push.close(linger=1000)
        if self.pull is not None:
            self.pull.close(linger=0)
        self.ctx.term()

    def parent_gone(self) -> bool:
        if os.getppid() != self.parent:
            return True
        if self.api_pid is not None:
            try:
                os.kill(self.api_pid, 0)
            except ProcessLookupError:
                return True
            except PermissionError:
                pass
        return False

    def take(self, raw: bytes) -> None:
        """One raw command off the socket (or out of rank 0's turn)."""
        try:
            cmd = decode_command(raw)
        except msgspec.ValidationError as e:
            self.refuse(raw, str(e))
        else:
            try:
                self.handle(cmd)
            except Exception:  # a failing command must not take the engine down
                log.exception("could not handle %s", type(cmd).__name__)

    def fail_running(self, message: str) -> None:
        for mid, runner in list(self.core.runners.items()):
            self.out.extend(runner.cancel_all("internal", message))
            runner.close()
            self.core.runners[mid] = self.core.runner(runner.loaded)

    def refuse(self, raw: bytes, why: str) -> None:
        """A command that does not decode (a Struct built with values out of range: its
        constructor does not check them) is answered with an error, so that no caller waits."""
        try:
            tag, key = msgspec.msgpack.decode(raw)[:2]
        except Exception:
            log.error("undecodable command dropped: %s", why)
            return
        info = ErrorInfo(code="invalid_request", message=f"invalid {tag} command: {why}")
        if tag == "generate" and isinstance(key, str):
            self.out.append(Failed(rid=key, error=info))
        elif isinstance(key, int):
            self.out.append(Reply(id=key, error=info))
            self.send()
        else:
            log.error("invalid %s command dropped: %s", tag, why)

    def handle(self, cmd: Command) -> None:
        """One command, already typed by the decoder: no second validation here."""
        if isinstance(cmd, Generate):
            try:
                self.out.extend(self.core.generate(cmd.rid, cmd.request, time.perf_counter()))
            except EngineError as e:
                self.out.append(Failed(rid=cmd.rid, error=e.info))
            except Exception as e:
                log.exception("generate failed")
                info = ErrorInfo(code="internal", message=f"{type(e).__name__}: {e}")
                self.out.append(Failed(rid=cmd.rid, error=info))
        elif isinstance(cmd, Cancel):
            self.out.extend(self.core.cancel(cmd.rid))
        else:
            try:
                reply = Reply(id=cmd.id, result=Raw(encode(self.call(cmd))))
            except EngineError as e:
                reply = Reply(id=cmd.id, error=e.info)
            except Exception as e:
                log.exception("%s failed", type(cmd).__name__)
                info = ErrorInfo(code="internal", message=f"{type(e).__name__}: {e}")
                reply = Reply(id=cmd.id, error=info)
            self.out.append(reply)
            # replies (a load can take seconds) go out at once, not after the next step
            self.send()

    def call(self, cmd: Call) -> Any:
        """The result of a call, of the type its command documents (see impetus.protocol)."""
        core = self.core
        if isinstance(cmd, Ping):
            return os.getpid()
        if isinstance(cmd, GetStatus):
            return core.status()
        if isinstance(cmd, Load):
            mid = core.load(cmd.model, cmd.dtype, cmd.keep_alive, allow_paths=cmd.allow_paths)
            return next(m for m in core.model_states() if m.id == mid)
        if isinstance(cmd, Unload):
            return core.unload(cmd.model)
        if isinstance(cmd, Embed):
            return core.embed(cmd.model, cmd.texts, compute=self.leader)
        if isinstance(cmd, Tokenize):
            runner = core.runners.get(core.load(cmd.request.model))
            if runner is None:
                raise EngineError("invalid_request", "tokenize needs a chat model", "model")
            return runner.tokenize(cmd.request)
        if isinstance(cmd, Shutdown):
            self.running = False
            return None
        raise EngineError("internal", f"unknown call {type(cmd).__name__}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="impetus-engine")
    parser.add_argument("--cmd", help="the api's command socket (rank 0 only)")
    parser.add_argument("--evt", help="the api's event socket (rank 0 only)")
    parser.add_argument("--settings", required=True, help="Settings as JSON")
    parser.add_argument("--api-pid", type=int, help="exit when this process is gone")
    parser.add_argument(
        "--now",
        action="store_true",
        help="start at once instead of waiting for a line on stdin (a follower rank started by "
        "an outside launcher: no api tells it to go)",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=os.environ.get("IMPETUS_LOG_LEVEL", "INFO"),
        format="[impetus-engine %(asctime)s %(levelname)s] %(message)s",
        stream=sys.stderr,
    )
    settings = Settings.model_validate_json(args.settings)
    blas = _load_blas(settings)
    import impetus.engine.core  # noqa: F401 - MLX, mlx-lm, transformers: seconds, done before "go"

    # The api starts this process as a spare (engine_standby) and writes a line when it needs
    # it: only then does it connect, as the one engine. End of input: not needed, exit.
    if not args.now and not sys.stdin.readline():
        return 0
    try:
        group = Group.join(settings)
        if (group is None or group.leader) and not (args.cmd and args.evt):
            parser.error("--cmd and --evt are required (except on ranks other than 0)")
        Server(settings, args.cmd, args.evt, blas, group, args.api_pid).run()
    except RankFailure as e:
        # the launcher stops the other ranks when one exits with an error
        log.error("%s", e)
        return 3
    except Exception:
        traceback.print_exc()
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
