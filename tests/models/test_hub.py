"""Hub downloads against a local server that plays the Hugging Face hub (HF_ENDPOINT): progress,
resume within and across calls, cancel, checksums, 404, repos that are not MLX models, search."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import pytest

from impetus.config import Settings
from impetus.models import hub as hubmod
from impetus.models import registry
from impetus.models.errors import ModelError
from impetus.models.types import PullProgress
from tests.fake_hub import FakeHub, Repo

REPO = "impetus-test/tiny-llama"
WEIGHTS = "model.safetensors"


def _downloads(settings: Settings) -> Path:
    return settings.models_path / hubmod.DOWNLOADS_DIR


def _visible(settings: Settings) -> list[str]:
    """What a user (or the registry) sees in the model directory."""
    if not settings.models_path.exists():
        return []
    return sorted(p.name for p in settings.models_path.iterdir() if not p.name.startswith("."))


def _assert_same_files(a: Path, b: Path) -> None:
    names = sorted(p.name for p in b.iterdir())
    assert sorted(p.name for p in a.iterdir() if p.name != "impetus.json") == names
    for n in names:
        assert (a / n).read_bytes() == (b / n).read_bytes(), n


def test_full_download_with_progress(settings: Settings, hub: FakeHub, tiny_folder: Path) -> None:
    events: list[PullProgress] = []
    resolved = registry.pull(REPO, settings, progress=events.append, min_interval=0)
    dest = settings.models_path / "impetus-test" / "tiny-llama"
    assert (resolved.id, resolved.source, resolved.path, resolved.kind) == (
        REPO,
        "hub",
        dest,
        "chat",
    )
    _assert_same_files(dest, tiny_folder)
    manifest = json.loads((dest / "impetus.json").read_text())
    assert manifest["source"] == {"type": "hub", "repo": REPO, "revision": hub.repos[REPO].sha}

    total = sum(p.stat().st_size for p in tiny_folder.iterdir())
    statuses = [e.status for e in events]
    assert statuses[-1] == "done" and set(statuses[:-1]) == {"downloading"}
    done = [e.bytes_done for e in events[:-1]]
    assert done == sorted(done) and done[-1] == total  # in order, ending at the total
    assert all(e.bytes_total == total for e in events)
    weight_events = [e for e in events if e.file == WEIGHTS]
    assert len(weight_events) >= 4  # ~1.4 MB in 256 KB chunks: progress inside the big file
    assert events[0].file == "config.json"  # fetched first, to refuse non-MLX models early
    assert any(e.speed > 0 and e.eta is not None for e in events[:-1])
    assert not list(_downloads(settings).iterdir())  # the staging folder became the model

    entry = registry.describe(REPO, settings, backend="cpu")
    assert (entry.source, entry.path, entry.downloaded) == ("hub", str(dest), True)
    # a second pull finds it complete: nothing is fetched again
    before = dict(hub.body_bytes)
    registry.pull(REPO, settings)
    assert hub.body_bytes == before


@pytest.mark.slow
def test_downloaded_model_loads_in_mlx_lm(settings: Settings, hub: FakeHub) -> None:
    import mlx_lm

    r = registry.pull(REPO, settings)
    model, tok = mlx_lm.load(str(r.path))
    assert isinstance(mlx_lm.generate(model, tok, "Hello", max_tokens=3), str)


def test_dropped_connection_is_resumed_with_range(
    settings: Settings, hub: FakeHub, tiny_folder: Path
) -> None:
    size = (tiny_folder / WEIGHTS).stat().st_size
    hub.cut_after[WEIGHTS] = 300_000  # the first GET stops there and the connection drops
    events: list[PullProgress] = []
    r = registry.pull(REPO, settings, progress=events.append, min_interval=0)
    _assert_same_files(r.path, tiny_folder)
    gets = hub.gets(WEIGHTS)
    assert len(gets) == 2 and gets[0].range is None and gets[1].range is not None
    offset = int(gets[1].range.removeprefix("bytes=").rstrip("-"))
    assert 0 < offset <= 300_000  # from what reached the disk before the drop
    assert hub.body_bytes[WEIGHTS] == size + 300_000 - offset  # resumed, not restarted
    done = [e.bytes_done for e in events if e.status == "downloading"]
    assert done == sorted(done)


def test_cancel_then_resume_in_a_later_call(
    settings: Settings, hub: FakeHub, tiny_folder: Path
) -> None:
    size = (tiny_folder / WEIGHTS).stat().st_size
    cancel = threading.Event()
    seen: list[PullProgress] = []

    def progress(ev: PullProgress) -> None:
        seen.append(ev)
        if ev.file == WEIGHTS and ev.status == "downloading":
            cancel.set()  # between two chunks of the weights

    with pytest.raises(ModelError) as e:
        registry.pull(REPO, settings, progress=progress, cancel=cancel, min_interval=0)
    assert e.value.code == "cancelled" and seen[-1].status == "cancelled"
    # nothing usable is left: no model folder, no registry entry; the partial file waits, hidden
    assert _visible(settings) == []
    assert REPO not in {x.id for x in registry.list_entries(settings, backend="cpu")}
    with pytest.raises(ModelError):
        registry.resolve(REPO, settings)
    partial = next(_downloads(settings).rglob(WEIGHTS + ".incomplete"))
    have = partial.stat().st_size
    assert 0 < have < size

    events: list[PullProgress] = []
    sent_before = hub.body_bytes[WEIGHTS]
    r = registry.pull(REPO, settings, progress=events.append, min_interval=0)
    _assert_same_files(r.path, tiny_folder)
    assert hub.gets(WEIGHTS)[-1].range == f"bytes={have}-"
    assert hub.body_bytes[WEIGHTS] - sent_before == size - have  # only the missing bytes
    first = next(e for e in events if e.file == WEIGHTS)
    assert first.bytes_done >= have  # progress starts from what was already there


def test_cancel_from_another_thread(settings: Settings, hub: FakeHub) -> None:
    hub.chunk = 16 * 1024
    cancel = threading.Event()
    started = threading.Event()

    def progress(ev: PullProgress) -> None:
        if ev.file == WEIGHTS:
            started.set()
            time.sleep(0.05)  # a slow disk: the other thread gets in between chunks

    result: list[BaseException] = []

    def run() -> None:
        try:
            registry.pull(REPO, settings, progress=progress, cancel=cancel, min_interval=0)
        except BaseException as e:  # handed to the test thread
            result.append(e)

    t = threading.Thread(target=run)
    t.start()
    assert started.wait(10)
    cancel.set()
    t.join(10)
    assert not t.is_alive()
    assert isinstance(result[0], ModelError) and result[0].code == "cancelled"
    assert _visible(settings) == []


def test_corrupted_file_is_refused(settings: Settings, hub: FakeHub) -> None:
    hub.corrupt.add(WEIGHTS)
    with pytest.raises(ModelError) as e:
        registry.pull(REPO, settings)
    assert e.value.code == "download_failed"
    assert WEIGHTS in e.value.message and "checksum" in e.value.message
    assert _visible(settings) == []
    assert list(_downloads(settings).rglob(WEIGHTS + "*")) == []  # the bad bytes are gone
    hub.corrupt.clear()
    assert registry.pull(REPO, settings).path.is_dir()  # and a retry works


def test_corrupted_small_file_is_refused(settings: Settings, hub: FakeHub) -> None:
    hub.corrupt.add("config.json")
    with pytest.raises(ModelError, match="config.json is corrupted"):
        registry.pull(REPO, settings)
    assert _visible(settings) == []


def test_unknown_repo_is_404(settings: Settings, hub: FakeHub) -> None:
    events: list[PullProgress] = []
    with pytest.raises(ModelError) as e:
        registry.pull("impetus-test/nope", settings, progress=events.append)
    assert e.value.code == "model_not_found" and "impetus-test/nope" in e.value.message
    assert [ev.status for ev in events] == ["error"]
    assert not settings.models_path.exists() or _visible(settings) == []
    assert not _downloads(settings).exists()


def test_unknown_revision(settings: Settings, hub: FakeHub) -> None:
    with pytest.raises(ModelError) as e:
        hubmod.download(REPO, settings.models_path, revision="v9")
    assert e.value.code == "model_not_found" and "revision" in e.value.message


def test_gguf_only_repo_is_refused(settings: Settings, hub: FakeHub) -> None:
    hub.add(
        Repo(
            "impetus-test/gguf-only",
            {"README.md": b"# hi\n", "model.Q4_0.gguf": b"GGUF" + bytes(100)},
        )
    )
    with pytest.raises(ModelError) as e:
        registry.pull("impetus-test/gguf-only", settings)
    assert e.value.code == "invalid_request"
    assert "not an MLX-loadable model" in e.value.message and "model.Q4_0.gguf" in e.value.message
    assert hub.gets("model.Q4_0.gguf") == []


def test_unsupported_architecture_is_refused_before_the_weights(
    settings: Settings, hub: FakeHub, tiny_folder: Path
) -> None:
    files = {p.name: p.read_bytes() for p in tiny_folder.iterdir()}
    config = json.loads(files["config.json"])
    files["config.json"] = json.dumps({**config, "model_type": "not_a_real_arch"}).encode()
    hub.add(Repo("impetus-test/odd-arch", files))
    with pytest.raises(ModelError) as e:
        registry.pull("impetus-test/odd-arch", settings)
    assert (
        e.value.code == "invalid_request"
        and "'not_a_real_arch' is not supported by mlx-lm" in e.value.message
    )
    assert hub.gets(WEIGHTS) == []  # refused before fetching the weights
    assert _visible(settings) == [] and list(_downloads(settings).iterdir()) == []


def test_bad_repo_ids(settings: Settings) -> None:
    for bad in ["../x", "a/b/c", "org/..", "org/na--me", "org/ x", "org/name\n"]:
        with pytest.raises(ModelError) as e:
            hubmod.download(bad, settings.models_path)
        assert e.value.code == "invalid_request", bad


def test_hub_unreachable(settings: Settings, monkeypatch: pytest.MonkeyPatch, hub: FakeHub) -> None:
    url = hub.url
    hub.stop()
    monkeypatch.setenv("HF_ENDPOINT", url)
    with pytest.raises(ModelError) as e:
        registry.pull(REPO, settings)
    assert e.value.code == "download_failed" and "cannot be reached" in e.value.message
    started = time.monotonic()
    res = hubmod.search("tiny")
    assert res.error is not None and res.models == []
    assert time.monotonic() - started < 5  # one try, no retry loop


def test_search(hub: FakeHub) -> None:
    res = hubmod.search("tiny")
    assert res.error is None and [m.id for m in res.models] == [REPO]
    assert "mlx" in res.models[0].tags
    searches = [r for r in hub.requests if r.path == "/api/models"]
    assert searches and "filter=mlx" in searches[0].query and "search=tiny" in searches[0].query
    assert hubmod.search("zzz").models == []


def test_delete_a_downloaded_model(settings: Settings, hub: FakeHub) -> None:
    r = registry.pull(REPO, settings)
    res = registry.delete(REPO, settings)
    assert res.removed == [str(r.path)] and res.freed_bytes > 0
    assert _visible(settings) == []  # the empty ORG folder went too


def test_not_enough_disk_space(
    settings: Settings, hub: FakeHub, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = hubmod.shutil.disk_usage
    monkeypatch.setattr(
        hubmod.shutil, "disk_usage", lambda p: real(p)._replace(free=100_000)
    )  # a nearly full disk
    with pytest.raises(ModelError) as e:
        registry.pull(REPO, settings)
    assert e.value.code == "download_failed" and "not enough disk space" in e.value.message
    assert _visible(settings) == [] and hub.gets(WEIGHTS) == []


def test_repo_already_pulled_is_not_fetched_again_but_a_new_commit_is(
    settings: Settings, hub: FakeHub, tiny_folder: Path
) -> None:
    registry.pull(REPO, settings)
    repo = hub.repos[REPO]
    files = dict(repo.files)
    files["README.md"] = b"# new commit\n"
    hub.add(Repo(REPO, files))  # the repo moves on: a new sha
    served = len(hub.served)
    registry.pull(REPO, settings)
    dest = settings.models_path / "impetus-test" / "tiny-llama"
    manifest = json.loads((dest / "impetus.json").read_text())
    assert manifest["source"]["revision"] == hub.repos[REPO].sha != repo.sha
    assert len(hub.served) > served  # downloaded again (README.md is not fetched: not a model file)
    assert not (dest / "README.md").exists()


def test_concurrent_pulls_download_once(
    settings: Settings, hub: FakeHub, tiny_folder: Path
) -> None:
    hub.chunk = 16 * 1024
    results: list[object] = []

    def pull() -> None:
        try:
            results.append(registry.pull(REPO, settings).path)
        except BaseException as e:  # handed to the test thread
            results.append(e)

    threads = [threading.Thread(target=pull) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    dest = settings.models_path / "impetus-test" / "tiny-llama"
    assert results == [dest, dest]
    assert len(hub.gets(WEIGHTS)) == 1  # the second waited for the first, then found it complete
    _assert_same_files(dest, tiny_folder)
