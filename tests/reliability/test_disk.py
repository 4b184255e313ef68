"""Disk full and permission denied while downloading (the fake hub) and while converting a GGUF.

Disk full is a real small filesystem: a tmpfs mounted as the Hugging Face cache (where downloads
go) or as the models folder (where conversions go), by root or a user with CAP_SYS_ADMIN; the
test is skipped, saying why, where mounting is refused. Permission denied is a
folder without write permission; as root (whom file modes do not stop) the writer runs in a child
process that has dropped CAP_DAC_OVERRIDE / CAP_DAC_READ_SEARCH from its capability set.

Each case wants: a clear error (ModelError naming the cause), no half-written model folder where
models are listed, and the next pull / conversion succeeding once space or permission is back.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import subprocess
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from impetus.config import Settings
from impetus.models import registry
from impetus.models.errors import ModelError
from impetus.models.gguf import convert_gguf
from impetus.models.types import PullProgress
from tests.child import run_python
from tests.fake_hub import FakeHub, Repo
from tests.models.gguf_factory import write_llama_gguf
from tests.tiny_model import build_tiny_llama

REPO = "impetus-test/tiny-llama"


@contextlib.contextmanager
def small_fs(path: Path, size: str) -> Iterator[Path]:
    path.mkdir(parents=True, exist_ok=True)
    r = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
        capture_output=True,
        text=True,
    )
    if r.returncode != 0:
        pytest.skip(
            f"cannot mount a small tmpfs here (root or CAP_SYS_ADMIN needed): {r.stderr.strip()}"
        )
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def resize(path: Path, size: str) -> None:
    subprocess.run(["mount", "-o", f"remount,size={size}", str(path)], check=True)


def _drop_dac_capabilities() -> None:
    """preexec_fn: as root, make file modes bind this child (no-op for other users)."""
    if os.geteuid() != 0:
        return
    libc = ctypes.CDLL(None, use_errno=True)
    for cap in (1, 2):  # CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH
        if libc.prctl(24, cap, 0, 0, 0) != 0:  # PR_CAPBSET_DROP
            raise OSError(ctypes.get_errno(), "prctl(PR_CAPBSET_DROP)")


def run_unprivileged(code: str) -> dict[str, str]:
    """Run `code` (which sets `result`) in a child bound by file modes; its result as a dict."""
    script = textwrap.dedent(code) + "\nimport json; print(json.dumps(result))\n"
    result, _ = run_python(
        script, preexec_fn=_drop_dac_capabilities, env={**os.environ, "HF_HUB_OFFLINE": "0"}
    )
    return dict(result)


def listed(settings: Settings) -> list[str]:
    return [e.id for e in registry.list_entries(settings) if REPO in e.id]


def cache_files(cache: Path) -> list[str]:
    """Everything in the Hugging Face cache but locks and other hidden files."""
    return sorted(
        str(p.relative_to(cache))
        for p in cache.rglob("*")
        if not any(part.startswith(".") for part in p.relative_to(cache).parts)
    )


@pytest.fixture(scope="module")
def tiny_repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_llama(tmp_path_factory.mktemp("tiny") / "tiny-llama", hidden=128)  # ~1.4 MB


@pytest.fixture()
def hub(monkeypatch: pytest.MonkeyPatch, tiny_repo: Path, tmp_path: Path) -> Iterator[FakeHub]:
    import huggingface_hub.constants

    server = FakeHub()
    server.add(Repo.from_folder(REPO, tiny_repo))
    server.start()
    monkeypatch.setenv("HF_ENDPOINT", server.url)
    # downloads go to the Hugging Face cache: the folder these tests fill up or lock
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf-cache"))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    try:
        yield server
    finally:
        server.stop()


def snapshot(cache: Path, hub: FakeHub) -> Path:
    return cache / "models--impetus-test--tiny-llama" / "snapshots" / hub.repos[REPO].sha


# ---- downloads ----------------------------------------------------------------------------


def test_download_onto_a_disk_too_small_is_refused_then_succeeds(
    hub: FakeHub, tmp_path: Path
) -> None:
    settings = Settings(home=tmp_path / "home")
    with small_fs(tmp_path / "hf-cache", "512k") as cache:
        with pytest.raises(ModelError) as e:
            registry.pull(REPO, settings)
        assert e.value.code == "download_failed" and "not enough disk space" in e.value.message
        assert listed(settings) == [] and cache_files(cache) == [] and hub.served == []
        resize(cache, "8m")  # space is back
        r = registry.pull(REPO, settings)
        assert r.path == snapshot(cache, hub) and listed(settings) == [REPO]


def test_disk_filling_up_during_a_download(hub: FakeHub, tmp_path: Path) -> None:
    settings = Settings(home=tmp_path / "home")
    with small_fs(tmp_path / "hf-cache", "4m") as cache:
        filler = cache / "filler"

        def fill_the_disk(ev: PullProgress) -> None:
            # another writer takes the space the download counted on, once weights flow
            if ev.bytes_done > 300_000 and not filler.exists():
                with filler.open("wb") as f, contextlib.suppress(OSError):
                    while True:
                        f.write(b"\0" * 65536)

        events: list[PullProgress] = []
        with pytest.raises(ModelError) as e:
            registry.pull(
                REPO,
                settings,
                progress=lambda ev: (events.append(ev), fill_the_disk(ev)),
                min_interval=0,  # an event per chunk: the disk fills mid-file
            )
        assert e.value.code == "download_failed", e.value
        assert "No space left on device" in e.value.message, e.value.message
        assert events[-1].status == "error" and "No space left" in events[-1].message
        # no weights in the snapshot (huggingface-hub links only complete files): not a model
        assert listed(settings) == [] and not (snapshot(cache, hub) / "model.safetensors").exists()
        filler.unlink()
        served = len(hub.gets("model.safetensors"))
        r = registry.pull(REPO, settings)
        assert r.path == snapshot(cache, hub) and listed(settings) == [REPO]
        assert len(hub.gets("model.safetensors")) > served


def test_permission_denied_during_a_download(hub: FakeHub, tmp_path: Path) -> None:
    cache = tmp_path / "hf-cache"
    cache.mkdir()
    cache.chmod(0o555)
    settings = Settings(home=tmp_path / "home")
    result = run_unprivileged(
        f"""
        from impetus.config import Settings
        from impetus.models import registry
        from impetus.models.errors import ModelError
        try:
            registry.pull({REPO!r}, Settings(home={str(tmp_path / "home")!r}))
            result = {{"ok": "yes"}}
        except ModelError as e:
            result = {{"code": e.code, "message": e.message}}
        """
    )
    assert result.get("code") == "download_failed", result
    assert "Permission denied" in result["message"] and str(cache) in result["message"]
    assert cache_files(cache) == []
    cache.chmod(0o755)
    assert registry.pull(REPO, settings).path == snapshot(cache, hub)


# ---- GGUF conversion ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def gguf(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, int]:
    """A crafted llama GGUF and the bytes its converted folder takes."""
    d = tmp_path_factory.mktemp("gguf")
    src = write_llama_gguf(d / "tiny.gguf", hidden=128, layers=4, ffn=256)
    out = convert_gguf(src, d / "converted")
    return src, sum(f.stat().st_size for f in out.iterdir())


def test_gguf_conversion_on_a_full_disk(gguf: tuple[Path, int], tmp_path: Path) -> None:
    src, size = gguf
    with small_fs(tmp_path / "models", f"{size // 2 // 4096 * 4096}") as models:
        with pytest.raises(ModelError) as e:
            convert_gguf(src, models / "tiny")
        assert e.value.code == "model_load_failed"
        assert "No space left on device" in e.value.message and str(models) in e.value.message
        assert list(models.iterdir()) == []  # no folder, no .partial left behind
        resize(models, f"{size * 2}")
        out = convert_gguf(src, models / "tiny")
        assert (out / "impetus.json").is_file() and [p.name for p in models.iterdir()] == ["tiny"]


def test_gguf_conversion_without_write_permission(gguf: tuple[Path, int], tmp_path: Path) -> None:
    src, _ = gguf
    models = tmp_path / "models"
    models.mkdir()
    models.chmod(0o555)
    result = run_unprivileged(
        f"""
        from impetus.models.errors import ModelError
        from impetus.models.gguf import convert_gguf
        try:
            convert_gguf({str(src)!r}, {str(models / "tiny")!r})
            result = {{"ok": "yes"}}
        except ModelError as e:
            result = {{"code": e.code, "message": e.message}}
        """
    )
    assert result.get("code") == "model_load_failed", result
    assert "Permission denied" in result["message"]
    assert list(models.iterdir()) == []
    models.chmod(0o755)
    assert (convert_gguf(src, models / "tiny") / "impetus.json").is_file()
