"""Faults under load against a real `impetus serve`: the engine process killed mid-stream, a model
unloaded under its requests, KV caches and models that cannot fit the memory budget."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import psutil
import pytest

from tests.api.conftest import Server, long_chat
from tests.reliability.streams import sse_lines

STREAMS = 32
WHOLE = 8  # non-streaming requests in flight at the same time
RECOVERY_BOUND = 20.0  # the issue's: /ready back within 20 s of the kill


def assert_openai_error(body: object, code: str | None = None) -> None:
    assert isinstance(body, dict) and set(body) == {"error"}, body
    err = body["error"]
    assert set(err) == {"message", "type", "param", "code"} and err["message"], err
    if code is not None:
        assert err["code"] == code, err


@pytest.fixture(scope="module")
def fault_server(server_factory: Callable[..., Server], slow_model_dir: Path) -> Server:
    return server_factory("--model", str(slow_model_dir), "--max-queue", "256")


async def _stream(
    srv: Server, body: dict[str, object], started: asyncio.Event
) -> dict[str, object]:
    """Read one SSE stream to its end: what it ended with, and when."""
    out: dict[str, object] = {"chunks": 0, "error": None, "done": False}
    async with (
        httpx.AsyncClient(timeout=60) as c,
        c.stream("POST", srv.url("v1/chat/completions"), json=body, headers=srv.headers()) as r,
    ):
        out["status"] = r.status_code
        async for line in sse_lines(r):
            if not line.startswith("data: "):
                continue
            if line == "data: [DONE]":
                out["done"] = True
                continue
            data = json.loads(line[6:])
            if "error" in data:
                out["error"] = data
            else:
                out["chunks"] = int(out["chunks"]) + 1  # type: ignore[call-overload]
                started.set()
    out["ended"] = time.monotonic()
    return out


async def _whole(srv: Server, body: dict[str, object]) -> dict[str, object]:
    async with httpx.AsyncClient(timeout=60) as c:
        r = await c.post(srv.url("v1/chat/completions"), json=body, headers=srv.headers())
    return {"status": r.status_code, "body": r.json(), "ended": time.monotonic()}


def wait_for_spare(srv: Server, engine_pid: int, timeout: float = 60) -> int:
    """The pid of the spare engine process (engine_standby) beside the engine `engine_pid`."""
    deadline = time.monotonic() + timeout
    while True:
        spares = []
        for p in psutil.Process(srv.proc.pid).children():
            with contextlib.suppress(psutil.Error):  # one that exited meanwhile
                if "impetus.engine.process" in p.cmdline() and p.pid != engine_pid:
                    spares.append(p.pid)
        if spares:
            assert len(spares) == 1, spares
            return spares[0]
        assert time.monotonic() < deadline, "no spare engine process"
        time.sleep(0.1)


def test_sigkill_of_the_engine_while_32_clients_stream(
    fault_server: Server, slow_model_dir: Path
) -> None:
    srv = fault_server
    model = str(slow_model_dir)
    before = srv.get("admin/status").json()
    loaded_before = sorted(m["id"] for m in before["models"])
    spare = wait_for_spare(srv, before["pid"])

    async def main() -> tuple[float, list[dict[str, object]], list[dict[str, object]]]:
        firsts = [asyncio.Event() for _ in range(STREAMS)]
        streams = [
            asyncio.create_task(_stream(srv, long_chat(model, 2000, stream=True), firsts[i]))
            for i in range(STREAMS)
        ]
        wholes = [asyncio.create_task(_whole(srv, long_chat(model, 2000))) for _ in range(WHOLE)]
        await asyncio.wait_for(asyncio.gather(*(e.wait() for e in firsts)), 120)
        # every request admitted to the engine, every stream mid-way
        async with httpx.AsyncClient(timeout=30) as c:
            deadline = time.monotonic() + 60
            while True:
                st = (await c.get(srv.url("admin/status"), headers=srv.headers())).json()
                if st["stats"]["running"] + st["stats"]["waiting"] >= STREAMS + WHOLE:
                    break
                assert time.monotonic() < deadline, st["stats"]
                await asyncio.sleep(0.1)
        os.kill(before["pid"], signal.SIGKILL)
        killed = time.monotonic()
        return killed, list(await asyncio.gather(*streams)), list(await asyncio.gather(*wholes))

    killed, streamed, whole = asyncio.run(main())

    for s in streamed:
        # an error event in OpenAI's shape ends the stream; no [DONE], no hang
        assert s["status"] == 200 and int(s["chunks"]) > 0 and not s["done"], s  # type: ignore[call-overload]
        assert_openai_error(s["error"], "engine_restarted")
        assert float(s["ended"]) - killed < 2.0, s  # type: ignore[arg-type]
    for w in whole:
        assert w["status"] == 503, w
        assert_openai_error(w["body"], "engine_restarted")
        assert float(w["ended"]) - killed < 2.0, w  # type: ignore[arg-type]

    # /ready says so, then is back within 20 s with the same models: the spare engine process
    # (engine_standby) has its libraries imported already, so a restart only reloads the model.
    # docs/reliability.md records the measured times.
    saw_not_ready = False
    deadline = time.monotonic() + RECOVERY_BOUND
    while True:
        r = httpx.get(srv.url("ready"), timeout=10)
        if r.status_code == 503:
            saw_not_ready = True
            assert_openai_error(r.json(), "not_ready")
        elif r.status_code == 200 and saw_not_ready:
            break
        assert time.monotonic() < deadline, r.text
        time.sleep(0.05)
    recovered = time.monotonic() - killed
    print(f"engine back {recovered:.1f} s after the SIGKILL")
    after = srv.get("admin/status").json()
    assert after["pid"] != before["pid"] and after["restarts"] == before["restarts"] + 1
    assert after["pid"] == spare  # the spare took over; a new spare waits for the next crash
    wait_for_spare(srv, after["pid"])
    assert sorted(m["id"] for m in after["models"]) == loaded_before
    assert srv.metric("impetus:engine_restarts_total") == before["restarts"] + 1

    r = srv.post(
        "v1/chat/completions",
        {
            "model": model,
            "messages": [{"role": "user", "content": "hi"}],
            "max_tokens": 4,
            "ignore_eos": True,  # a random model may sample its end token early
        },
    )
    assert r.status_code == 200 and r.json()["usage"]["completion_tokens"] == 4


def test_unloading_a_model_fails_its_running_requests(
    fault_server: Server, tiny_model_dir: Path
) -> None:
    """Every request on a model that is unloaded gets 503 model_unloaded at once (they used to
    wait for the request time limit: the engine dropped their error events)."""
    srv = fault_server
    model = str(tiny_model_dir)
    assert srv.post("admin/models/load", {"id": model}).status_code == 200

    async def main() -> list[dict[str, object]]:
        started = asyncio.Event()
        tasks = [
            asyncio.create_task(_stream(srv, long_chat(model, 400, stream=True), started))
            for _ in range(4)
        ] + [asyncio.create_task(_whole(srv, long_chat(model, 400))) for _ in range(4)]
        await asyncio.wait_for(started.wait(), 60)
        async with httpx.AsyncClient(timeout=30) as c:
            r = await c.post(
                srv.url("admin/models/unload"), json={"id": model}, headers=srv.headers()
            )
            assert r.status_code == 200 and r.json()["unloaded"] is True
        return list(await asyncio.wait_for(asyncio.gather(*tasks), 30))

    results = asyncio.run(main())
    for res in results:
        if "body" in res:
            # finished before the unload, or refused by it
            assert res["status"] in (200, 503), res
            if res["status"] == 503:
                assert_openai_error(res["body"], "model_unloaded")
        elif not res["done"]:
            assert_openai_error(res["error"], "model_unloaded")
    assert any(r.get("status") == 503 or r.get("error") for r in results), (
        "at least one request ran into the unload"
    )
    assert srv.metric("impetus:engine_open_generations") == 0


# ---- out of memory ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def small_budget(server_factory: Callable[..., Server], slow_model_dir: Path) -> Server:
    # the slow model: ~16 MiB of float32 weights, 6 KiB of KV cache per token (6 layers, 2 KV
    # heads of 64, float32): a 64 MiB budget leaves ~48 MiB, i.e. ~8000 tokens of KV cache
    return server_factory("--model", str(slow_model_dir), "--memory-budget", "64M")


def test_a_kv_cache_that_cannot_fit_is_refused_not_oom_killed(
    small_budget: Server, slow_model_dir: Path
) -> None:
    srv = small_budget
    model = str(slow_model_dir)
    pid = srv.get("admin/status").json()["pid"]

    # n=16 on a long context: ~300 MiB of KV cache, more than the budget could ever give
    r = srv.post("v1/chat/completions", long_chat(model, 3000, n=16))
    assert r.status_code == 400, r.text
    assert_openai_error(r.json(), "kv_cache_too_large")
    assert r.json()["error"]["param"] == "n" and "MiB of KV cache" in r.json()["error"]["message"]

    # two choices running hold ~38 MiB; one more ~19 MiB does not fit beside them: 503, retry
    with httpx.stream(
        "POST",
        srv.url("v1/chat/completions"),
        json=long_chat(model, 3000, n=2, stream=True),
        headers=srv.headers(),
        timeout=60,
    ) as running:
        assert running.status_code == 200
        lines = running.iter_lines()  # kept: a dropped iterator closes the stream
        next(lines)  # admitted
        r = srv.post("v1/chat/completions", long_chat(model, 3000))
        assert r.status_code == 503 and r.headers["Retry-After"], r.text
        assert_openai_error(r.json(), "out_of_memory")
        assert r.json()["error"]["param"] == "max_tokens"
    # the stream is gone (disconnect cancels it): its reservation is given back
    deadline = time.monotonic() + 10
    while srv.metric("impetus:num_requests_running"):
        assert time.monotonic() < deadline
        time.sleep(0.1)
    r = srv.post("v1/chat/completions", long_chat(model, 50))
    assert r.status_code == 200, r.text
    st = srv.get("admin/status").json()
    assert st["pid"] == pid and st["restarts"] == 0  # never killed


def test_a_model_that_cannot_fit_is_refused_before_anything_is_unloaded(
    small_budget: Server, slow_model_dir: Path, tiny_model_dir: Path, tmp_path: Path
) -> None:
    srv = small_budget
    # an idle, unpinned model: evictable
    assert (
        srv.post("admin/models/load", {"id": str(tiny_model_dir), "keep_alive": 600}).status_code
        == 200
    )
    # a model bigger than the whole budget (the slow model at 4x its layers)
    from tests.tiny_model import build_tiny_llama

    big = build_tiny_llama(tmp_path / "big", hidden=512, layers=8)
    r = srv.post("admin/models/load", {"id": str(big)})
    assert r.status_code == 503, r.text
    assert_openai_error(r.json(), "out_of_memory")
    assert "MiB" in r.json()["error"]["message"]
    loaded = {m["id"] for m in srv.get("admin/status").json()["models"]}
    assert {str(tiny_model_dir), str(slow_model_dir)} <= loaded  # nothing was unloaded for it
