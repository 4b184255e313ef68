"""Debian's nginx in the foreground on loopback ports, running the shipped deploy/nginx/ files.

The shipped files are copied into a private prefix as they are, with only the machine-specific
lines rewritten (listen addresses, upstream servers, certificate paths): each rewrite must match
exactly as often as expected, so a change to the shipped files that the test would no longer
exercise fails here instead of passing unnoticed.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

import httpx
import pytest

DEPLOY = Path(__file__).resolve().parents[2] / "deploy" / "nginx"
NGINX = shutil.which("nginx") or "/usr/sbin/nginx"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def rewrite(text: str, pattern: str, repl: str, count: int) -> str:
    new, n = re.subn(pattern, repl, text, flags=re.MULTILINE)
    assert n == count, f"expected {count} match(es) of {pattern!r} in the shipped config, got {n}"
    return new


HASH = r"^\s*hash \$http_x_session_id consistent;\n"  # the conversation routing line


def render_upstream(addresses: list[str], hashing: bool = True) -> str:
    """impetus-upstream.conf with its `server` lines pointed at the test replicas; without
    `hashing`, its consistent-hashing line removed (plain round robin)."""
    text = (DEPLOY / "impetus-upstream.conf").read_text()
    text = rewrite(text, HASH, r"\g<0>" if hashing else "", 1)  # (the line must be there)
    lines = re.findall(r"^\s*server \S+(.*);$", text, flags=re.MULTILINE)
    assert len(lines) >= 1
    options = lines[0]  # the options of the shipped lines (max_fails=0 ...), kept
    text = re.sub(r"^\s*server \S+.*;\n", "", text, flags=re.MULTILINE)
    servers = "".join(f"    server {a}{options};\n" for a in addresses)
    return text.replace("    keepalive", servers + "    keepalive", 1)


class Nginx:
    """One nginx master (plus one worker) with a private prefix; stopped by `stop()`."""

    def __init__(self, prefix: Path) -> None:
        if not os.path.exists(NGINX):
            pytest.fail("nginx is not installed (make test installs Debian's nginx package)")
        self.prefix = prefix
        for sub in ("snippets", "conf.d", "sites", "logs", "tmp"):
            (prefix / sub).mkdir(parents=True, exist_ok=True)
        for snippet in ("impetus-proxy.conf", "impetus-errors.conf"):
            shutil.copy(DEPLOY / snippet, prefix / "snippets" / snippet)
        self.proc: subprocess.Popen[bytes] | None = None

    def site(self, name: str, text: str) -> None:
        (self.prefix / "sites" / name).write_text(text)

    def conf(self, name: str, text: str) -> None:
        (self.prefix / "conf.d" / name).write_text(text)

    def _main_conf(self) -> Path:
        p = self.prefix
        # as root (CI), workers would run as `nobody` and could not enter the private temp dirs
        user = "user root;\n" if os.geteuid() == 0 else ""
        temp = "".join(
            f"    {kind}_temp_path {p}/tmp/{kind};\n"
            for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
        )
        main = (
            f"{user}daemon off;\nworker_processes 1;\npid {p}/nginx.pid;\n"
            f"error_log {p}/logs/error.log info;\n"
            "events { worker_connections 512; }\n"
            "http {\n"
            f"    access_log {p}/logs/access.log;\n{temp}"
            # A server set up to compress API responses everywhere, and that ignores the
            # `X-Accel-Buffering: no` impetus sends: the shipped files must stream regardless.
            "    gzip on;\n"
            "    gzip_types application/json text/event-stream;\n"
            "    proxy_ignore_headers X-Accel-Buffering;\n"
            "    include conf.d/*.conf;\n"
            "    include sites/*;\n"
            "}\n"
        )
        path = p / "nginx.conf"
        path.write_text(main)
        return path

    def start(self) -> None:
        conf = self._main_conf()
        check = subprocess.run(
            [NGINX, "-t", "-p", str(self.prefix), "-c", str(conf)], capture_output=True, text=True
        )
        assert check.returncode == 0, check.stderr
        self.proc = subprocess.Popen(
            [NGINX, "-p", str(self.prefix), "-c", str(conf)],
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        deadline = time.monotonic() + 20
        while not (self.prefix / "nginx.pid").exists():
            assert self.proc.poll() is None, self.error_log()
            assert time.monotonic() < deadline, "nginx did not start:\n" + self.error_log()
            time.sleep(0.05)

    def wait_http(self, url: str, verify: object = True) -> None:
        deadline = time.monotonic() + 20
        while True:
            try:
                httpx.get(url, timeout=2, verify=verify)  # type: ignore[arg-type]
                return
            except httpx.TransportError:
                assert time.monotonic() < deadline, self.error_log()
                time.sleep(0.05)

    def error_log(self) -> str:
        log = self.prefix / "logs" / "error.log"
        return log.read_text(errors="replace")[-4000:] if log.exists() else ""

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGQUIT)  # graceful: finish what is in flight
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)
