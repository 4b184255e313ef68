"""The client's exceptions: errors answered by the server, and a server that cannot be reached."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import httpx


class ImpetusError(Exception):
    """An error answered by the server, in OpenAI's shape (`code` is the engine's code)."""

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        code: str | None = None,
        type: str | None = None,
        param: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.code = code
        self.type = type
        self.param = param

    def __str__(self) -> str:
        where = f"HTTP {self.status}" if self.status else "impetus"
        code = f" {self.code}" if self.code else ""
        return f"{where}{code}: {self.message}"

    @classmethod
    def from_response(cls, status: int, body: bytes | str) -> ImpetusError:
        text = body.decode("utf-8", "replace") if isinstance(body, bytes) else body
        try:
            data = json.loads(text)
        except ValueError:
            data = None
        if isinstance(data, dict):
            return cls.from_payload(data, status=status)
        text = text.strip()
        if text.startswith("<"):  # an HTML error page (a proxy, or Jupyter's own 404 page)
            text = ""
        return cls(text[:500] or httpx.codes.get_reason_phrase(status), status=status)

    @classmethod
    def from_payload(cls, data: Mapping[str, Any], *, status: int | None = None) -> ImpetusError:
        err = data.get("error", data)
        if isinstance(err, Mapping):
            return cls(
                str(err.get("message") or err),
                status=status,
                code=_opt_str(err.get("code")),
                type=_opt_str(err.get("type")),
                param=_opt_str(err.get("param")),
            )
        # jupyter_server's own errors: {"message": ..., "reason": ...}
        return cls(str(data.get("message") or err), status=status)


class ServerUnavailable(ImpetusError):
    """The server could not be reached (not started yet, restarting, or gone)."""


def _opt_str(value: Any) -> str | None:
    return None if value is None else str(value)
