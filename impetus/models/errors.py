"""The one exception of the model package.

`ModelError` is an `EngineError` (from `impetus.protocol`, the vocabulary shared by every part):
the engine can let it cross the process boundary as is, and the api maps its `code` to an HTTP
status like any other engine error (see docs/architecture.md). The model package imports nothing
of `impetus.engine`: the dependency runs one way, engine -> models.
"""

from __future__ import annotations

from typing import Literal

from impetus.protocol import EngineError

# the subset of impetus.protocol.ErrorCode that the model package raises
ModelErrorCode = Literal[
    "model_not_found",  # unknown id, repo or file
    "invalid_request",  # a malformed id, a path outside the model directory, a refused action
    "model_load_failed",  # corrupted / unparseable / unsupported files
    "download_failed",  # network or hub failure while downloading
    "cancelled",  # a download or conversion stopped at the caller's request
]


class ModelError(EngineError):
    """A model could not be found, fetched, converted or removed; `message` says what and why."""

    def __init__(self, code: ModelErrorCode, message: str, param: str | None = None) -> None:
        super().__init__(code, message, param)
