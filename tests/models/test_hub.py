"""Hub downloads against a local server that plays the Hugging Face hub (HF_ENDPOINT): into the
Hugging Face cache through huggingface-hub's own download code, seen by the other hub tools and
seeing theirs; progress, resume after a dropped connection, cancel, checksums, 404, repos that are
not MLX models, the free-space check, search, and downloads of earlier impetus versions."""

from __future__ import annotations

import inspect
import json
import logging
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from impetus.config import Settings
from impetus.models import folder as mf
from impetus.models import hf_cache, registry
from impetus.models import hub as hubmod
from impetus.models.errors import ModelError
from impetus.models.types import PullProgress
from tests.fake_hub import FakeHub, Repo

REPO = "impetus-test/tiny-llama"
WEIGHTS = "model.safetensors"


def _storage() -> Path:
    return hf_cache.cache_dir() / "models--impetus-test--tiny-llama"


def _snapshot(hub: FakeHub, repo_id: str = REPO) -> Path:
    return _storage() / "snapshots" / hub.repos[repo_id].sha


def _listed(settings: Settings) -> list[str]:
    return [e.id for e in registry.list_entries(settings, backend="cpu") if e.id == REPO]


def _visible(settings: Settings) -> list[str]:
    """What a user sees in impetus's own model directory (hub downloads no longer go there)."""
    if not settings.models_path.exists():
        return []
    return sorted(p.name for p in settings.models_path.iterdir() if not p.name.startswith("."))


def _blobs() -> list[Path]:
    return sorted((_storage() / "blobs").glob("*")) if (_storage() / "blobs").is_dir() else []


def _assert_same_files(a: Path, b: Path) -> None:
    names = sorted(p.name for p in b.iterdir())
    assert sorted(p.name for p in a.iterdir()) == names
    for n in names:
        assert (a / n).read_bytes() == (b / n).read_bytes(), n


def test_full_download_with_progress(
    settings: Settings, hub: FakeHub, tiny_folder: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(hubmod, "VERIFY_NOTICE_BYTES", 1_000_000)  # the weights count as large
    events: list[PullProgress] = []
    resolved = registry.pull(REPO, settings, progress=events.append, min_interval=0)
    snap = _snapshot(hub)
    assert (resolved.id, resolved.source, resolved.path, resolved.kind) == (
        REPO,
        "hf-cache",
        snap,
        "chat",
    )
    _assert_same_files(snap, tiny_folder)
    # the cache's own layout: content-addressed blobs, links in the snapshot, refs/main
    assert (_storage() / "refs" / "main").read_text() == hub.repos[REPO].sha
    assert all((snap / n).is_symlink() for n in (WEIGHTS, "config.json"))
    assert (snap / WEIGHTS).resolve().parent == _storage() / "blobs"
    assert _visible(settings) == []  # nothing in impetus's own folder

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
    notices = [e for e in events if e.message.startswith("verifying")]
    assert [(e.message, e.bytes_done) for e in notices] == [
        ("verifying the checksum of model.safetensors", total)
    ]

    entry = registry.describe(REPO, settings, backend="cpu")
    assert (entry.source, entry.path, entry.downloaded) == ("hf-cache", str(snap), True)
    # a second pull finds it complete: nothing is fetched again
    before = dict(hub.body_bytes)
    again: list[PullProgress] = []
    registry.pull(REPO, settings, progress=again.append)
    assert hub.body_bytes == before
    assert again[0].message == "already downloaded" and again[0].bytes_done == total


def test_the_hub_tools_see_a_pulled_model(
    settings: Settings, hub: FakeHub, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What `hf cache scan`, `mlx_lm.manage` (scan_cache_dir) and `mlx_lm.server --model ORG/NAME`
    (snapshot_download, offline here) find after an impetus pull."""
    import huggingface_hub
    import mlx_lm.utils

    assert hubmod.ALLOW_PATTERNS == mlx_lm.utils.DEFAULT_ALLOW_PATTERNS
    snap = registry.pull(REPO, settings).path
    cache = hf_cache.cache_dir()
    info = huggingface_hub.scan_cache_dir(cache)
    assert info.warnings == []
    [repo] = [r for r in info.repos if r.repo_id == REPO]
    [rev] = repo.revisions
    assert (rev.commit_hash, rev.refs, rev.snapshot_path) == (
        hub.repos[REPO].sha,
        frozenset({"main"}),
        snap,
    )
    assert {f.file_name for f in rev.files} == {p.name for p in snap.iterdir()}

    # offline from here: the files must be found in the cache, not fetched
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(cache))
    found = huggingface_hub.snapshot_download(
        REPO, local_files_only=True, allow_patterns=mlx_lm.utils.DEFAULT_ALLOW_PATTERNS
    )
    assert Path(found) == snap
    assert mlx_lm.utils.hf_repo_to_path(REPO) == snap


def test_a_snapshot_downloaded_by_huggingface_hub_is_listed_and_loadable(
    settings: Settings, hub: FakeHub, tiny_folder: Path
) -> None:
    import huggingface_hub

    placed = huggingface_hub.snapshot_download(
        REPO, cache_dir=hf_cache.cache_dir(), endpoint=hub.url, allow_patterns=hubmod.ALLOW_PATTERNS
    )
    assert Path(placed) == _snapshot(hub)
    assert _listed(settings) == [REPO]
    resolved = registry.resolve(REPO, settings)
    assert (resolved.source, resolved.path) == ("hf-cache", Path(placed))
    assert mf.problem(resolved.path) is None
    # impetus's pull finds it complete: no file is fetched again
    served = len(hub.served)
    assert registry.pull(REPO, settings).path == Path(placed)
    assert len(hub.served) == served


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


def test_cancel_leaves_no_model_and_a_second_pull_succeeds(
    settings: Settings, hub: FakeHub, tiny_folder: Path
) -> None:
    cancel = threading.Event()
    seen: list[PullProgress] = []

    def progress(ev: PullProgress) -> None:
        seen.append(ev)
        if ev.file == WEIGHTS and ev.status == "downloading":
            cancel.set()  # between two chunks of the weights

    with pytest.raises(ModelError) as e:
        registry.pull(REPO, settings, progress=progress, cancel=cancel, min_interval=0)
    assert e.value.code == "cancelled" and seen[-1].status == "cancelled"
    # nothing usable is left: no weights in the snapshot or the blobs, no registry entry, no ref
    snap = _snapshot(hub)
    assert not (snap / WEIGHTS).exists()
    weights_blob = _storage() / "blobs" / hub.repos[REPO].etag(WEIGHTS)
    assert not weights_blob.exists()
    assert not (_storage() / "refs" / "main").exists()
    assert _listed(settings) == [] and _visible(settings) == []
    with pytest.raises(ModelError):
        registry.resolve(REPO, settings)

    # the files completed before the cancel are kept; only the rest is fetched
    assert (snap / "config.json").is_file()
    served = len(hub.served)
    events: list[PullProgress] = []
    r = registry.pull(REPO, settings, progress=events.append, min_interval=0)
    _assert_same_files(r.path, tiny_folder)
    fetched_again = [q.path.rsplit("/", 1)[-1] for q in hub.served[served:] if q.method == "GET"]
    assert WEIGHTS in fetched_again and "config.json" not in fetched_again
    first = next(e for e in events if e.status == "downloading")
    assert first.bytes_done >= len(hub.repos[REPO].files["config.json"])
    assert _listed(settings) == [REPO]


def test_xet_progress_counts_once_and_a_cancel_stops_it() -> None:
    """Xet-backed files (hf_xet; no Xet server in tests) report through huggingface-hub's
    XetDownloadProgressReporter into the same `tqdm_class` as plain downloads: the bytes written
    count once (the network bytes reported beside them are not added) and a cancel raises from
    the reporter's callback."""
    xet = pytest.importorskip("huggingface_hub.utils._xet_progress_reporting")
    reporter_class = getattr(xet, "XetDownloadProgressReporter", None)
    if reporter_class is None or "tqdm_class" not in inspect.signature(reporter_class).parameters:
        pytest.skip("this huggingface-hub reports Xet progress through its tqdm calls directly")

    def report(written: int, received: int) -> SimpleNamespace:
        return SimpleNamespace(
            total_bytes=1000,
            total_bytes_completed=written,
            total_transfer_bytes_completed=received,
            total_bytes_completion_rate=None,
            total_transfer_bytes_completion_rate=None,
        )

    events: list[PullProgress] = []
    cancel = threading.Event()
    tracker = hubmod._Tracker(REPO, 1000, events.append, 0, cancel)
    with reporter_class(
        reconstruction_desc=WEIGHTS,
        total=1000,
        log_level=logging.INFO,
        tqdm_class=tracker.bar_class(),
    ) as reporter:
        reporter.update_progress(report(400, 300))
        reporter.update_progress(report(1000, 700))
        assert tracker.done == 1000 and events[-1].bytes_done == 1000
        cancel.set()
        with pytest.raises(ModelError) as e:
            reporter.update_progress(report(1000, 800))  # network bytes only: still checked
        assert e.value.code == "cancelled"


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
    assert _listed(settings) == []


def test_corrupted_file_is_refused(settings: Settings, hub: FakeHub) -> None:
    hub.corrupt.add(WEIGHTS)
    with pytest.raises(ModelError) as e:
        registry.pull(REPO, settings)
    assert e.value.code == "download_failed"
    assert WEIGHTS in e.value.message and "checksum" in e.value.message
    assert _listed(settings) == []
    # the bad bytes are gone: neither a blob nor a link in the snapshot
    assert not (_snapshot(hub) / WEIGHTS).exists()
    assert not (_storage() / "blobs" / hub.repos[REPO].etag(WEIGHTS)).exists()
    assert not any(b.stat().st_size > 1_000_000 for b in _blobs())
    hub.corrupt.clear()
    assert registry.pull(REPO, settings).path.is_dir()  # and a retry works
    assert _listed(settings) == [REPO]


def test_corrupted_small_file_is_refused(settings: Settings, hub: FakeHub) -> None:
    hub.corrupt.add("config.json")
    with pytest.raises(ModelError, match="config.json is corrupted"):
        registry.pull(REPO, settings)
    assert _listed(settings) == [] and not (_snapshot(hub) / "config.json").exists()
    assert hub.gets(WEIGHTS) == []


def test_unknown_repo_is_404(settings: Settings, hub: FakeHub) -> None:
    events: list[PullProgress] = []
    with pytest.raises(ModelError) as e:
        registry.pull("impetus-test/nope", settings, progress=events.append)
    assert e.value.code == "model_not_found" and "impetus-test/nope" in e.value.message
    assert [(ev.status, ev.code) for ev in events] == [("error", "model_not_found")]
    cache = hf_cache.cache_dir()
    assert not cache.exists() or not list(cache.glob("models--*"))


def test_gated_repo(settings: Settings, hub: FakeHub) -> None:
    hub.gated.add(REPO)
    with pytest.raises(ModelError) as e:
        registry.pull(REPO, settings)
    assert e.value.code == "download_failed" and "is gated" in e.value.message
    assert "HF_TOKEN" in e.value.message and hub.served == [] and _listed(settings) == []


def test_unknown_revision(settings: Settings, hub: FakeHub) -> None:
    with pytest.raises(ModelError) as e:
        hubmod.download(REPO, revision="v9")
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
    assert "impetus-test/odd-arch" not in {x.id for x in registry.list_entries(settings)}


def test_bad_repo_ids(settings: Settings) -> None:
    for bad in ["../x", "a/b/c", "org/..", "org/na--me", "org/ x", "org/name\n"]:
        with pytest.raises(ModelError) as e:
            hubmod.download(bad)
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
    import huggingface_hub

    registry.pull(REPO, settings)
    res = registry.delete(REPO, settings)
    assert res.removed == [str(_storage())] and res.freed_bytes > 0
    assert _listed(settings) == []
    assert huggingface_hub.scan_cache_dir(hf_cache.cache_dir()).repos == frozenset()


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
    assert _listed(settings) == [] and hub.gets(WEIGHTS) == [] and hub.served == []


def test_repo_already_pulled_is_not_fetched_again_but_a_new_commit_is(
    settings: Settings, hub: FakeHub, tiny_folder: Path
) -> None:
    old = registry.pull(REPO, settings).path
    repo = hub.repos[REPO]
    files = dict(repo.files)
    files["README.md"] = b"# new commit\n"
    files["generation_config.json"] = b'{"temperature": 0.5}\n'
    hub.add(Repo(REPO, files))  # the repo moves on: a new sha
    served = len(hub.served)
    new = registry.pull(REPO, settings).path
    assert new == _snapshot(hub) != old
    assert (_storage() / "refs" / "main").read_text() == hub.repos[REPO].sha != repo.sha
    # only the new file is fetched: the others are the same blobs; README.md is not a model file
    gets = [r.path.rsplit("/", 1)[-1] for r in hub.served[served:] if r.method == "GET"]
    assert gets == ["generation_config.json"]
    assert not (new / "README.md").exists()
    assert registry.resolve(REPO, settings).path == new


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
    snap = _snapshot(hub)
    assert results == [snap, snap]
    assert len(hub.gets(WEIGHTS)) == 1  # the second waited for the first, then found it complete
    _assert_same_files(snap, tiny_folder)


def test_downloads_of_earlier_versions_are_still_found(
    settings: Settings, hub: FakeHub, tiny_folder: Path
) -> None:
    """Earlier impetus versions downloaded hub repos into MODELS/ORG/NAME (with an impetus.json
    manifest of source "hub"): read-only compatibility, no migration."""
    import shutil

    legacy = settings.models_path / "impetus-test" / "tiny-llama"
    shutil.copytree(tiny_folder, legacy)
    manifest = {"format": 1, "source": {"type": "hub", "repo": REPO, "revision": "0" * 40}}
    (legacy / "impetus.json").write_text(json.dumps(manifest))
    entry = registry.describe(REPO, settings, backend="cpu")
    assert (entry.source, entry.path) == ("hub", str(legacy))
    assert _listed(settings) == [REPO]
    assert registry.resolve(REPO, settings).path == legacy
    # a pull now goes to the Hugging Face cache, which is used from then on
    assert registry.pull(REPO, settings).path == _snapshot(hub)
    assert registry.resolve(REPO, settings).source == "hf-cache"
    assert legacy.is_dir()  # left alone: `impetus models rm` after the cache copy removes it
    registry.delete(REPO, settings)
    assert registry.resolve(REPO, settings).path == legacy
    registry.delete(REPO, settings)
    assert _listed(settings) == [] and not legacy.exists()
