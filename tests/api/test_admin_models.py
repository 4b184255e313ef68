"""admin/models over HTTP: list, load / unload, delete, pull with SSE progress (a local fake hub), cancel, search."""

from __future__ import annotations

import json
import shutil
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.api.conftest import Server
from tests.api.test_errors import assert_openai_error
from tests.fake_hub import FakeHub, Repo

REPO = "impetus-test/tiny-llama"
OLLAMA_REPO = "impetus-test/ollama-llama"


def listed(srv: Server) -> dict[str, dict[str, Any]]:
    r = srv.get("admin/models")
    assert r.status_code == 200
    return {e["id"]: e for e in r.json()["data"]}


def pull_events(
    srv: Server, body: dict[str, Any], on_event: Callable[[dict[str, Any]], None] | None = None
) -> list[Any]:
    events: list[Any] = []
    with httpx.stream(
        "POST", srv.url("admin/models/pull"), json=body, headers=srv.headers(), timeout=120
    ) as r:
        assert r.status_code == 200, r.read()
        assert r.headers["content-type"].startswith("text/event-stream")
        for line in r.iter_lines():
            if line.startswith("data: "):
                data = line[len("data: ") :]
                events.append(data if data == "[DONE]" else json.loads(data))
                if on_event is not None and data != "[DONE]":
                    on_event(events[-1])
    return events


def test_list_shows_builtins_and_loaded_models(server: Server, model: str) -> None:
    entries = listed(server)
    assert {"smollm2-135m", "minilm"} <= set(entries)
    assert entries["minilm"]["kind"] == "embedding"
    assert entries[model]["loaded"] is True and entries[model]["source"] == "path"


def test_load_unload_delete(server: Server, tiny_model_dir: Path) -> None:
    models_dir = server.log.parent / "models"  # the server's --home/models
    shutil.copytree(tiny_model_dir, models_dir / "tiny-copy")
    assert listed(server)["tiny-copy"]["loaded"] is False

    state = server.post("admin/models/load", {"id": "tiny-copy", "keep_alive": -1})
    assert state.status_code == 200, state.text
    assert state.json()["id"] == "tiny-copy" and state.json()["kind"] == "chat"
    assert listed(server)["tiny-copy"]["loaded"] is True
    chat = server.post(
        "v1/chat/completions",
        {"model": "tiny-copy", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2},
    )
    assert chat.status_code == 200

    # deleting a loaded model is refused, and nothing is removed
    r = httpx.delete(server.url("admin/models/tiny-copy"), headers=server.headers())
    assert_openai_error(r, 400, code="invalid_request")
    assert (models_dir / "tiny-copy").is_dir()

    r = server.post("admin/models/unload", {"id": "tiny-copy"})
    assert r.json() == {"id": "tiny-copy", "unloaded": True}
    r = httpx.delete(server.url("admin/models/tiny-copy"), headers=server.headers())
    assert r.status_code == 200 and r.json()["freed_bytes"] > 0
    assert not (models_dir / "tiny-copy").exists()
    assert "tiny-copy" not in listed(server)

    assert_openai_error(
        server.post("admin/models/load", {"id": "no-such-model"}), 404, code="model_not_found"
    )
    assert_openai_error(
        httpx.delete(server.url("admin/models/no-such-model"), headers=server.headers()), 404
    )
    assert_openai_error(
        httpx.delete(server.url("admin/models/..%2Fetc"), headers=server.headers()), 400
    )
    assert_openai_error(
        server.post("admin/models/load", {"id": "x", "dtype": "int3"}), 400, param="dtype"
    )


@pytest.fixture(scope="module")
def fake_hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FakeHub]:
    from tests.tiny_model import build_tiny_llama

    folder = build_tiny_llama(tmp_path_factory.mktemp("hub-src") / "tiny", hidden=128)
    hub = FakeHub(chunk=16 * 1024)
    hub.add(Repo.from_folder(REPO, folder))
    hub.add(Repo.from_folder("impetus-test/slow-llama", folder))
    hub.add(Repo.from_folder(OLLAMA_REPO, folder))
    hub.start()
    yield hub
    hub.stop()


@pytest.fixture(scope="module")
def hub_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("hf") / "hub"


@pytest.fixture(scope="module")
def hub_server(server_factory: Callable[..., Server], fake_hub: FakeHub, hub_cache: Path) -> Server:
    env = {"HF_ENDPOINT": fake_hub.url, "HF_HUB_OFFLINE": "0", "HF_HUB_CACHE": str(hub_cache)}
    return server_factory(ready=False, env=env)


def test_pull_with_progress_then_load(
    hub_server: Server, fake_hub: FakeHub, hub_cache: Path
) -> None:
    srv = hub_server
    events = pull_events(srv, {"id": REPO, "load": True})
    assert events[-1] == "[DONE]"
    progress = events[:-1]
    statuses = [e["status"] for e in progress]
    assert statuses[0] == "downloading" and statuses[-1] == "done"
    assert "error" not in statuses
    done = [e["bytes_done"] for e in progress if e["status"] == "downloading"]
    assert done == sorted(done) and progress[-1]["bytes_done"] == progress[-1]["bytes_total"] > 0
    assert "loaded" in progress[-1]["message"]
    entry = listed(srv)[REPO]
    assert entry["downloaded"] is True and entry["loaded"] is True and entry["source"] == "hf-cache"
    snapshot = (
        hub_cache / "models--impetus-test--tiny-llama" / "snapshots" / fake_hub.repos[REPO].sha
    )
    assert entry["path"] == str(snapshot)  # in the Hugging Face cache, where other tools look
    chat = srv.post(
        "v1/chat/completions",
        {"model": REPO, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2},
    )
    assert chat.status_code == 200 and chat.json()["model"] == REPO
    # pulling it again: already there, done at once
    again = pull_events(srv, {"id": REPO})
    assert again[-2]["status"] == "done"


def test_pull_cancel(hub_server: Server, fake_hub: FakeHub) -> None:
    srv = hub_server
    fake_hub.rate = 16 * 1024 / 0.05  # ~16 KiB every 50 ms: the weights take seconds
    cancelled = threading.Event()

    def cancel_on_first_bytes(ev: dict[str, Any]) -> None:
        if ev["status"] == "downloading" and ev["bytes_done"] > 0 and not cancelled.is_set():
            cancelled.set()
            r = srv.post("admin/models/pull/cancel", {"id": "impetus-test/slow-llama"})
            assert r.json() == {"id": "impetus-test/slow-llama", "cancelled": True}

    try:
        events = pull_events(srv, {"id": "impetus-test/slow-llama"}, on_event=cancel_on_first_bytes)
    finally:
        fake_hub.rate = None
    assert cancelled.is_set()
    assert events[-2]["status"] == "cancelled" and events[-1] == "[DONE]"
    entry = listed(srv).get("impetus-test/slow-llama")
    assert entry is None or entry["downloaded"] is False  # no half model that looks usable
    assert_openai_error(
        srv.post("admin/models/pull/cancel", {"id": "impetus-test/slow-llama"}),
        404,
        code="pull_not_found",
    )


def test_pull_errors(hub_server: Server, fake_hub: FakeHub) -> None:
    assert_openai_error(
        hub_server.post("admin/models/pull", {"id": "../../etc"}), 400, code="invalid_request"
    )
    # an unknown repo is a 404 in OpenAI's shape, not a stream that starts with 200
    r = hub_server.post("admin/models/pull", {"id": "impetus-test/does-not-exist"})
    assert_openai_error(r, 404, code="model_not_found")
    assert "impetus-test/does-not-exist" in r.json()["error"]["message"]
    # a failure of the hub (here a gated repo) is the stream's error event, with its code
    fake_hub.gated.add("impetus-test/gated")
    events = pull_events(hub_server, {"id": "impetus-test/gated"})
    assert events[-1] == "[DONE]" and events[-2]["status"] == "error"
    assert events[-2]["code"] == "download_failed" and "gated" in events[-2]["message"]
    r = hub_server.post("api/pull", {"model": "impetus-test/gated", "stream": False})
    assert r.status_code == 502 and "gated" in r.json()["error"]  # Ollama's shape


def test_search(hub_server: Server) -> None:
    r = hub_server.get("admin/models/search", params={"q": "tiny"})
    assert r.status_code == 200
    assert REPO in [m["id"] for m in r.json()["models"]]


def test_ollama_pull_streams_progress(hub_server: Server) -> None:
    """Ollama's /api/pull is impetus's own pull with Ollama's progress lines (admin, like it)."""
    import ollama

    auth = {"Authorization": f"Bearer {hub_server.key}"}
    client = ollama.Client(host=hub_server.base_url.rstrip("/"), headers=auth)
    progress = list(client.pull(OLLAMA_REPO + ":latest", stream=True))
    statuses = [p.status for p in progress]
    assert statuses[0] == "pulling manifest" and statuses[-1] == "success"
    sizes = [(p.completed, p.total) for p in progress if p.total]
    assert sizes and all(done <= total for done, total in sizes)
    assert sizes[-1][0] == sizes[-1][1]
    assert OLLAMA_REPO + ":latest" in [m.model for m in client.list().models]
    # not streamed: one line; an unknown repo is an error in Ollama's shape
    assert client.pull(OLLAMA_REPO, stream=False).status == "success"
    # an unknown repo: 404 in Ollama's shape, streamed or not
    with pytest.raises(ollama.ResponseError) as e:
        client.pull("impetus-test/does-not-exist", stream=False)
    assert e.value.status_code == 404 and "does-not-exist" in e.value.error
    with pytest.raises(ollama.ResponseError) as e:
        list(client.pull("impetus-test/does-not-exist", stream=True))
    assert e.value.status_code == 404 and "does-not-exist" in e.value.error
    r = httpx.post(
        hub_server.url("api/pull"),
        json={"model": "impetus-test/does-not-exist", "stream": False},
        headers=auth,
        timeout=30,
    )
    assert r.status_code == 404 and list(r.json()) == ["error"]
    # an inference-only key may chat but not write to the model directory
    key = hub_server.post("admin/keys", {"name": "ollama"}).json()
    r = httpx.post(
        hub_server.url("api/pull"),
        json={"model": OLLAMA_REPO},
        headers={"Authorization": f"Bearer {key['key']}"},
        timeout=30,
    )
    assert r.status_code == 403 and list(r.json()) == ["error"]
