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


def _load_blas(settings: Settings) -> str:
    try:
        from impetus.engine.blas import load_optimized_blas
    except ImportError:
        return ""
    info = load_optimized_blas(settings.blas)
    return str(info.path) if info else ""


class Server:
    def __init__(self, settings: Settings, cmd: str, evt: str, blas: str) -> None:
        from impetus.engine.core import EngineCore  # imports MLX: only after the BLAS is in place

        self.core = EngineCore(settings, blas=blas)
        self.ctx = zmq.Context()
        self.pull = self.ctx.socket(zmq.PULL)
        self.pull.connect(cmd)
        self.push = self.ctx.socket(zmq.PUSH)
        self.push.setsockopt(zmq.LINGER, 2000)
        self.push.connect(evt)
        self.parent = os.getppid()
        self.running = True
        self.out: list[Message] = []

    def send(self) -> None:
        if self.core.outbox:
            self.out.extend(self.core.outbox)
            self.core.outbox.clear()
        if self.out:
            self.push.send(encode(self.out))
            self.out = []

    def run(self) -> None:
        self.out.append(Hello(pid=os.getpid(), blas=self.core.blas))
        self.send()
        last_housekeeping = time.monotonic()
        while self.running:
            timeout = 0 if self.core.busy else IDLE_POLL_MS
            while self.pull.poll(timeout):
                raw = self.pull.recv()
                try:
                    cmd = decode_command(raw)
                except msgspec.ValidationError as e:
                    self.refuse(raw, str(e))
                else:
                    try:
                        self.handle(cmd)
                    except Exception:  # a failing command must not take the engine down
                        log.exception("could not handle %s", type(cmd).__name__)
                timeout = 0
            if self.core.busy:
                try:
                    self.out.extend(self.core.step())
                except Exception as e:
                    # an MLX failure must not take the other requests' replies with it
                    log.exception("batch step failed")
                    self.fail_running(f"generation failed: {e}")
            self.send()
            now = time.monotonic()
            if now - last_housekeeping > 1.0:
                last_housekeeping = now
                if os.getppid() != self.parent:
                    log.warning("parent process went away; engine exiting")
                    break
                self.core.expire_idle()
        self.core.close()
        self.send()
        self.push.close(linger=1000)
        self.pull.close(linger=0)
        self.ctx.term()

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
            return core.embed(cmd.model, cmd.texts)
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
    parser.add_argument("--cmd", required=True)
    parser.add_argument("--evt", required=True)
    parser.add_argument("--settings", required=True, help="Settings as JSON")
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
    if not sys.stdin.readline():
        return 0
    try:
        Server(settings, args.cmd, args.evt, blas).run()
    except Exception:
        traceback.print_exc()
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
