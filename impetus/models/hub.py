"""Downloading MLX models from the Hugging Face hub into the Hugging Face cache.

The files go through huggingface-hub's own download path (`hf_hub_download`, which fetches
Xet-backed files through `hf_xet` where it is installed) into the standard cache layout
(`models--ORG--NAME/blobs`, `snapshots/<commit>`, `refs/main`), so that a model pulled here is
what `mlx_lm.server --model ORG/NAME`, `mlx_lm.manage`, `hf cache scan` and `scan_cache_dir()`
see, and a model they downloaded is what impetus lists (`hf_cache`). `HF_ENDPOINT` and the
cache's environment variables are read per call (huggingface-hub reads them once, at import).

What impetus adds around that path:

* the file list comes first (`HfApi.model_info`): repos that mlx-lm cannot load (no config.json, a
  model_type it lacks, no safetensors) are refused before any weight is fetched, config.json is
  fetched first and checked, and the byte total is known before the first byte;
* progress: a `tqdm_class` that huggingface-hub feeds with byte counts turns them into PullProgress
  events (bytes done / total over the whole pull, the current file, speed, ETA);
* cancel: that class raises when the pull is cancelled, between two chunks (256 KiB); the file's
  temporary `.incomplete` download is never linked into the snapshot (huggingface-hub 2.x deletes
  it, 1.x keeps it and resumes it next time); files completed before the cancel stay in the
  cache and are not fetched again;
* a lost connection: huggingface-hub 2.x resumes within its call; a file whose call still fails
  on the network is tried again (MAX_ATTEMPTS);
* checksums: huggingface-hub checks each file's size, not its content; impetus hashes every blob
  this pull downloaded (sha256 for LFS files, the git blob sha1 for the others, as listed by the
  hub) and on a mismatch removes the blob and its snapshot link;
* a free-space check of the cache before the download starts;
* once every file is in place, `snapshot_download` records the commit's file listing in the cache
  (what huggingface-hub's and mlx-lm's offline completeness check reads), then `refs/main`.

Files are fetched one after the other (config.json first, the weights last, largest last), so that
a pull cut short leaves a snapshot without weights, which no tool takes for a loadable model.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol, cast

import httpx
import huggingface_hub.constants
from huggingface_hub import HfApi, hf_hub_download, snapshot_download
from huggingface_hub.errors import (
    EntryNotFoundError,
    GatedRepoError,
    HfHubHTTPError,
    LocalEntryNotFoundError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)
from huggingface_hub.file_download import repo_folder_name
from huggingface_hub.utils import (
    build_hf_headers,
    filter_repo_objects,
    get_session,
    hf_raise_for_status,
)
from tqdm import tqdm

from impetus.models import folder as mf
from impetus.models import hf_cache
from impetus.models.errors import ModelError
from impetus.models.ids import validate_repo_id
from impetus.models.types import HubModel, PullProgress, SearchResult

# huggingface-hub >= 2 speaks httpx2, 1.x httpx; either may be installed beside the other
_HTTP_ERRORS: tuple[type[Exception], ...] = (httpx.HTTPError,)
_TRANSPORT_ERRORS: tuple[type[Exception], ...] = (httpx.TransportError,)
try:
    import httpx2  # type: ignore[import-not-found,unused-ignore]

    _HTTP_ERRORS += (httpx2.HTTPError,)
    _TRANSPORT_ERRORS += (httpx2.TransportError,)
except ImportError:  # pragma: no cover - depends on the installed huggingface-hub
    pass
# what a call to the hub raises when the hub or the network fails (and OSError: the disk)
_HUB_ERRORS: tuple[type[Exception], ...] = (HfHubHTTPError, *_HTTP_ERRORS, OSError)

ProgressCallback = Callable[[PullProgress], None]
log = logging.getLogger("impetus.models")

# huggingface-hub streams bodies in chunks of DOWNLOAD_CHUNK_SIZE (10 MiB), read per call; progress
# and cancel are only seen between chunks, so 10 MiB would mean seconds of latency on a slow link
CHUNK_BYTES = 256 * 1024
if huggingface_hub.constants.DOWNLOAD_CHUNK_SIZE > CHUNK_BYTES:
    huggingface_hub.constants.DOWNLOAD_CHUNK_SIZE = CHUNK_BYTES
MAX_ATTEMPTS = 3  # tries of one file after lost connections (each resumes where the last stopped)
# files hashed after their download take a second or more from this size (~300 MiB/s measured on
# a 2-core Xeon): a progress event says so, so that the pull does not look stuck meanwhile
VERIFY_NOTICE_BYTES = 256 * 2**20

# mlx-lm's own download list (mlx_lm.utils.DEFAULT_ALLOW_PATTERNS, kept equal by a test): with the
# same files, mlx-lm's offline check (`snapshot_download(local_files_only=True)`) finds the snapshot
# complete. `*.py` files are fetched but never run (impetus does not trust remote code).
ALLOW_PATTERNS = [
    "*.json",
    "model*.safetensors",
    "*.py",
    "tokenizer.model",
    "*.tiktoken",
    "tiktoken.model",
    "*.txt",
    "*.jsonl",
    "*.jinja",
]


class _Sibling(Protocol):
    rfilename: str
    size: int | None
    blob_id: str | None
    lfs: Any


def _endpoint() -> str | None:
    # huggingface_hub reads HF_ENDPOINT once, at import; read it per call so a later change counts
    value = os.environ.get("HF_ENDPOINT")
    return value.rstrip("/") if value else None


def wanted(path: str) -> bool:
    return bool(list(filter_repo_objects([path], allow_patterns=ALLOW_PATTERNS)))


def _hub_error(repo_id: str, e: Exception) -> ModelError:
    if isinstance(e, GatedRepoError):
        return ModelError(
            "download_failed",
            f"{repo_id} is gated: accept its terms on the hub and log in (HF_TOKEN)",
        )
    if isinstance(e, RevisionNotFoundError):
        return ModelError("model_not_found", f"{repo_id}: revision not found on the hub")
    if isinstance(e, RepositoryNotFoundError):
        return ModelError("model_not_found", f"{repo_id} was not found on the hub")
    if isinstance(e, LocalEntryNotFoundError):  # hf_hub_download's "no connection" (an OSError)
        return ModelError("download_failed", f"{repo_id}: the hub cannot be reached ({e})")
    if isinstance(e, HfHubHTTPError):
        status = e.response.status_code if e.response is not None else None
        if status == 404:
            return ModelError("model_not_found", f"{repo_id}: not found on the hub (404)")
        return ModelError("download_failed", f"{repo_id}: the hub answered {status}: {e}")
    if isinstance(e, EntryNotFoundError):
        return ModelError("download_failed", f"{repo_id}: {e}")
    return ModelError(
        "download_failed", f"{repo_id}: the hub cannot be reached ({type(e).__name__}: {e})"
    )


class _Tracker:
    """Turns byte counts into PullProgress events (throttled to `min_interval`)."""

    def __init__(
        self,
        repo_id: str,
        total: int,
        callback: ProgressCallback | None,
        min_interval: float,
        cancel: threading.Event | None,
    ) -> None:
        self.repo_id, self.total, self.callback = repo_id, total, callback
        self.min_interval, self.cancel = min_interval, cancel
        self.done = 0
        self.session_bytes = 0
        self.started = time.monotonic()
        self.last_emit = 0.0
        self.file: str | None = None
        self.lock = threading.Lock()  # hf_xet reports from its own threads

    def check_cancel(self) -> None:
        if self.cancel is not None and self.cancel.is_set():
            raise ModelError("cancelled", "download cancelled")

    def wait(self, seconds: float) -> None:
        """Sleep, or raise "cancelled" as soon as the pull is cancelled."""
        if self.cancel is None:
            time.sleep(seconds)
        elif self.cancel.wait(seconds):
            self.check_cancel()

    def add(self, n: int, *, received: bool) -> None:
        with self.lock:
            self.done += n
            if received:
                self.session_bytes += n
        self.emit()

    def emit(self, force: bool = False, message: str = "") -> None:
        now = time.monotonic()
        if self.callback is None or (not force and now - self.last_emit < self.min_interval):
            return
        self.last_emit = now
        elapsed = now - self.started
        speed = self.session_bytes / elapsed if elapsed > 0 else 0.0
        left = max(self.total - self.done, 0)
        self.callback(
            PullProgress(
                id=self.repo_id,
                status="downloading",
                bytes_done=self.done,
                bytes_total=self.total,
                speed=speed,
                eta=(left / speed) if speed > 0 else None,
                file=self.file,
                message=message,
            )
        )

    def bar_class(self) -> type:
        """A stand-in for tqdm that huggingface-hub instantiates per file download (its
        `tqdm_class`): byte counts go to this tracker, and a cancel raises between chunks."""
        tracker = self

        class _Bar:
            def __init__(self, *args: Any, **kwargs: Any) -> None:
                self.total = kwargs.get("total")
                self.n = int(kwargs.get("initial") or 0)
                if self.n:  # a partial file that huggingface-hub resumes (its 1.x releases)
                    tracker.add(self.n, received=False)

            def update(self, n: float | None = 1) -> None:
                tracker.check_cancel()
                k = int(n or 0)
                self.n += k
                tracker.add(k, received=k > 0)

            def update_transfer(self, n: float | None = 1) -> None:
                # network bytes of a Xet download (the bytes written to disk come via `update`)
                tracker.check_cancel()

            def __enter__(self) -> _Bar:
                return self

            def __exit__(self, *exc: object) -> None:
                return None

            def __getattr__(self, name: str) -> Callable[..., None]:
                # the rest of tqdm's surface (close, refresh, set_postfix_str, ...) draws a bar:
                # there is none to draw
                return lambda *args, **kwargs: None

        return _Bar


class _Silent(tqdm):  # type: ignore[misc,unused-ignore]
    """A tqdm that shows nothing (for calls whose bars would only repeat impetus's progress)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.pop("name", None)  # huggingface-hub's own tqdm option
        super().__init__(*args, **{**kwargs, "disable": True})


def _size(s: _Sibling) -> int:
    if s.lfs is not None:
        return int(s.lfs.size)
    return int(s.size or 0)


def _etag(s: _Sibling) -> str | None:
    """The name huggingface-hub gives the file's blob: sha256 for LFS files, else the git blob id."""
    return str(s.lfs.sha256) if s.lfs is not None else (str(s.blob_id) if s.blob_id else None)


def _verify(path: Path, s: _Sibling) -> str | None:
    """None when `path` holds the bytes the hub listed for `s`, else the checksum found."""
    if s.lfs is not None:
        h, expected = hashlib.sha256(), str(s.lfs.sha256)
    elif s.blob_id:
        h, expected = hashlib.sha1(), str(s.blob_id)
        h.update(f"blob {path.stat().st_size}\0".encode())
    else:
        return None
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return None if h.hexdigest() == expected else h.hexdigest()


def _check_listing(repo_id: str, names: list[str], all_names: list[str]) -> None:
    ggufs = [n for n in all_names if n.endswith(".gguf")]
    hint = (
        f"; it holds GGUF files ({', '.join(ggufs[:3])}): put one in the model directory to convert it"
        if ggufs
        else ""
    )
    if "config.json" not in names:
        raise ModelError(
            "invalid_request",
            f"{repo_id} is not an MLX-loadable model: it has no config.json{hint}",
        )
    if not any(list(filter_repo_objects([n], allow_patterns="model*.safetensors")) for n in names):
        raise ModelError(
            "invalid_request",
            f"{repo_id} is not an MLX-loadable model: it has no safetensors weights (model*.safetensors){hint}",
        )


def _free_bytes(path: Path) -> int:
    for p in (path, *path.parents):  # the cache may not exist yet
        if p.exists():
            return shutil.disk_usage(p).free
    return shutil.disk_usage("/").free


def download(
    repo_id: str,
    *,
    revision: str | None = None,
    token: str | None = None,
    progress: ProgressCallback | None = None,
    cancel: threading.Event | None = None,
    min_interval: float = 0.1,
) -> Path:
    """Download the MLX model `repo_id` into the Hugging Face cache; return its snapshot folder.

    `progress` gets "downloading" PullProgress events (at most one per `min_interval` seconds,
    plus one per finished file). Raises ModelError: model_not_found (unknown repo / revision),
    invalid_request (not an MLX model), download_failed (network, gated, checksum, disk),
    cancelled.
    """
    validate_repo_id(repo_id)
    endpoint = _endpoint()
    api = HfApi(endpoint=endpoint, token=token)
    try:
        info = api.model_info(repo_id, revision=revision, files_metadata=True, timeout=30.0)
    except _HUB_ERRORS as e:
        raise _hub_error(repo_id, e) from e
    siblings: list[_Sibling] = list(info.siblings or [])
    files = [s for s in siblings if wanted(s.rfilename)]
    _check_listing(repo_id, [s.rfilename for s in files], [s.rfilename for s in siblings])
    commit = str(info.sha)
    cache = hf_cache.cache_dir()
    try:
        # one impetus pull of a repo at a time (across processes), beside huggingface-hub's own
        # per-file locks: a second pull waits, then finds the files in place
        with mf.exclusive_lock(
            cache, f"impetus-pull--{repo_id}", cancel.is_set if cancel is not None else None
        ):
            tracker = _Tracker(
                repo_id, sum(_size(s) for s in files), progress, min_interval, cancel
            )
            return _download_commit(
                repo_id, revision or "main", commit, files, cache, endpoint, token, tracker
            )
    except ModelError:
        raise
    except (HfHubHTTPError, EntryNotFoundError) + _HTTP_ERRORS as e:
        raise _hub_error(repo_id, e) from e
    except OSError as e:
        if e.errno is None:  # huggingface-hub's own check: a file shorter than announced
            raise ModelError("download_failed", f"{repo_id}: {e}") from e
        # disk full, permission denied: huggingface-hub drops its partial file
        raise ModelError("download_failed", f"{repo_id}: cannot write to {cache}: {e}") from e


def _download_commit(
    repo_id: str,
    ref: str,
    commit: str,
    files: list[_Sibling],
    cache: Path,
    endpoint: str | None,
    token: str | None,
    tracker: _Tracker,
) -> Path:
    storage = cache / repo_folder_name(repo_id=repo_id, repo_type="model")
    snapshot = storage / "snapshots" / commit
    present = [s for s in files if (snapshot / s.rfilename).is_file()]
    missing = [s for s in files if s not in present]
    if not missing:
        tracker.done = tracker.total
        tracker.emit(force=True, message="already downloaded")
        _write_ref(storage, ref, commit)
        return snapshot
    need = sum(_size(s) for s in missing if not (storage / "blobs" / str(_etag(s))).is_file())
    free = _free_bytes(cache)
    if need > free:
        raise ModelError(
            "download_failed",
            f"not enough disk space for {repo_id} in {cache}: {need} bytes needed, {free} free",
        )
    if present:
        tracker.add(sum(_size(s) for s in present), received=False)
    # config.json first: refuse a model mlx-lm cannot run before fetching gigabytes
    order = sorted(
        missing,
        key=lambda s: (s.rfilename != "config.json", _is_weights(s.rfilename), _size(s)),
    )
    for s in order:
        tracker.check_cancel()
        tracker.file = s.rfilename
        base = tracker.done
        blob = storage / "blobs" / str(_etag(s))
        # a blob already in the cache (another revision's, another tool's) is not hashed again:
        # that would re-read gigabytes on every pull of a model that shares them
        fetched = not blob.is_file()
        path = _fetch(repo_id, s.rfilename, commit, cache, endpoint, token, tracker, base)
        if fetched:
            if _size(s) >= VERIFY_NOTICE_BYTES:  # seconds of hashing for large weights: say so
                tracker.emit(force=True, message=f"verifying the checksum of {s.rfilename}")
            found = _verify(path, s)
            if found is not None:
                # the link and the blob it names (a copy where the cache has no symlinks)
                path.unlink(missing_ok=True)
                blob.unlink(missing_ok=True)
                raise ModelError(
                    "download_failed",
                    f"{s.rfilename} is corrupted: checksum {found} != {_etag(s)} "
                    "(the file was removed; pull again)",
                )
        with tracker.lock:
            tracker.done = base + _size(s)  # exact, whatever retries counted twice
        tracker.emit(force=True)
        if s.rfilename == "config.json":
            _check_config(repo_id, snapshot)
    why = mf.problem(snapshot)
    if why is not None:
        raise ModelError("invalid_request", f"{repo_id} is not an MLX-loadable model: {why}")
    # every file is in place: snapshot_download only lists the commit's files, fetching nothing,
    # and records the listing (huggingface-hub >= 2), which its offline completeness check (the
    # one mlx-lm relies on) reads. The model is complete and verified without it: a failure here
    # is logged, not the pull's failure.
    try:
        snapshot_download(
            repo_id,
            revision=commit,
            cache_dir=cache,
            endpoint=endpoint,
            token=token,
            allow_patterns=ALLOW_PATTERNS,
            tqdm_class=cast(Any, _Silent),  # its bars count files, not bytes
        )
    except _HUB_ERRORS as e:
        log.warning("%s: the hub's file listing was not recorded in the cache: %s", repo_id, e)
    _write_ref(storage, ref, commit)
    return snapshot


def _fetch(
    repo_id: str,
    filename: str,
    commit: str,
    cache: Path,
    endpoint: str | None,
    token: str | None,
    tracker: _Tracker,
    base: int,
) -> Path:
    """One file through `hf_hub_download`, tried again after a lost connection: huggingface-hub
    2.x resumes within its own call; 1.x gives up at once, leaving a partial file it resumes."""
    attempt = 0
    while True:
        with tracker.lock:
            tracker.done = base  # what the new attempt counts (1.x: from the resumed size)
        try:
            path = hf_hub_download(
                repo_id,
                filename,
                revision=commit,
                cache_dir=cache,
                endpoint=endpoint,
                token=token,
                tqdm_class=cast(Any, tracker.bar_class()),
            )
        except ModelError:
            raise
        except _TRANSPORT_ERRORS as e:
            tracker.check_cancel()
            attempt += 1
            if attempt == MAX_ATTEMPTS:
                raise
            log.warning("%s/%s: %s; trying again", repo_id, filename, e)
            tracker.wait(2.0**attempt)
            continue
        except Exception:
            tracker.check_cancel()  # a cancel raised inside hf_xet's callback returns as its error
            raise
        tracker.check_cancel()  # hf_xet may also finish the file despite a cancel
        return Path(path)


def _is_weights(name: str) -> bool:
    return name.endswith(".safetensors")


def _write_ref(storage: Path, ref: str, commit: str) -> None:
    """Point `refs/<ref>` at `commit`, as huggingface-hub does for a branch or tag (only once the
    snapshot is complete: tools that follow refs/main find a whole model)."""
    if ref == commit:
        return
    path = storage / "refs" / ref
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    tmp.write_text(commit)
    os.replace(tmp, path)


def _check_config(repo_id: str, snapshot: Path) -> None:
    config = mf.read_config(snapshot)
    if config is None:
        raise ModelError(
            "invalid_request",
            f"{repo_id} is not an MLX-loadable model: its config.json is not JSON",
        )
    model_type = str(config.get("model_type", ""))
    if not mf.supported_model_type(model_type):
        raise ModelError(
            "invalid_request",
            f"{repo_id} is not an MLX-loadable model: model_type {model_type or '(none)'!r} is not supported by mlx-lm",
        )


def search(
    query: str, *, limit: int = 20, token: str | None = None, timeout: float = 10.0
) -> SearchResult:
    """MLX models on the hub matching `query`, most downloaded first; errors come back in `.error`.

    One request, no retries: with no network the caller learns it at once.
    """
    from huggingface_hub import constants

    base = _endpoint() or constants.ENDPOINT
    params: dict[str, Any] = {
        "filter": "mlx",
        "sort": "downloads",
        "direction": -1,
        "limit": max(1, min(limit, 100)),
    }
    if query:
        params["search"] = query
    try:
        r = get_session().get(
            f"{base}/api/models",
            params=params,
            headers=build_hf_headers(token=token),
            timeout=timeout,
        )
        hf_raise_for_status(r)
        items = r.json()
    except _HUB_ERRORS + (ValueError,) as e:
        return SearchResult(
            query=query, error=f"the hub cannot be searched: {type(e).__name__}: {e}"
        )
    models = []
    for it in items if isinstance(items, list) else []:
        if not isinstance(it, dict) or not (it.get("id") or it.get("modelId")):
            continue
        models.append(
            HubModel(
                id=str(it.get("id") or it.get("modelId")),
                downloads=it.get("downloads"),
                likes=it.get("likes"),
                last_modified=it.get("lastModified"),
                pipeline_tag=it.get("pipeline_tag"),
                tags=[str(t) for t in it.get("tags") or []],
            )
        )
    return SearchResult(query=query, models=models)
