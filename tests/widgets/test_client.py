"""impetus.client against a real `impetus serve` (tiny model)."""

from __future__ import annotations

import os
import time
from pathlib import Path

import psutil
import pytest

from impetus.client import (
    Endpoint,
    ImpetusClient,
    ImpetusError,
    PrivateServer,
    ServerUnavailable,
    find_endpoint,
    parse_metrics,
)
from tests.widgets.helpers import wait_for

HI = [{"role": "user", "content": "Hello, world! How are you today?"}]


def test_status_and_model_lists(client: ImpetusClient, tiny_model: str) -> None:
    status = client.status()
    assert status.state == "ready"
    assert any(m.id == tiny_model for m in status.models)
    assert tiny_model in [m.id for m in client.served_models()]
    assert isinstance(client.models(), list)
    assert client.health()


def test_chat_stream_yields_deltas_and_usage(client: ImpetusClient) -> None:
    stream = client.chat_stream(HI, max_tokens=24, temperature=0.0)
    deltas = list(stream)
    result = stream.result
    assert result is not None
    assert len(deltas) > 1, "one delta per engine step, not one blob"
    assert result.text == "".join(deltas)
    assert result.completion_tokens is not None and 0 < result.completion_tokens <= 24
    assert result.prompt_tokens and result.prompt_tokens > 5
    assert result.ttft is not None and 0 < result.ttft <= result.elapsed
    assert result.finish_reason in ("stop", "length")


def test_closing_the_stream_cancels_in_the_engine(client: ImpetusClient) -> None:
    before = client.status().stats.generation_tokens_total
    max_tokens = 400
    stream = client.chat_stream(HI, max_tokens=max_tokens, temperature=1.0, ignore_eos=True)
    got = []
    for delta in stream:
        got.append(delta)
        if len(got) == 3:
            stream.close()
    assert stream.result is not None and stream.result.finish_reason == "cancelled"
    wait_for(lambda: client.status().stats.running == 0, timeout=10)
    generated = client.status().stats.generation_tokens_total - before
    assert generated < max_tokens, "the engine went on generating after the client left"


def test_non_streaming_calls(client: ImpetusClient, tiny_model: str) -> None:
    out = client.chat(HI, max_tokens=8, temperature=0.0)
    assert out["choices"][0]["message"]["role"] == "assistant"
    assert out["usage"]["completion_tokens"] <= 8
    comp = client.completions("The quick brown fox", max_tokens=8, temperature=0.0)
    assert comp["choices"][0]["text"] is not None


def test_errors_arrive_in_openai_shape(client: ImpetusClient) -> None:
    with pytest.raises(ImpetusError) as info:
        client.chat(HI, model="no-such-model", max_tokens=4)
    assert info.value.status == 404
    assert info.value.code == "model_not_found"
    with pytest.raises(ImpetusError) as info:
        list(client.chat_stream(HI, max_tokens=4, temperature=5.0))
    assert info.value.status == 400


def test_metrics_parse(client: ImpetusClient) -> None:
    client.chat(HI, max_tokens=4)
    metrics = parse_metrics(client.metrics())
    assert any(
        k.endswith("time_to_first_token_seconds_count") and v > 0 for k, v in metrics.items()
    )


def test_openai_helper_talks_to_the_server(client: ImpetusClient, tiny_model: str) -> None:
    oai = client.openai()
    out = oai.chat.completions.create(model=tiny_model, messages=HI, max_tokens=8)  # type: ignore[arg-type]
    assert out.usage is not None and out.usage.completion_tokens <= 8
    chunks = list(
        oai.chat.completions.create(
            model=tiny_model,
            messages=HI,
            max_tokens=8,
            stream=True,
            stream_options={"include_usage": True},  # type: ignore[arg-type]
        )
    )
    assert chunks[-1].usage is not None


def test_unreachable_server_fails_fast() -> None:
    port = PrivateServer(None).port  # free now, nobody listens
    with ImpetusClient(f"http://127.0.0.1:{port}/") as c:
        started = time.monotonic()
        with pytest.raises(ServerUnavailable):
            c.status()
        assert not c.health()
        assert time.monotonic() - started < 10


def test_find_endpoint_prefers_impetus_url(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("IMPETUS_URL", "http://127.0.0.1:9/base")
    monkeypatch.setenv("IMPETUS_API_KEY", "sk-test")
    ep = find_endpoint()
    assert (ep.base_url, ep.api_key, ep.source) == ("http://127.0.0.1:9/base/", "sk-test", "env")
    assert ep.headers()["Authorization"] == "Bearer sk-test"


def test_private_server_stops_with_its_engine(impetus_home: object) -> None:
    srv = PrivateServer(None)
    srv.start(timeout=180)
    try:
        with ImpetusClient(endpoint=Endpoint(srv.base_url)) as c:
            engine_pid = wait_for(lambda: c.status().pid, timeout=60)
        assert srv.proc is not None
        pids = [srv.proc.pid, engine_pid]
        assert all(psutil.pid_exists(p) for p in pids)
    finally:
        srv.stop()
    wait_for(lambda: not any(_alive(p) for p in pids), timeout=20)


def test_private_server_dies_with_its_parent(impetus_home: object, tmp_path: object) -> None:
    """A kernel killed without atexit must not leave a server (and a model in memory) behind."""
    import subprocess
    import sys
    import textwrap

    code = textwrap.dedent(
        """
        import sys
        from impetus.client import PrivateServer
        srv = PrivateServer(None)
        srv.start(timeout=180)
        print(srv.proc.pid, flush=True)
        sys.stdin.read()
        """
    )
    env = dict(os.environ)
    root = Path(__file__).resolve().parents[2]
    env["PYTHONPATH"] = os.pathsep.join([str(root), env.get("PYTHONPATH", "")])
    parent = subprocess.Popen(
        [sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env
    )
    try:
        assert parent.stdout is not None
        supervisor = int(parent.stdout.readline())

        def tree() -> list[int]:
            children = psutil.Process(supervisor).children(recursive=True)
            return [supervisor, *(c.pid for c in children)]

        # the server answers /health before its engine process is spawned (the engine starts
        # in the background, after the rank choice): wait for the whole tree to exist
        wait_for(lambda: len(tree()) >= 3, timeout=60)  # supervisor, server and engine
        pids = tree()
    finally:
        parent.kill()  # SIGKILL: no atexit
        parent.wait()
    wait_for(lambda: not any(_alive(p) for p in pids), timeout=30)


def _alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False
