"""Downloading MLX models from the Hugging Face hub, with progress, resume, cancel and checksums.

Built on huggingface-hub: `HfApi.model_info` lists the files of a commit with their sizes and
hashes; its HTTP session (auth, proxies, user agent, offline mode) fetches them; `HF_ENDPOINT`
is honoured (read per call).
What it lacks here is done here:

* resume across calls: `hf_hub_download` deletes a partial file when a download stops, so each file
  is streamed into a stable `<name>.incomplete` under `MODELS/.downloads/<org>--<name>@<commit>/`
  and continued with a Range request next time (after a cancel, a lost connection, a crash);
* cancel: a `threading.Event` checked between chunks;
* checksums: every file is hashed as it arrives (sha256 for LFS files, the git blob sha1 for the
  others) and compared with the hub's record; a mismatch deletes the file;
* atomic result: the staging folder becomes `MODELS/<org>/<name>` by one rename once every file
  is complete and verified, so a cancelled or failed download never looks like a usable model.

Repos that mlx-lm cannot load (no config.json, a model_type it lacks, no safetensors) are refused
before any weight is fetched.
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
import os
import re
import shutil
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

from huggingface_hub import HfApi, hf_hub_url
from huggingface_hub.errors import (
    GatedRepoError,
    HfHubHTTPError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)
from huggingface_hub.utils import build_hf_headers, get_session, hf_raise_for_status

from impetus.models import folder as mf
from impetus.models.errors import ModelError
from impetus.models.gguf import MANIFEST, read_manifest, replace_dir
from impetus.models.ids import validate_repo_id
from impetus.models.types import HubModel, PullProgress, SearchResult

try:  # huggingface-hub >= 2 speaks httpx2, 1.x httpx
    import httpx2 as _httpx  # type: ignore[import-not-found,unused-ignore]
except ImportError:  # pragma: no cover - depends on the installed huggingface-hub
    import httpx as _httpx  # type: ignore[no-redef,unused-ignore]

ProgressCallback = Callable[[PullProgress], None]

CHUNK_BYTES = 256 * 1024  # cancel / progress granularity
MAX_RESUMES = 5  # reconnections per file after a dropped connection
DOWNLOADS_DIR = ".downloads"

# the files mlx-lm reads (its own download list, without remote code)
ALLOW_PATTERNS = [
    "*.json",
    "model*.safetensors",
    "tokenizer.model",
    "*.tiktoken",
    "tiktoken.model",
    "*.txt",
    "*.jsonl",
    "*.jinja",
]
# sentence-transformers keeps its pooling settings in numbered module folders
_ST_MODULE = re.compile(r"^\d+_[A-Za-z]+/[^/]+\.json$")


_TRANSIENT = {408, 429, 500, 502, 503, 504}


class _Transient(Exception):
    """A server answer worth retrying (overload, gateway errors)."""


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
    if "/" not in path:
        return any(fnmatch.fnmatch(path, p) for p in ALLOW_PATTERNS)
    return bool(_ST_MODULE.fullmatch(path))


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
    if isinstance(e, HfHubHTTPError):
        status = e.response.status_code if e.response is not None else None
        if status == 404:
            return ModelError("model_not_found", f"{repo_id}: not found on the hub (404)")
        return ModelError("download_failed", f"{repo_id}: the hub answered {status}: {e}")
    return ModelError(
        "download_failed", f"{repo_id}: the hub cannot be reached ({type(e).__name__}: {e})"
    )


class _Tracker:
    """Turns byte counts into PullProgress events (throttled to `min_interval`)."""

    def __init__(
        self, repo_id: str, total: int, callback: ProgressCallback | None, min_interval: float
    ) -> None:
        self.repo_id, self.total, self.callback, self.min_interval = (
            repo_id,
            total,
            callback,
            min_interval,
        )
        self.done = 0
        self.session_bytes = 0
        self.started = time.monotonic()
        self.last_emit = 0.0
        self.file: str | None = None

    def add(self, n: int, *, received: bool) -> None:
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


def _new_hasher(sibling: _Sibling) -> tuple[Any, str | None]:
    """(hasher, expected hex digest): sha256 of LFS files, git blob sha1 of the others."""
    if sibling.lfs is not None:
        return hashlib.sha256(), str(sibling.lfs.sha256)
    h = hashlib.sha1()
    if sibling.blob_id and sibling.size is not None:
        h.update(f"blob {sibling.size}\0".encode())
        return h, str(sibling.blob_id)
    return h, None


def _wait(seconds: float, cancel: threading.Event | None) -> None:
    if cancel is None:
        time.sleep(seconds)
    elif cancel.wait(seconds):
        raise ModelError("cancelled", "download cancelled")


def _fetch(
    url: str,
    sibling: _Sibling,
    final: Path,
    headers: dict[str, str],
    tracker: _Tracker,
    cancel: threading.Event | None,
) -> None:
    """Stream one file into `final` (via `final.incomplete`), resuming what an earlier try left."""
    part = final.with_name(final.name + ".incomplete")
    final.parent.mkdir(parents=True, exist_ok=True)
    size = sibling.lfs.size if sibling.lfs is not None else sibling.size
    hasher, expected = _new_hasher(sibling)
    have = part.stat().st_size if part.exists() else 0
    if size is not None and have > size:
        part.unlink()
        have = 0
    if have:
        with open(part, "rb") as f:
            while chunk := f.read(1 << 20):
                hasher.update(chunk)
        tracker.add(have, received=False)
    part.touch()
    resumes = 0
    while size is None or have < size:
        req = {**headers, "Accept-Encoding": "identity"}
        if have:
            req["Range"] = f"bytes={have}-"
        try:
            # the session's own stream, not huggingface_hub's retrying wrapper: a connection lost
            # mid-body must come back here, to continue from the bytes already on disk
            with get_session().stream("GET", url, headers=req, timeout=30.0) as resp:
                if resp.status_code in _TRANSIENT:
                    raise _Transient(f"the server answered {resp.status_code}")
                hf_raise_for_status(resp)
                mode = "ab"
                if have and resp.status_code != 206:  # the server ignored Range: start over
                    tracker.add(-have, received=False)
                    hasher, expected = _new_hasher(sibling)
                    have, mode = 0, "wb"
                with open(part, mode) as f:
                    for chunk in resp.iter_bytes(CHUNK_BYTES):
                        if cancel is not None and cancel.is_set():
                            raise ModelError("cancelled", "download cancelled")
                        f.write(chunk)
                        hasher.update(chunk)
                        have += len(chunk)
                        tracker.add(len(chunk), received=True)
            if size is None:
                break
            if have < size:  # the body ended early without an error
                raise _httpx.RemoteProtocolError("response ended before the whole file")
        except (_httpx.TransportError, ConnectionError, _Transient) as e:
            resumes += 1
            if resumes > MAX_RESUMES:
                raise ModelError(
                    "download_failed",
                    f"{sibling.rfilename}: connection lost {resumes} times ({e}); run the pull again to resume",
                ) from e
            _wait(min(2.0**resumes * 0.25, 8.0), cancel)
    if size is not None and have != size:
        part.unlink(missing_ok=True)
        raise ModelError(
            "download_failed", f"{sibling.rfilename}: got {have} bytes, expected {size}"
        )
    if expected is not None and hasher.hexdigest() != expected:
        part.unlink(missing_ok=True)
        raise ModelError(
            "download_failed",
            f"{sibling.rfilename} is corrupted: checksum {hasher.hexdigest()} != {expected} "
            "(the file was removed; pull again)",
        )
    os.replace(part, final)


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
    if not any(fnmatch.fnmatch(n, "model*.safetensors") for n in names):
        raise ModelError(
            "invalid_request",
            f"{repo_id} is not an MLX-loadable model: it has no safetensors weights (model*.safetensors){hint}",
        )


def download(
    repo_id: str,
    models_path: Path,
    *,
    revision: str | None = None,
    token: str | None = None,
    progress: ProgressCallback | None = None,
    cancel: threading.Event | None = None,
    min_interval: float = 0.1,
) -> Path:
    """Download the MLX model `repo_id` into `models_path/ORG/NAME` and return that folder.

    `progress` gets "downloading" PullProgress events (at most one per `min_interval` seconds,
    plus one per finished file). Raises ModelError: model_not_found (unknown repo / revision),
    invalid_request (not an MLX model), download_failed (network, checksum, disk), cancelled.
    """
    validate_repo_id(repo_id)
    org, name = repo_id.split("/")
    dest = models_path / org / name
    api = HfApi(endpoint=_endpoint(), token=token)
    try:
        info = api.model_info(repo_id, revision=revision, files_metadata=True, timeout=30.0)
    except (HfHubHTTPError, _httpx.HTTPError, OSError) as e:
        raise _hub_error(repo_id, e) from e
    siblings: list[_Sibling] = list(info.siblings or [])
    files = [s for s in siblings if wanted(s.rfilename)]
    _check_listing(repo_id, [s.rfilename for s in files], [s.rfilename for s in siblings])
    commit = str(info.sha)
    try:
        with mf.exclusive_lock(models_path, repo_id, cancel.is_set if cancel is not None else None):
            return _download_commit(
                repo_id, commit, files, dest, token, progress, cancel, min_interval
            )
    except OSError as e:  # the lock or the staging folder: the models folder is not writable
        raise ModelError("download_failed", f"{repo_id}: cannot write to {models_path}: {e}") from e


def _download_commit(
    repo_id: str,
    commit: str,
    files: list[_Sibling],
    dest: Path,
    token: str | None,
    progress: ProgressCallback | None,
    cancel: threading.Event | None,
    min_interval: float,
) -> Path:
    org, name = repo_id.split("/")
    models_path = dest.parent.parent
    manifest = read_manifest(dest)
    if (
        manifest
        and manifest.get("source", {}).get("revision") == commit
        and mf.is_model_folder(dest)
    ):
        total = sum(_size(s) for s in files)
        if progress:
            progress(
                PullProgress(
                    id=repo_id,
                    status="downloading",
                    bytes_done=total,
                    bytes_total=total,
                    message="already downloaded",
                )
            )
        return dest

    downloads = models_path / DOWNLOADS_DIR
    staging = downloads / f"{org}--{name}@{commit}"
    for stale in downloads.glob(f"{org}--{name}@*"):  # partial downloads of older commits
        if stale != staging:
            shutil.rmtree(stale, ignore_errors=True)
    staging.mkdir(parents=True, exist_ok=True)
    # config.json first: refuse a model mlx-lm cannot run before fetching gigabytes
    order = sorted(
        files,
        key=lambda s: (s.rfilename != "config.json", not s.rfilename.endswith(".json"), _size(s)),
    )
    total = sum(_size(s) for s in files)
    tracker = _Tracker(repo_id, total, progress, min_interval)
    headers = build_hf_headers(token=token)
    endpoint = _endpoint()
    try:
        free = shutil.disk_usage(staging).free
        need = total - mf.folder_bytes(staging)
        if need > free:
            raise ModelError(
                "download_failed",
                f"not enough disk space for {repo_id}: {need} bytes needed, {free} free",
            )
        for s in order:
            tracker.file = s.rfilename
            target = staging / s.rfilename
            if target.is_file():
                tracker.add(target.stat().st_size, received=False)
            else:
                url = hf_hub_url(repo_id, s.rfilename, revision=commit, endpoint=endpoint)
                _fetch(url, s, target, headers, tracker, cancel)
            tracker.emit(force=True)
            if s.rfilename == "config.json":
                _check_config(repo_id, staging)
        why = mf.problem(staging)
        if why is not None:
            raise ModelError("invalid_request", f"{repo_id} is not an MLX-loadable model: {why}")
        record = {
            "format": 1,
            "source": {"type": "hub", "repo": repo_id, "revision": commit},
            "downloaded_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
        (staging / MANIFEST).write_text(json.dumps(record, indent=2) + "\n")
        dest.parent.mkdir(parents=True, exist_ok=True)
        replace_dir(staging, dest)
    except ModelError as e:
        if e.code == "invalid_request":  # nothing worth resuming
            shutil.rmtree(staging, ignore_errors=True)
        raise
    except (HfHubHTTPError, _httpx.HTTPError) as e:
        raise _hub_error(f"{repo_id}/{tracker.file}", e) from e
    except OSError as e:  # disk full, permissions: the partial files stay for a later resume
        raise ModelError("download_failed", f"{repo_id}: {e}") from e
    return dest


def _size(s: _Sibling) -> int:
    if s.lfs is not None:
        return int(s.lfs.size)
    return int(s.size or 0)


def _check_config(repo_id: str, staging: Path) -> None:
    config = mf.read_config(staging)
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
    except (HfHubHTTPError, _httpx.HTTPError, OSError, ValueError) as e:
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
