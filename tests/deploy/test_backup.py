"""`impetus backup` / `impetus restore` through the real command line: round trip, refusals."""

from __future__ import annotations

import gzip
import io
import json
import os
import subprocess
import sys
import tarfile
from datetime import UTC, datetime
from pathlib import Path

import pytest

from impetus.api.keys import KeyStore
from impetus.bench.schema import RunRecord
from impetus.bench.store import ResultStore


class Install:
    """One installation's state locations, given to the commands as the environment would."""

    def __init__(self, root: Path) -> None:
        self.home = root / "home"
        self.config = root / "config"
        self.settings_file = self.config / "impetus" / "settings.toml"
        self.models = self.home / "models"
        self.env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("IMPETUS_")},
            "IMPETUS_HOME": str(self.home),
            "XDG_CONFIG_HOME": str(self.config),
        }

    def run(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "impetus.cli", *args],
            capture_output=True,
            text=True,
            env=self.env,
            timeout=120,
        )

    def snapshot(self) -> dict[str, bytes]:
        """Every file of the installation (the database as its rows: its bytes may differ)."""
        files = {}
        for base in (self.home, self.config):
            for p in sorted(base.rglob("*")):
                if p.is_file() and p.name != "bench.sqlite":
                    files[str(p.relative_to(base.parent))] = p.read_bytes()
        if (self.home / "bench.sqlite").exists():
            runs = ResultStore(self.home / "bench.sqlite").list()
            files["bench"] = json.dumps([r.model_dump(mode="json") for r in runs]).encode()
        return files


def _model(folder: Path, manifest: dict[str, object] | None) -> None:
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps({"model_type": "llama"}))
    (folder / "model.safetensors").write_bytes(os.urandom(4096))
    if manifest is not None:
        (folder / "impetus.json").write_text(json.dumps(manifest))


@pytest.fixture
def source(tmp_path: Path) -> tuple[Install, str]:
    """An installation with a key, a benchmark run, a settings file and three model folders."""
    inst = Install(tmp_path / "a")
    inst.home.mkdir(parents=True)
    _, key = KeyStore(inst.home / "api_keys.json").create("ci")
    ResultStore(inst.home / "bench.sqlite").save(
        RunRecord(
            id="20260101-000000-abcd",
            kind="serve",
            created=datetime(2026, 1, 1, tzinfo=UTC),
            label="baseline",
            model="m",
            params={"concurrency": [1]},
            machine={},
        )
    )
    inst.settings_file.parent.mkdir(parents=True)
    inst.settings_file.write_text("max_queue = 64\n")
    _model(inst.models / "org" / "hub-model", {"source": {"type": "hub", "repo": "org/hub-model"}})
    _model(inst.models / "converted", {"source": {"type": "gguf", "path": "/x/converted.gguf"}})
    _model(inst.models / "by-hand", None)
    (inst.models / ".downloads").mkdir()
    (inst.models / ".downloads" / "partial.bin").write_bytes(b"partial")
    return inst, key


def test_round_trip_keeps_keys_history_and_settings(
    source: tuple[Install, str], tmp_path: Path
) -> None:
    inst, key = source
    archive = tmp_path / "backups" / "impetus.tar.gz"
    done = inst.run("backup", str(archive))
    assert done.returncode == 0, done.stderr
    assert "not archived (no manifest, put there by hand): models/by-hand" in done.stdout
    assert oct(archive.stat().st_mode & 0o777) == "0o600"
    assert [p.name for p in archive.parent.iterdir()] == ["impetus.tar.gz"]  # no temporary left

    with tarfile.open(archive) as tar:
        names = tar.getnames()
        index = json.loads(tar.extractfile(names[0]).read())  # type: ignore[union-attr]
    assert names[0] == "impetus-backup.json" and index["format"] == 1
    assert "models/org/hub-model/impetus.json" in names
    assert not any(n.endswith(".safetensors") or ".downloads" in n for n in names)

    fresh = Install(tmp_path / "b")
    done = fresh.run("restore", str(archive))
    assert done.returncode == 0, done.stderr
    assert "to rebuild: impetus models pull org/hub-model" in done.stdout
    assert "to rebuild: impetus models pull converted" in done.stdout
    assert KeyStore(fresh.home / "api_keys.json").match(key) is not None  # clients keep their key
    before, after = inst.snapshot(), fresh.snapshot()
    assert after["bench"] == before["bench"]
    for state in ("config/impetus/settings.toml", "home/api_keys.json"):
        assert after[state] == before[state]
    assert not fresh.models.exists()  # manifests are records, not models


def test_with_models_restores_the_folders(source: tuple[Install, str], tmp_path: Path) -> None:
    inst, _ = source
    archive = tmp_path / "full.tar.gz"
    assert inst.run("backup", "--with-models", str(archive)).returncode == 0
    fresh = Install(tmp_path / "b")
    done = fresh.run("restore", str(archive))
    assert done.returncode == 0, done.stderr
    assert "to rebuild" not in done.stdout
    for model in ("org/hub-model", "converted", "by-hand"):
        for f in ("config.json", "model.safetensors"):
            assert (fresh.models / model / f).read_bytes() == (inst.models / model / f).read_bytes()
    assert not (fresh.models / ".downloads").exists()


def test_refuses_to_overwrite_without_force(source: tuple[Install, str], tmp_path: Path) -> None:
    inst, _ = source
    archive = tmp_path / "impetus.tar.gz"
    archive.write_bytes(b"an older archive")
    done = inst.run("backup", str(archive))
    assert done.returncode == 1 and "--force" in done.stderr
    assert archive.read_bytes() == b"an older archive"
    assert inst.run("backup", "--force", str(archive)).returncode == 0

    # restoring over existing state: refused, and nothing changed
    KeyStore(inst.home / "api_keys.json").create("made after the backup")
    before = inst.snapshot()
    done = inst.run("restore", str(archive))
    assert done.returncode == 1 and "exists" in done.stderr and "--force" in done.stderr
    assert inst.snapshot() == before
    done = inst.run("restore", "--force", str(archive))
    assert done.returncode == 0, done.stderr
    assert len(KeyStore(inst.home / "api_keys.json").records()) == 1  # the archived key only


def _rewrite(archive: Path, edit_index: object = None, edit_member: object = None) -> bytes:
    """The archive with its index and/or one member changed (a damaged or foreign archive)."""
    out = io.BytesIO()
    with tarfile.open(archive) as src, tarfile.open(fileobj=out, mode="w:gz") as dst:
        for m in src.getmembers():
            data = src.extractfile(m).read()  # type: ignore[union-attr]
            if m.name == "impetus-backup.json" and callable(edit_index):
                data = json.dumps(edit_index(json.loads(data))).encode()
            elif m.name.endswith("api_keys.json") and callable(edit_member):
                data = edit_member(data)
            m.size = len(data)
            dst.addfile(m, io.BytesIO(data))
    return out.getvalue()


@pytest.mark.parametrize("damage", ["truncated", "checksum", "format", "escape", "not-a-backup"])
def test_bad_archives_change_nothing(
    source: tuple[Install, str], tmp_path: Path, damage: str
) -> None:
    inst, _ = source
    good = tmp_path / "good.tar.gz"
    assert inst.run("backup", str(good)).returncode == 0
    bad = tmp_path / "bad.tar.gz"
    if damage == "truncated":
        bad.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    elif damage == "checksum":
        bad.write_bytes(_rewrite(good, edit_member=lambda b: b.replace(b'"ci"', b'"CI"')))
    elif damage == "format":
        bad.write_bytes(_rewrite(good, edit_index=lambda i: {**i, "format": 99}))
    elif damage == "escape":
        bad.write_bytes(_rewrite(good, edit_index=lambda i: {**i, "models": ["../../outside"]}))
    else:
        bad.write_bytes(gzip.compress(b"not a tar file at all"))
    fresh = Install(tmp_path / "b")
    done = fresh.run("restore", "--force", str(bad))
    assert done.returncode == 1, done.stdout
    message = {
        "truncated": "damaged or truncated",
        "checksum": "checksum mismatch",
        "format": "backup format 99",
        "escape": "unsafe member name",
        "not-a-backup": "cannot read",
    }[damage]
    assert message in done.stderr, done.stderr
    assert fresh.snapshot() == {}  # nothing written, not even part of it
    assert not (tmp_path / "outside").exists()
