"""SIGTERM on `impetus serve`: stop accepting, finish what is in flight (within the grace period), exit."""

from __future__ import annotations

import json
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from tests.api.conftest import Server, long_chat


def _stream(
    srv: Server, body: dict[str, object], started: threading.Event, out: list[object]
) -> None:
    try:
        with httpx.stream(
            "POST", srv.url("v1/chat/completions"), json=body, headers=srv.headers(), timeout=120
        ) as r:
            events = []
            for line in r.iter_lines():
                if line.startswith("data: "):
                    events.append(line[len("data: ") :])
                    started.set()
            out.append((r.status_code, events))
    except Exception as e:  # recorded, asserted on in the test
        out.append(e)
        started.set()


def _start_streams(
    srv: Server, model: str, count: int, max_tokens: int
) -> tuple[list[threading.Thread], list[object]]:
    results: list[object] = []
    threads, flags = [], []
    body = long_chat(model, max_tokens, stream=True, stream_options={"include_usage": True})
    for _ in range(count):
        started = threading.Event()
        t = threading.Thread(target=_stream, args=(srv, body, started, results), daemon=True)
        t.start()
        threads.append(t)
        flags.append(started)
    for f in flags:
        assert f.wait(60), "a stream never started"
    return threads, results


def _refuses_connections(srv: Server, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            httpx.get(srv.url("health"), timeout=1.0)
        except httpx.ConnectError:
            return True
        except httpx.TransportError:
            pass
        time.sleep(0.05)
    return False


def test_sigterm_loses_no_request_in_flight(
    server_factory: Callable[..., Server], slow_model_dir: Path
) -> None:
    srv = server_factory("--model", str(slow_model_dir), "--shutdown-grace", "60")
    keep_alive = httpx.Client(headers=srv.headers(), timeout=30)
    assert keep_alive.get(srv.url("ready")).status_code == 200  # a connection opened before
    threads, results = _start_streams(srv, str(slow_model_dir), count=6, max_tokens=300)
    srv.proc.send_signal(signal.SIGTERM)
    assert _refuses_connections(srv), "new connections were still accepted while draining"
    # requests on a connection that was already open are answered, with 503
    ready = keep_alive.get(srv.url("ready"))
    assert ready.status_code == 503 and "shutting down" in ready.json()["error"]["message"]
    late = keep_alive.post(srv.url("v1/chat/completions"), json=long_chat(str(slow_model_dir), 5))
    assert late.status_code == 503 and late.json()["error"]["code"] == "shutting_down"
    keep_alive.close()
    for t in threads:
        t.join(90)
    assert srv.proc.wait(60) == 0
    assert len(results) == 6
    for res in results:
        assert not isinstance(res, Exception), res
        status, events = res  # type: ignore[misc]
        assert status == 200
        assert events[-1] == "[DONE]"
        usage = json.loads(events[-2])["usage"]
        assert usage["completion_tokens"] == 300  # every token, nothing cut short
    assert "draining" in srv.log_text()


def test_grace_period_over_cancels_the_rest(
    server_factory: Callable[..., Server], slow_model_dir: Path
) -> None:
    srv = server_factory("--model", str(slow_model_dir), "--shutdown-grace", "1")
    threads, results = _start_streams(srv, str(slow_model_dir), count=2, max_tokens=3000)
    start = time.monotonic()
    srv.proc.send_signal(signal.SIGTERM)
    for t in threads:
        t.join(60)
    assert srv.proc.wait(60) == 0
    assert time.monotonic() - start < 30  # not the ~15 s x 2 the requests wanted, plus engine stop
    for res in results:
        assert not isinstance(res, Exception), res
        status, events = res  # type: ignore[misc]
        assert status == 200
        err = json.loads(events[-1])["error"]
        assert err["code"] == "shutting_down"


@pytest.mark.parametrize("sig", [signal.SIGINT])
def test_sigint_stops_an_idle_server(server_factory: Callable[..., Server], sig: int) -> None:
    srv = server_factory(ready=False)
    srv.wait_ready_or_engine()
    start = time.monotonic()
    srv.proc.send_signal(sig)
    assert srv.proc.wait(60) == 0
    assert time.monotonic() - start < 20
