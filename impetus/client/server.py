"""A private `impetus serve` for a process that finds no server (papermill in CI, scripts)."""

from __future__ import annotations

import atexit
import contextlib
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable, Mapping
from pathlib import Path

import httpx

from impetus.client.errors import ServerUnavailable

DEFAULT_MODEL = "smollm2-135m"
# How long `impetus serve` may take to answer /health (first start converts the default model).
SERVER_START_TIMEOUT = float(os.environ.get("IMPETUS_SERVER_START_TIMEOUT", 300.0))


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class PrivateServer:
    """An `impetus serve` child on loopback with auth off, stopped (with its engine) at exit."""

    def __init__(
        self,
        model: str | None = DEFAULT_MODEL,
        *,
        port: int | None = None,
        extra_args: Iterable[str] = (),
        env: Mapping[str, str] | None = None,
    ) -> None:
        self.model = model
        self.port = port or _free_port()
        self.extra_args = list(extra_args)
        self.env = dict(env) if env is not None else None
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path: Path | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/"

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def command(self) -> list[str]:
        cmd = [sys.executable, "-m", "impetus.cli", "serve", "--host", "127.0.0.1"]
        # This process's own server: a model folder named by path works as in a script
        cmd += ["--port", str(self.port), "--no-auth", "--allow-model-paths"]
        if self.model:
            cmd += ["--model", self.model]
        return cmd + self.extra_args

    def _child_env(self) -> dict[str, str]:
        env = dict(self.env if self.env is not None else os.environ)
        # The child must import the same impetus as this process, installed or not.
        root = str(Path(__file__).resolve().parents[2])
        paths = [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
        if root not in paths:
            env["PYTHONPATH"] = os.pathsep.join([root, *paths])
        # A kernel's variables must not leak in: the server would take IMPETUS_API_KEY as its key
        # (contradicting --no-auth), and JPY_PARENT_PID names a Jupyter server it is not part of.
        for name in ("JPY_PARENT_PID", "IMPETUS_API_KEY", "IMPETUS_URL"):
            env.pop(name, None)
        return env

    def start(self, timeout: float = SERVER_START_TIMEOUT) -> None:
        if self.running:
            return
        fd, log = tempfile.mkstemp(prefix="impetus-serve-", suffix=".log")
        self.log_path = Path(log)
        # A supervisor between us and the server: it stops the server when this process dies
        # without running atexit (a kernel killed by a restart or the OOM killer).
        supervised = [sys.executable, "-m", "impetus.client", "--exit-with", str(os.getpid())]
        with os.fdopen(fd, "wb") as log_file:
            self.proc = subprocess.Popen(
                [*supervised, "--", *self.command()],
                stdin=subprocess.DEVNULL,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                env=self._child_env(),
                # own process group: stop() takes the engine process down with the server
                start_new_session=True,
            )
        atexit.register(self.stop)
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise ServerUnavailable(
                    f"impetus serve exited with code {self.proc.returncode}:\n{self.log_tail()}"
                )
            try:
                if httpx.get(self.base_url + "health", timeout=2.0).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                self.stop()
                raise ServerUnavailable(
                    f"impetus serve did not answer within {timeout:.0f} s:\n{self.log_tail()}"
                )
            time.sleep(0.2)

    def log_tail(self, chars: int = 4000) -> str:
        if self.log_path is None or not self.log_path.exists():
            return ""
        return self.log_path.read_text(errors="replace")[-chars:]

    def stop(self, timeout: float = 10.0) -> None:
        proc, self.proc = self.proc, None
        if proc is None:
            return
        with contextlib.suppress(ValueError):
            atexit.unregister(self.stop)
        if proc.poll() is None:
            for sig in (signal.SIGTERM, signal.SIGKILL):
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(proc.pid, sig)
                try:
                    proc.wait(timeout)
                    break
                except subprocess.TimeoutExpired:
                    continue
        if self.log_path is not None:
            with contextlib.suppress(OSError):
                self.log_path.unlink()

    def __enter__(self) -> PrivateServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
