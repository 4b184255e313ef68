"""`impetus backup FILE` / `impetus restore FILE`: the state impetus keeps, in one archive.

What impetus keeps, and what each part is worth:

- API keys (`HOME/api_keys.json`, hashes of the inference keys): losing them means issuing new
  keys to every client. Always in the archive.
- Benchmark history (`HOME/bench.sqlite`): runs cannot be re-measured on yesterday's machine.
  Always in the archive (copied with SQLite's online backup, consistent while in use).
- Configuration (the settings file, `$XDG_CONFIG_HOME/impetus/settings.toml` or the one named
  with `--settings-file`): always in the archive when it exists.
- Models (`MODELS/...`): downloads and GGUF conversions can be rebuilt (`impetus models pull`),
  so by default only their manifests (`impetus.json`: where each came from) are kept, and
  restore lists what to rebuild. `--with-models` puts the whole folders in (large).
- Safe to lose, never archived: the Hugging Face cache (where hub pulls go, shared with mlx-lm
  and the `hf` tools: pull again), lock files, partial downloads of earlier versions
  (`MODELS/.downloads`), logs.

The archive is a gzip'd tar with `impetus-backup.json` first: format version, impetus version,
and the SHA-256 of every member. Backup writes a temporary file beside FILE and renames it into
place; restore checks every checksum into a staging folder before anything is put in place, and
refuses to replace existing state unless `--force`.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import io
import json
import os
import shutil
import sqlite3
import sys
import tarfile
import tempfile
import time
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from impetus.config import Settings, SettingsError

FORMAT = 1
INDEX = "impetus-backup.json"
KEYS_FILE = "api_keys.json"  # impetus.api.service.KEYS_FILE (not imported: no Tornado here)
BENCH_FILE = "bench.sqlite"
MANIFEST = "impetus.json"  # impetus.models.gguf.MANIFEST


class BackupError(Exception):
    """A backup or restore that cannot be done; the message says why, for the command line."""


@dataclass(frozen=True)
class Locations:
    """Where this installation keeps each part of its state."""

    home: Path
    models: Path
    settings_file: Path

    @classmethod
    def of(cls, settings: Settings) -> Locations:
        from impetus.config import default_settings_file

        return cls(
            home=settings.home,
            models=settings.models_path,
            settings_file=settings.settings_file or default_settings_file(),
        )

    def target(self, name: str) -> Path:
        """The path an archive member is restored to (never outside these locations)."""
        parts = name.split("/")
        if name.startswith("/") or any(p in ("", ".", "..") for p in parts):
            raise BackupError(f"unsafe member name in the archive: {name!r}")
        part, _, rest = name.partition("/")
        if part == "state" and rest in (KEYS_FILE, BENCH_FILE):
            return self.home / rest
        if part == "config" and rest == "settings.toml":
            return self.settings_file
        if part == "models" and rest:
            return self.models / rest
        raise BackupError(f"unexpected member in the archive: {name!r}")


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def model_folders(models: Path) -> Iterator[Path]:
    """Model folders under MODELS (`name` or `org/name`), skipping hidden work folders."""
    if not models.is_dir():
        return
    for entry in sorted(models.iterdir()):
        if entry.name.startswith(".") or not entry.is_dir():
            continue
        if (entry / "config.json").is_file() or (entry / MANIFEST).is_file():
            yield entry
        else:  # an organisation folder of hub downloads
            for sub in sorted(entry.iterdir()):
                if not sub.name.startswith(".") and sub.is_dir():
                    yield sub


def _sqlite_copy(src: Path, dest: Path) -> None:
    """A consistent copy of a database that may be in use (SQLite's online backup)."""
    with (
        contextlib.closing(sqlite3.connect(f"file:{src}?mode=ro", uri=True)) as a,
        contextlib.closing(sqlite3.connect(dest)) as b,
    ):
        a.backup(b)


def backup(
    settings: Settings, dest: Path, *, with_models: bool = False, force: bool = False
) -> dict[str, Any]:
    """Write the archive to `dest` (atomically); returns its index."""
    from impetus import __version__

    if dest.exists() and not force:
        raise BackupError(f"{dest} exists; pass --force to replace it")
    loc = Locations.of(settings)
    files: list[tuple[str, Path]] = []  # (member name, file to read)
    skipped: list[str] = []
    dest.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".impetus-backup.", dir=dest.parent) as work:
        if (loc.home / KEYS_FILE).is_file():
            files.append((f"state/{KEYS_FILE}", loc.home / KEYS_FILE))
        if (loc.home / BENCH_FILE).is_file():
            copy = Path(work) / BENCH_FILE
            _sqlite_copy(loc.home / BENCH_FILE, copy)
            files.append((f"state/{BENCH_FILE}", copy))
        if loc.settings_file.is_file():
            files.append(("config/settings.toml", loc.settings_file))
        models: list[str] = []
        for folder in model_folders(loc.models):
            rel = folder.relative_to(loc.models).as_posix()
            if with_models:
                models.append(rel)
                for f in sorted(p for p in folder.rglob("*") if p.is_file()):
                    files.append((f"models/{rel}/{f.relative_to(folder).as_posix()}", f))
            elif (folder / MANIFEST).is_file():
                models.append(rel)
                files.append((f"models/{rel}/{MANIFEST}", folder / MANIFEST))
            else:
                skipped.append(rel)  # a folder put there by hand: no record of where it came from
        index: dict[str, Any] = {
            "format": FORMAT,
            "impetus": __version__,
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "with_models": with_models,
            "models": models,
            "not_archived": skipped,
            "members": [
                {"name": name, "size": path.stat().st_size, "sha256": _sha256(path)}
                for name, path in files
            ],
        }
        tmp = Path(work) / "archive.tar.gz"
        with tarfile.open(tmp, "w:gz") as tar:
            raw = json.dumps(index, indent=2).encode()
            info = tarfile.TarInfo(INDEX)
            info.size, info.mtime, info.mode = len(raw), int(time.time()), 0o600
            tar.addfile(info, io.BytesIO(raw))
            for name, path in files:
                tar.add(path, arcname=name, recursive=False)
        with tmp.open("rb") as written:
            os.fsync(written.fileno())
        os.chmod(tmp, 0o600)  # it holds key hashes and the configuration
        os.replace(tmp, dest)
    return index


def read_index(tar: tarfile.TarFile) -> dict[str, Any]:
    first = tar.next()
    if first is None or first.name != INDEX:
        raise BackupError(f"not an impetus backup (no {INDEX} first)")
    f = tar.extractfile(first)
    assert f is not None
    try:
        index = json.loads(f.read())
    except ValueError as e:
        raise BackupError(f"{INDEX} is not JSON: {e}") from None
    fmt = index.get("format")
    if fmt != FORMAT:
        raise BackupError(
            f"backup format {fmt!r} from impetus {index.get('impetus', '?')}; this impetus reads format {FORMAT}"
        )
    return index


def restore(settings: Settings, src: Path, *, force: bool = False) -> dict[str, Any]:
    """Put the archive's state in place; returns its index plus `rebuild` (models to pull)."""
    loc = Locations.of(settings)
    try:
        tar = tarfile.open(src, "r:gz")  # noqa: SIM115 - closed by the `with` below
    except (OSError, tarfile.TarError) as e:
        raise BackupError(f"cannot read {src}: {e}") from None
    with (
        tar,
        tempfile.TemporaryDirectory(
            prefix=".impetus-restore.", dir=_existing_parent(loc.home)
        ) as work,
    ):
        index = read_index(tar)
        expected = {m["name"]: m for m in index.get("members", [])}
        targets = {name: loc.target(name) for name in expected}
        rebuild: list[dict[str, Any]] = []
        for model_id in index.get("models", []):
            loc.target(f"models/{model_id}")  # checks the name
        staged: dict[str, Path] = {}
        try:
            for member in tar:
                if member.name == INDEX:  # read above
                    continue
                if member.name not in expected or not member.isfile():
                    raise BackupError(f"unexpected member in the archive: {member.name!r}")
                out = Path(work) / "files" / member.name
                out.parent.mkdir(parents=True, exist_ok=True)
                if _copy_hashed(tar, member, out) != expected[member.name]["sha256"]:
                    raise BackupError(f"{member.name}: checksum mismatch (a damaged archive)")
                staged[member.name] = out
        except (tarfile.TarError, EOFError, zlib.error) as e:
            raise BackupError(f"{src} is damaged or truncated: {e}") from None
        missing = set(expected) - set(staged)
        if missing:
            raise BackupError(f"the archive lacks {sorted(missing)[0]} (truncated?)")

        plan: list[tuple[Path, Path]] = []  # (staged file or folder, where it goes)
        for name, out in staged.items():
            if not name.startswith("models/"):
                plan.append((out, targets[name]))
        for model_id in index.get("models", []):
            folder = Path(work) / "files" / "models" / model_id
            dest = loc.target(f"models/{model_id}")
            if index.get("with_models"):
                plan.append((folder, dest))
            elif not dest.exists():
                # a manifest alone is a record of where the model came from, not a model
                manifest = json.loads((folder / MANIFEST).read_text())
                rebuild.append({"id": model_id, "source": manifest.get("source", {})})
        clashes = [str(dest) for _, dest in plan if dest.exists()]
        if clashes and not force:
            raise BackupError(
                f"{clashes[0]} exists ({len(clashes)} in all); pass --force to replace the current state"
            )
        for staged_path, dest in plan:
            dest.parent.mkdir(parents=True, exist_ok=True)
            if staged_path.is_dir():
                from impetus.models.gguf import replace_dir

                # a rename, so the folder goes across only within one file system: stage beside it
                beside = Path(
                    tempfile.mkdtemp(prefix=f".{dest.name}.", suffix=".restore", dir=dest.parent)
                )
                shutil.move(str(staged_path), beside / "x")
                try:
                    replace_dir(beside / "x", dest)
                finally:
                    shutil.rmtree(beside, ignore_errors=True)
            else:
                _replace_file(staged_path, dest)
    return {**index, "rebuild": rebuild}


def _copy_hashed(tar: tarfile.TarFile, member: tarfile.TarInfo, out: Path) -> str:
    """Write one member to `out` (never to a path of the archive's choosing); its SHA-256."""
    f = tar.extractfile(member)
    assert f is not None
    h = hashlib.sha256()
    with out.open("wb") as w:
        while block := f.read(1 << 20):
            h.update(block)
            w.write(block)
    return h.hexdigest()


def _existing_parent(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    return path


def _replace_file(src: Path, dest: Path) -> None:
    """Copy beside `dest`, fsync, rename over it: readers see the old file or the new one."""
    fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".restore", dir=dest.parent)
    try:
        with os.fdopen(fd, "wb") as w, src.open("rb") as r:
            shutil.copyfileobj(r, w)
            w.flush()
            os.fsync(w.fileno())
        os.chmod(tmp, 0o600)
        os.replace(tmp, dest)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


# ---- command line ----------------------------------------------------------------------------


def _settings(args: argparse.Namespace) -> Settings:
    return Settings.load(
        {"home": args.home, "model_dir": args.model_dir, "settings_file": args.settings_file}
    )


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("file", type=Path, metavar="FILE", help="the archive (.tar.gz)")
    p.add_argument("--force", action="store_true", help="replace what is there")
    p.add_argument(
        "--home", type=Path, metavar="DIR", help="impetus state (default: as `impetus serve`)"
    )
    p.add_argument(
        "--model-dir", type=Path, metavar="DIR", help="models folder (default: HOME/models)"
    )
    p.add_argument("--settings-file", type=Path, metavar="FILE", help="the TOML settings file")


def cmd_backup(args: argparse.Namespace) -> int:
    try:
        index = backup(_settings(args), args.file, with_models=args.with_models, force=args.force)
    except (BackupError, SettingsError, OSError, sqlite3.Error) as e:
        print(f"impetus backup: {e}", file=sys.stderr)
        return 1
    total = sum(m["size"] for m in index["members"])
    print(f"wrote {args.file}: {len(index['members'])} files, {total} bytes before compression")
    for rel in index["not_archived"]:
        print(f"  not archived (no manifest, put there by hand): models/{rel}")
    return 0


def cmd_restore(args: argparse.Namespace) -> int:
    try:
        result = restore(_settings(args), args.file, force=args.force)
    except (BackupError, SettingsError, OSError) as e:
        print(f"impetus restore: {e}", file=sys.stderr)
        return 1
    print(
        f"restored {args.file} (impetus {result['impetus']}, {result['created']}): "
        f"{len(result['members'])} files"
    )
    for model in result["rebuild"]:
        source = model["source"]
        origin = source.get("repo") or source.get("path") or source.get("type", "?")
        print(f"  to rebuild: impetus models pull {model['id']}   (from {origin})")
    return 0


def _command(
    subparsers: Any, name: str, func: Callable[[argparse.Namespace], int], help: str
) -> argparse.ArgumentParser:
    """`backup` and `restore` share this module's text as their description and the archive
    and state-location options."""
    from impetus.cli import documented_parser

    p = documented_parser(subparsers, name, __doc__, help)
    _common(p)
    p.set_defaults(func=func)
    return p


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    b = _command(
        subparsers,
        "backup",
        cmd_backup,
        "archive impetus's state: keys, benchmark history, configuration, model manifests",
    )
    b.add_argument("--with-models", action="store_true", help="include the model weights (large)")
    _command(
        subparsers, "restore", cmd_restore, "put back the state of an `impetus backup` archive"
    )
    return b
