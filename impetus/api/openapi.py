"""`/openapi.json`, generated from the pydantic schemas of `impetus.api.schemas`."""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from impetus import __version__
from impetus.api import schemas as s

REF = "#/components/schemas/{model}"

# (method, path, summary, request model, response model, scope, tag, streams)
Operation = tuple[str, str, str, type[BaseModel] | None, type[BaseModel] | None, str, str, bool]

OPERATIONS: list[Operation] = [
    (
        "get",
        "v1/models",
        "List the models a request may name",
        None,
        s.ModelList,
        "inference",
        "OpenAI",
        False,
    ),
    ("get", "v1/models/{model}", "One model", None, s.ModelCard, "inference", "OpenAI", False),
    (
        "post",
        "v1/chat/completions",
        "Chat completion (stream: true for SSE)",
        s.ChatCompletionRequest,
        s.ChatCompletion,
        "inference",
        "OpenAI",
        True,
    ),
    (
        "post",
        "v1/completions",
        "Text completion (stream: true for SSE)",
        s.CompletionRequest,
        s.Completion,
        "inference",
        "OpenAI",
        True,
    ),
    (
        "post",
        "v1/embeddings",
        "Embeddings",
        s.EmbeddingRequest,
        s.EmbeddingList,
        "inference",
        "OpenAI",
        False,
    ),
    ("get", "health", "Liveness", None, s.Health, "public", "Operations", False),
    (
        "get",
        "ready",
        "Readiness: engine up and a model loaded (503 otherwise)",
        None,
        s.Ready,
        "public",
        "Operations",
        False,
    ),
    ("get", "metrics", "Prometheus metrics", None, None, "admin", "Operations", False),
    ("get", "admin/status", "Engine status", None, None, "admin", "Admin", False),
    ("get", "admin/keys", "List inference-only API keys", None, s.KeyList, "admin", "Admin", False),
    (
        "post",
        "admin/keys",
        "Create an inference-only API key (shown once)",
        s.CreateKeyRequest,
        s.CreatedKey,
        "admin",
        "Admin",
        False,
    ),
    ("delete", "admin/keys/{key_id}", "Revoke an API key", None, None, "admin", "Admin", False),
    (
        "get",
        "admin/models",
        "Registry entries (built-in, local, hub, GGUF), loaded or not",
        None,
        None,
        "admin",
        "Models",
        False,
    ),
    (
        "get",
        "admin/models/search",
        "Search the Hugging Face hub for MLX models (?q=)",
        None,
        None,
        "admin",
        "Models",
        False,
    ),
    (
        "post",
        "admin/models/pull",
        "Download / convert a model: progress as SSE",
        s.PullRequest,
        None,
        "admin",
        "Models",
        True,
    ),
    (
        "post",
        "admin/models/pull/cancel",
        "Cancel a running pull",
        s.ModelIdRequest,
        None,
        "admin",
        "Models",
        False,
    ),
    (
        "post",
        "admin/models/load",
        "Load a model into the engine",
        s.LoadRequest,
        None,
        "admin",
        "Models",
        False,
    ),
    (
        "post",
        "admin/models/unload",
        "Unload a model",
        s.ModelIdRequest,
        None,
        "admin",
        "Models",
        False,
    ),
    (
        "delete",
        "admin/models/{model}",
        "Delete a downloaded model (refused while loaded)",
        None,
        None,
        "admin",
        "Models",
        False,
    ),
]

EXAMPLES: dict[str, dict[str, Any]] = {
    "v1/chat/completions": {
        "model": "smollm2-135m",
        "messages": [{"role": "user", "content": "Say hello in three words."}],
        "max_tokens": 32,
        "stream": False,
    },
    "v1/completions": {"model": "smollm2-135m", "prompt": "Once upon a time", "max_tokens": 32},
    "v1/embeddings": {"model": "minilm", "input": ["a sentence", "another one"]},
    "admin/keys": {"name": "my notebook client"},
    "admin/models/pull": {"id": "smollm2-135m", "load": True},
    "admin/models/load": {"id": "smollm2-135m"},
    "admin/models/unload": {"id": "smollm2-135m"},
    "admin/models/pull/cancel": {"id": "smollm2-135m"},
}


@lru_cache(maxsize=8)
def _components() -> dict[str, Any]:
    models: set[type[BaseModel]] = {s.ErrorResponse, s.ChatCompletionChunk}
    for op in OPERATIONS:
        for m in (op[3], op[4]):
            if m is not None:
                models.add(m)
    mode_of = {
        m: ("validation" if any(m is op[3] for op in OPERATIONS) else "serialization")
        for m in models
    }
    _, schema = models_json_schema(
        [(m, mode_of[m]) for m in sorted(models, key=lambda m: m.__name__)],  # type: ignore[misc]
        ref_template=REF,
    )
    return schema.get("$defs", {})


def _ref(model: type[BaseModel]) -> dict[str, str]:
    return {"$ref": REF.format(model=model.__name__)}


def _error(description: str) -> dict[str, Any]:
    return {
        "description": description,
        "content": {"application/json": {"schema": _ref(s.ErrorResponse)}},
    }


def openapi_document(prefix: str) -> dict[str, Any]:
    paths: dict[str, Any] = {}
    for method, path, summary, req, resp, scope_, tag, streams in OPERATIONS:
        op: dict[str, Any] = {
            "summary": summary,
            "tags": [tag],
            "operationId": f"{method}_{path}".replace("/", "_").replace("{", "").replace("}", ""),
        }
        if scope_ != "public":
            op["security"] = [{"bearer": []}]
            op["description"] = (
                "Needs an API key or Jupyter token."
                if scope_ == "inference"
                else "Needs a Jupyter token or a full (not inference-only) key."
            )
        params = [p.strip("{}") for p in path.split("/") if p.startswith("{")]
        if params:
            op["parameters"] = [
                {"name": p, "in": "path", "required": True, "schema": {"type": "string"}}
                for p in params
            ]
        if req is not None:
            body: dict[str, Any] = {"schema": _ref(req)}
            if path in EXAMPLES:
                body["example"] = EXAMPLES[path]
            op["requestBody"] = {"required": True, "content": {"application/json": body}}
        ok: dict[str, Any] = {"description": "OK"}
        content: dict[str, Any] = {}
        if resp is not None:
            content["application/json"] = {"schema": _ref(resp)}
        elif path == "metrics":
            content["text/plain"] = {"schema": {"type": "string"}}
        if streams:
            content["text/event-stream"] = {
                "schema": {"type": "string"},
                "description": "with stream: true, `data: <chunk JSON>` events, then `data: [DONE]`",
            }
        if content:
            ok["content"] = content
        status = (
            "201"
            if (method, path) == ("post", "admin/keys")
            else ("204" if path == "admin/keys/{key_id}" else "200")
        )
        responses: dict[str, Any] = {status: ok}
        if req is not None:
            responses["400"] = _error("Invalid parameters (`param` names which)")
        if scope_ != "public":
            responses["401"] = _error("Missing or wrong API key")
        if path.startswith("v1/") and method == "post":
            responses["404"] = _error("Unknown model")
            responses["413"] = _error("Body over the size limit")
            responses["429"] = _error("Queue full (see Retry-After)")
            responses["503"] = _error("Engine restarting, not ready or shutting down")
            responses["504"] = _error("Request time limit passed")
        op["responses"] = responses
        paths.setdefault("/" + path, {})[method] = op
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "impetus",
            "version": __version__,
            "description": "OpenAI-compatible API of impetus, with admin and operations endpoints.",
        },
        "servers": [{"url": prefix.rstrip("/") or "/"}],
        "paths": paths,
        "components": {
            "schemas": _components(),
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
    }
