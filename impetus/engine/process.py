"""The engine process: `python -m impetus.engine.process --cmd ADDR --evt ADDR --settings JSON`.

One thread owns MLX. Each loop iteration takes every waiting message without blocking (blocking
only while idle), runs one batch step, and sends one message holding the events of every request
that produced something in that step.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
import traceback
from typing import Any

import msgpack
import zmq

from impetus.config import Settings

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
        self.out: list[dict[str, Any]] = []

    def send(self) -> None:
        if self.out:
            self.push.send(msgpack.packb(self.out, use_bin_type=True))
            self.out = []

    def run(self) -> None:
        from impetus.engine.types import GenerateRequest

        self.GenerateRequest = GenerateRequest
        self.out.append({"t": "hello", "pid": os.getpid(), "blas": self.core.blas})
        self.send()
        last_housekeeping = time.monotonic()
        while self.running:
            timeout = 0 if self.core.busy else IDLE_POLL_MS
            while self.pull.poll(timeout):
                raw = self.pull.recv()
                try:
                    self.handle(msgpack.unpackb(raw, raw=False, strict_map_key=False))
                except Exception:  # a malformed message must not take the engine down
                    log.exception("could not handle a message")
                timeout = 0
            if self.core.busy:
                try:
                    self.out.extend(self.core.step())
                except (
                    Exception
                ) as e:  # an MLX failure must not take the other requests' replies with it
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
        from impetus.engine.scheduler import ModelRunner

        for mid, runner in list(self.core.runners.items()):
            self.out.extend(runner.cancel_all("internal", message))
            runner.close()
            self.core.runners[mid] = ModelRunner(
                runner.loaded, self.core.settings, self.core.prompt_cache, self.core.stats
            )

    def handle(self, msg: dict[str, Any]) -> None:
        from impetus.engine.types import EngineError

        op = msg.get("op")
        if op == "generate":
            rid = msg["rid"]
            try:
                req = self.GenerateRequest.model_validate(msg["req"])
                self.out.extend(self.core.generate(rid, req, time.perf_counter()))
            except EngineError as e:
                self.out.append(
                    {
                        "t": "error",
                        "rid": rid,
                        "code": e.code,
                        "message": e.message,
                        "param": e.param,
                    }
                )
            except Exception as e:
                log.exception("generate failed")
                self.out.append(
                    {
                        "t": "error",
                        "rid": rid,
                        "code": "internal",
                        "message": f"{type(e).__name__}: {e}",
                    }
                )
        elif op == "cancel":
            self.out.extend(self.core.cancel(msg["rid"]))
        elif op == "call":
            reply: dict[str, Any] = {"t": "reply", "id": msg["id"], "ok": True}
            try:
                reply["result"] = self.call(msg["method"], msg.get("args") or {})
            except EngineError as e:
                reply.update(ok=False, code=e.code, message=e.message, param=e.param)
            except Exception as e:
                log.exception("%s failed", msg.get("method"))
                reply.update(ok=False, code="internal", message=f"{type(e).__name__}: {e}")
            self.out.append(reply)
            # replies (a load can take seconds) go out at once, not after the next step
            self.send()

    def call(self, method: str, args: dict[str, Any]) -> Any:
        core = self.core
        if method == "ping":
            return {"pid": os.getpid()}
        if method == "status":
            return core.status()
        if method == "load":
            mid = core.load(
                args["model"],
                args.get("dtype"),
                args.get("keep_alive"),
                allow_paths=args.get("allow_paths", True),
            )
            return next(m.model_dump() for m in core.model_states() if m.id == mid)
        if method == "unload":
            return {"unloaded": core.unload(args["model"])}
        if method == "embed":
            return core.embed(args["model"], list(args["texts"]))
        if method == "tokenize":
            runner = core.runners.get(core.load(args["model"]))
            if runner is None:
                raise ValueError("tokenize needs a chat model")
            req = self.GenerateRequest.model_validate(
                {"model": args["model"], **args.get("request", {})}
            )
            return {"tokens": runner.tokenize(req)}
        if method == "shutdown":
            self.running = False
            return {}
        raise ValueError(f"unknown method {method!r}")


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
    try:
        Server(settings, args.cmd, args.evt, blas).run()
    except Exception:
        traceback.print_exc()
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
