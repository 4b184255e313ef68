"""Errors in OpenAI's shape: `{"error": {"message", "type", "param", "code"}}`, for every status.

Handlers raise `APIError`; engine failures (`EngineError`) and request validation failures
(pydantic `ValidationError`) are translated here, so the mapping lives in one place and matches
the table in docs/architecture.md.
"""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError

from impetus.protocol import EngineError, ErrorCode

# EngineError.code -> (HTTP status, OpenAI error type)
ENGINE_CODES: dict[ErrorCode, tuple[int, str]] = {
    "invalid_request": (400, "invalid_request_error"),
    "context_length_exceeded": (400, "invalid_request_error"),
    "model_not_found": (404, "invalid_request_error"),
    "queue_full": (429, "rate_limit_error"),
    # Not enough memory to load the model is a state of the server, not a bad request: 503 with a
    # message that says what to unload or which budget to raise.
    "out_of_memory": (503, "server_error"),
    # a request whose KV cache (n x (prompt + max_tokens)) exceeds what the budget leaves after
    # the weights: no retry helps, so a 400 naming n or max_tokens
    "kv_cache_too_large": (400, "invalid_request_error"),
    "model_load_failed": (500, "server_error"),
    "download_failed": (502, "server_error"),
    "cancelled": (409, "invalid_request_error"),
    "engine_restarted": (503, "server_error"),
    "model_unloaded": (503, "server_error"),  # unloaded (admin, eviction) while this request ran
    "engine_unavailable": (503, "server_error"),
    "timeout": (504, "server_error"),
    "internal": (500, "server_error"),
}

# Default OpenAI error type per HTTP status, for errors raised without an explicit type.
STATUS_TYPES: dict[int, str] = {
    400: "invalid_request_error",
    401: "invalid_request_error",
    403: "permission_error",
    404: "invalid_request_error",
    405: "invalid_request_error",
    409: "invalid_request_error",
    413: "invalid_request_error",
    429: "rate_limit_error",
}

RETRY_AFTER_SECONDS = 1


class APIError(Exception):
    """An error the api answers with; `status` is the HTTP status."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        type: str | None = None,
        param: str | None = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type or STATUS_TYPES.get(status, "server_error")
        self.param = param
        self.code = code
        self.headers = dict(headers or {})

    def body(self) -> dict[str, Any]:
        return {
            "error": {
                "message": self.message,
                "type": self.type,
                "param": self.param,
                "code": self.code,
            }
        }

    @classmethod
    def from_engine(cls, err: EngineError) -> APIError:
        status, type_ = ENGINE_CODES.get(err.code, (500, "server_error"))
        headers = {"Retry-After": str(RETRY_AFTER_SECONDS)} if status in (429, 503) else {}
        return cls(status, err.message, type=type_, param=err.param, code=err.code, headers=headers)

    @classmethod
    def from_validation(cls, err: ValidationError) -> APIError:
        """The first problem, naming the parameter the way OpenAI does (`messages[0].role`)."""
        first = err.errors(include_url=False)[0]
        param = loc_to_param(first.get("loc", ()))
        msg = first.get("msg", "invalid value")
        cause = (first.get("ctx") or {}).get("error")
        if isinstance(cause, ValueError) and isinstance(getattr(cause, "param", None), str):
            # a model-level check that knows which parameter it is about
            param = f"{param}.{cause.param}" if param else cause.param  # type: ignore[attr-defined]
            return cls(400, f"{cause}.", param=param, code="invalid_value")
        if first.get("type") == "missing":
            message = f"Missing required parameter: '{param}'."
        else:
            message = f"Invalid value for '{param}': {msg}." if param else f"{msg}."
        return cls(400, message, param=param or None, code="invalid_value" if param else None)


def loc_to_param(loc: tuple[Any, ...] | list[Any]) -> str:
    """('messages', 0, 'role') -> 'messages[0].role'; pydantic's union branch names are dropped."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif isinstance(part, str) and not _is_branch_tag(part):
            out += f".{part}" if out else part
    return out


def _is_branch_tag(part: str) -> bool:
    # pydantic puts the tried union member into `loc` ("str", "list[str]", "function-after[...]")
    return part in {"str", "int", "float", "bool", "dict", "list", "none"} or "[" in part


def unauthorized(message: str | None = None, code: str = "invalid_api_key") -> APIError:
    return APIError(
        401,
        message
        or "Missing API key: send it as 'Authorization: Bearer <key>' (a Jupyter token works too).",
        code=code,
        headers={"WWW-Authenticate": 'Bearer realm="impetus"'},
    )
