"""The grammar of model ids, checked before the file system or the network is touched.

A registry id is NAME or ORG/NAME of letters, digits, '.', '_', '-' (at most one '/', never
'..'); a hub repo id is ORG/NAME with the hub's own rules (no '--', which the Hugging Face cache
uses as its separator). Paths (`/...`, `./...`, `../...`, `~/...`) are a separate kind of id,
accepted only where the caller allows them.
"""

from __future__ import annotations

import re
from pathlib import Path

from impetus.models.errors import ModelError

_PART = r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}"
MODEL_ID = re.compile(rf"^{_PART}(?:/{_PART})?$")
_REPO_PART = r"[A-Za-z0-9](?:[A-Za-z0-9._-]{0,94}[A-Za-z0-9_])?"
REPO_ID = re.compile(rf"^{_REPO_PART}/{_REPO_PART}$")
# staging, lock and partial folders in the model directory start with a dot: never ids
HIDDEN = (".",)


def is_path_like(model_id: str) -> bool:
    return model_id.startswith(("/", "./", "../", "~")) or model_id in (".", "..")


def is_model_id(model_id: str) -> bool:
    return bool(MODEL_ID.fullmatch(model_id)) and ".." not in model_id


def validate_id(model_id: str) -> str:
    """Return `model_id` if it is a well-formed registry id, else raise invalid_request."""
    if not is_model_id(model_id):
        raise ModelError(
            "invalid_request",
            f"invalid model id {model_id!r}: use NAME or ORG/NAME made of letters, digits, '.', '_', '-'",
            param="model",
        )
    return model_id


def validate_repo_id(repo_id: str) -> str:
    """Return `repo_id` if it is a hub repo id (ORG/NAME), else raise invalid_request."""
    if not REPO_ID.fullmatch(repo_id) or ".." in repo_id or "--" in repo_id:
        raise ModelError(
            "invalid_request",
            f"{repo_id!r} is not a hub repo id (expected ORG/NAME of letters, digits, '.', '_', '-')",
            param="id",
        )
    return repo_id


def inside(path: Path, root: Path) -> bool:
    """True when `path` (links resolved) lies under `root`."""
    return path.resolve().is_relative_to(root.resolve())
