"""Reading (and deleting from) the Hugging Face hub cache.

One rule picks a repo's snapshot everywhere: the revision `refs/main` names, else the newest
snapshot folder. The cache is found from the environment at call time, as huggingface_hub
itself does when asked per call (its constants are read once, at import).
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

from huggingface_hub.file_download import repo_folder_name

from impetus.models.ids import is_model_id

_PREFIX = "models--"


def cache_dir() -> Path:
    """The hub cache: HF_HUB_CACHE, else HF_HOME/hub, else XDG_CACHE_HOME or ~/.cache."""
    if v := os.environ.get("HF_HUB_CACHE"):
        return Path(v).expanduser()
    if v := os.environ.get("HF_HOME"):
        return Path(v).expanduser() / "hub"
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "huggingface" / "hub"


def snapshot(repo_id: str) -> Path | None:
    """The snapshot folder of model repo `repo_id` (the `main` ref, else the newest)."""
    return _snapshot(cache_dir() / repo_folder_name(repo_id=repo_id, repo_type="model"))


def _snapshot(repo: Path) -> Path | None:
    with contextlib.suppress(OSError):
        snap = repo / "snapshots" / (repo / "refs" / "main").read_text().strip()
        if snap.is_dir():
            return snap
    snaps = sorted(
        (p for p in (repo / "snapshots").glob("*") if p.is_dir()), key=lambda p: p.stat().st_mtime
    )
    return snaps[-1] if snaps else None


def repos() -> list[tuple[str, Path]]:
    """(repo id, snapshot folder) of every model repo in the cache that has a snapshot."""
    cache = cache_dir()
    if not cache.is_dir():
        return []
    out = []
    for repo in sorted(cache.glob(f"{_PREFIX}*")):
        # the cache's own naming: models--ORG--NAME (hub ids never contain "--")
        repo_id = repo.name.removeprefix(_PREFIX).replace("--", "/")
        snap = _snapshot(repo) if repo.is_dir() and is_model_id(repo_id) else None
        if snap is not None:
            out.append((repo_id, snap))
    return out


def delete(repo_id: str) -> tuple[list[str], int]:
    """Delete every revision of `repo_id` (huggingface_hub keeps blobs shared with other
    revisions consistent); returns the folders removed and the bytes freed."""
    from huggingface_hub import scan_cache_dir

    info = scan_cache_dir(cache_dir())
    revisions = [
        r.commit_hash
        for repo in info.repos
        if repo.repo_id == repo_id and repo.repo_type == "model"
        for r in repo.revisions
    ]
    strategy = info.delete_revisions(*revisions)
    removed = [str(p) for p in strategy.repos]
    strategy.execute()
    return removed, strategy.expected_freed_size
