"""Zero downtime: two `impetus serve` replicas behind the shipped nginx files, restarted one after
the other (SIGTERM, start again, wait for /ready, then the other) while `impetus bench serve`
sends a steady stream of requests through nginx. No request may fail."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.api.conftest import ADMIN_KEY, Server, start_server
from tests.deploy.nginx import DEPLOY, Nginx, free_port, render_upstream, rewrite

RATE, REQUESTS = 4.0, 200  # 50 s of traffic: room for two restarts on a loaded 2-core machine


class Replica:
    """One replica: its port and home stay the same across restarts, like a systemd unit's."""

    def __init__(self, model: Path, home: Path) -> None:
        self.model, self.home, self.port = model, home, free_port()
        self.server: Server | None = None
        self.logs: list[str] = []

    def start(self, wait: bool = True) -> None:
        self.server = start_server(
            ["--model", str(self.model), "--port", str(self.port), "--shutdown-grace", "60"],
            self.home,
        )
        if wait:
            self.server.wait_ready()

    def restart(self) -> None:
        """SIGTERM while it serves a long stream (which must finish: the drain), start it again,
        return once it is ready."""
        assert self.server is not None
        long = self.server.openai().chat.completions.create(
            model=str(self.model),
            messages=[{"role": "user", "content": "Tell me a long story."}],
            max_tokens=400,
            stream=True,
            stream_options={"include_usage": True},
            extra_body={"ignore_eos": True},
        )
        chunks = [next(long)]  # it runs
        assert self.server.proc.poll() is None
        self.server.proc.send_signal(signal.SIGTERM)
        chunks += list(long)
        assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 400
        assert self.server.stop() == 0
        self.logs.append(self.server.log_text())
        self.start()

    def stop(self) -> None:
        if self.server is not None:
            self.server.stop()


@pytest.fixture
def replicas(tiny_model_dir: Path, tmp_path: Path) -> Iterator[list[Replica]]:
    pair = [Replica(tiny_model_dir, tmp_path / f"replica-{i}") for i in range(2)]
    try:
        for r in pair:
            r.start(wait=False)  # both start at once
        for r in pair:
            assert r.server is not None
            r.server.wait_ready()
        yield pair
    finally:
        for r in pair:
            r.stop()


def test_rolling_restart_loses_no_request(
    replicas: list[Replica], tiny_model_dir: Path, tmp_path: Path
) -> None:
    nginx = Nginx(tmp_path / "nginx")
    nginx.conf("impetus-upstream.conf", render_upstream([f"127.0.0.1:{r.port}" for r in replicas]))
    port = free_port()
    site = (DEPLOY / "impetus.conf").read_text()
    site = rewrite(site, r"^\s*listen 80;$", f"    listen 127.0.0.1:{port};", 1)
    nginx.site("impetus", rewrite(site, r"^\s*listen \[::\]:80;\n", "", 1))
    nginx.start()
    bench = None
    try:
        nginx.wait_http(f"http://127.0.0.1:{port}/health")
        bench = subprocess.Popen(
            [
                sys.executable, "-m", "impetus.cli", "bench", "serve",
                "--base-url", f"http://127.0.0.1:{port}/v1",
                "--model", str(tiny_model_dir),
                "--tokenizer", str(tiny_model_dir),
                "--api-key", ADMIN_KEY,
                "--rate", str(RATE), "--requests", str(REQUESTS),
                "--prompt-tokens", "32", "--max-tokens", "64",
                "--warmup", "0", "--timeout", "120",
                "--json", "--no-store", "--quiet",
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )  # fmt: skip
        for r in replicas:
            r.restart()
            assert bench.poll() is None, (
                "the benchmark ended before the restarts did: raise REQUESTS"
            )
        out, err = bench.communicate(timeout=300)
    finally:
        if bench is not None and bench.poll() is None:
            bench.kill()
        nginx.stop()
    assert bench.returncode == 0, err
    profile = json.loads(out)["profiles"][0]
    assert profile["requests"] == REQUESTS
    assert profile["failed"] == 0, profile["failure_reasons"]
    assert profile["completed"] == REQUESTS
    assert profile["short_outputs"] == 0  # every request got all its tokens
    for r in replicas:
        # each replica was stopped while it served, and let its requests finish
        (log,) = r.logs
        assert "draining" in log and "waiting up to" in log and "cancelled" not in log
