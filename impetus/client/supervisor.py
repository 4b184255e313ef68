"""`python -m impetus.client --exit-with PID -- CMD...`: the private server's supervisor.

It stands between a kernel and its private `impetus serve`, and stops the server when the kernel
dies without running atexit (killed by a restart or by the OOM killer).
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess


def supervise(parent: int, cmd: list[str], poll: float = 1.0) -> int:
    """Run `cmd`; stop it when `parent` goes away. Signals to us are passed on to it."""
    child = subprocess.Popen(cmd)

    def forward(signum: int, _frame: object) -> None:
        with contextlib.suppress(ProcessLookupError):
            child.send_signal(signum)

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, forward)
    while True:
        try:
            return child.wait(poll)
        except subprocess.TimeoutExpired:
            pass
        if os.getppid() != parent:  # re-parented: the process that started us is gone
            child.terminate()
            try:
                return child.wait(15.0)
            except subprocess.TimeoutExpired:
                child.kill()
                return child.wait()


def main(argv: list[str]) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="python -m impetus.client")
    parser.add_argument("--exit-with", type=int, required=True, metavar="PID")
    parser.add_argument("cmd", nargs=argparse.REMAINDER)
    args = parser.parse_args(argv)
    cmd = args.cmd[1:] if args.cmd[:1] == ["--"] else args.cmd
    if not cmd:
        parser.error("no command")
    return supervise(args.exit_with, cmd)
