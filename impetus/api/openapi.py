"""`/openapi.json`, generated from the route table and what the handlers declare.

Route metadata lives in one place: the pattern in `impetus.api.routes.ROUTES`, and on each HTTP
method of the handler its scope (`@scope`, auth.py) and its documentation (`@operation` here:
summary, tag, request / response / stream-event types, extra error statuses). A type is a
pydantic model (the api's schemas) or a msgspec Struct (the engine's records, impetus.protocol). The spec is
built from those; nothing is listed twice. Adding an endpoint is one route line plus the two
decorators, and tests/api/test_openapi.py fails for a route method without them.

`python -m impetus.api.routes [FILE]` writes the document of the route table (servers `/`) for
tools such as the sidebar's type generator (extension/src/openapi.ts).
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, Literal, TypeVar

import msgspec
from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from impetus import __version__
from impetus.api import schemas as s
from impetus.api.auth import method_scope
from impetus.api.base import ROUTES_SETTING, ImpetusHandler

__all__ = [
    "GENERATION_ERRORS",
    "OPERATION_ATTR",
    "ROUTES_SETTING",
    "Operation",
    "document_routes",
    "openapi_document",
    "operation",
    "operation_of",
]

REF = "#/components/schemas/{model}"
OPERATION_ATTR = "__impetus_operation__"
HTTP_METHODS = ("get", "post", "put", "patch", "delete")
F = TypeVar("F", bound=Callable[..., Any])
Schema = type[BaseModel] | type[msgspec.Struct]

# What a generation endpoint may answer besides 200 (the engine's errors, docs/architecture.md)
GENERATION_ERRORS: Mapping[int, str] = {
    404: "Unknown model",
    413: "Body over the size limit",
    429: "Queue full (see Retry-After)",
    503: "Engine restarting, not ready or shutting down",
    504: "Request time limit passed",
}


@dataclass(frozen=True)
class Operation:
    """The documentation of one HTTP method of a handler (its scope is `@scope`'s)."""

    summary: str
    tag: str
    body: type[BaseModel] | None = None  # the JSON request body (validated by pydantic)
    returns: Schema | None = None  # the JSON response
    status: int = 200
    media: str | None = None  # a non-JSON response: its media type (schema: a string)
    stream: Schema | None = None  # one event of a streamed response
    stream_media: str = "text/event-stream"
    stream_note: str = "with stream: true, `data: <event JSON>` events, then `data: [DONE]`"
    errors: Mapping[int, str] = field(default_factory=dict)
    error_model: Schema = s.ErrorResponse  # the body of every error status
    query: Mapping[str, str] = field(default_factory=dict)  # query parameter -> description
    example: Mapping[str, Any] | None = None  # of the request body


def operation(summary: str, *, tag: str, **details: Any) -> Callable[[F], F]:
    """Document a handler method for /openapi.json (fields: see `Operation`)."""
    op = Operation(summary, tag, **details)

    def mark(method: F) -> F:
        setattr(method, OPERATION_ATTR, op)
        return method

    return mark


def operation_of(method: Any) -> Operation | None:
    op: Operation | None = getattr(method, OPERATION_ATTR, None)
    return op


# ---------------------------------------------------------------- route patterns -> paths

_GROUP = re.compile(r"\(([^()?]*)\)")
_LITERAL = re.compile(r"(?:[A-Za-z0-9_-]|\\\.)+")


def _path(pattern: str, names: Sequence[str]) -> tuple[str, list[dict[str, Any]]]:
    """`admin/keys/([A-Za-z0-9_-]+)` -> `/admin/keys/{key_id}` and its parameter, named after
    the handler method's argument. Refuses what it cannot express rather than guess."""
    params: list[dict[str, Any]] = []

    def group(m: re.Match[str]) -> str:
        if len(params) >= len(names):
            raise ValueError(f"route {pattern!r}: more groups than method arguments")
        name, inner = names[len(params)], m.group(1)
        schema: dict[str, Any] = {"type": "string"}
        alternatives = inner.split("|")
        if len(alternatives) > 1 and all(_LITERAL.fullmatch(a) for a in alternatives):
            schema["enum"] = [a.replace("\\.", ".") for a in alternatives]
        elif inner not in (".+", "[^/]+"):
            schema["pattern"] = f"^{inner}$"
        params.append({"name": name, "in": "path", "required": True, "schema": schema})
        return "{" + name + "}"

    path = pattern.removesuffix("$").removesuffix("/?")
    path = _GROUP.sub(group, path).replace("\\.", ".")
    if re.search(r"[()\[\]*+?\\|^$]", path):
        raise ValueError(f"route {pattern!r}: cannot be written as an OpenAPI path")
    return "/" + path, params


def _arguments(method: Callable[..., Any]) -> list[str]:
    return [p for p in inspect.signature(method).parameters if p != "self"]


Documented = tuple[str, str, list[dict[str, Any]], str, Operation]


def document_routes(
    routes: Sequence[tuple[str, type[ImpetusHandler]]], strict: bool = True
) -> list[Documented]:
    """(path, method, path parameters, scope, Operation) for every handler method. A method
    without @operation is an error when `strict` (the tests); served, it is listed from its
    docstring alone rather than failing the whole document."""
    from tornado.web import RequestHandler

    out: list[Documented] = []
    for pattern, handler in routes:
        for name in HTTP_METHODS:
            method = getattr(handler, name, None)
            if method is None or method is getattr(RequestHandler, name):
                continue
            op, scope_ = operation_of(method), method_scope(method)
            if (op is None and strict) or scope_ is None:
                raise ValueError(
                    f"{handler.__name__}.{name} (route {pattern!r}) needs @scope and @operation"
                )
            if op is None:
                doc = inspect.getdoc(method) or inspect.getdoc(handler) or handler.__name__
                op = Operation(doc.splitlines()[0], tag="Undocumented")
            path, params = _path(pattern, _arguments(method))
            out.append((path, name, params, scope_, op))
    return out


# ---------------------------------------------------------------- the document


Refs = dict[Any, dict[str, Any]]  # type -> its {"$ref": ...}


def _components(ops: Sequence[Operation]) -> tuple[dict[str, Any], Refs]:
    """The component schemas of every type the operations name, and the $ref of each type (as
    the schema generators named it: two models of one class name get two names)."""
    bodies: set[Schema] = {op.body for op in ops if op.body is not None}
    types = bodies | {
        m for op in ops for m in (op.returns, op.stream, op.error_model) if m is not None
    }
    ordered = sorted(types, key=lambda m: m.__name__)
    models = [m for m in ordered if issubclass(m, BaseModel)]
    structs = [m for m in ordered if issubclass(m, msgspec.Struct)]
    # one schema per model: a request body in validation mode, anything else as it is sent
    keyed: list[tuple[type[BaseModel], Literal["validation", "serialization"]]] = [
        (m, "validation" if m in bodies else "serialization") for m in models
    ]
    mapping, schema = models_json_schema(keyed, ref_template=REF)
    refs: Refs = {m: dict(mapping[(m, mode)]) for m, mode in keyed}
    defs: dict[str, Any] = schema.get("$defs", {})
    # msgspec names the placeholder {name}, pydantic {model}
    struct_refs, struct_defs = msgspec.json.schema_components(
        structs, ref_template=REF.replace("{model}", "{name}")
    )
    refs.update(zip(structs, struct_refs, strict=True))
    clash = set(defs) & set(struct_defs)
    if clash:  # a pydantic model and a Struct under one name: a $ref would be ambiguous
        raise ValueError(f"schema names used twice: {sorted(clash)}")
    return {**defs, **struct_defs}, refs


def _operation(
    path: str, method: str, params: list[dict[str, Any]], scope_: str, op: Operation, refs: Refs
) -> dict[str, Any]:
    out: dict[str, Any] = {
        "summary": op.summary,
        "tags": [op.tag],
        "operationId": re.sub(r"[^A-Za-z0-9]+", "_", f"{method}{path}").strip("_"),
    }
    if scope_ != "public":
        out["security"] = [{"bearer": []}]
        out["description"] = (
            "Needs an API key or Jupyter token."
            if scope_ == "inference"
            else "Needs a Jupyter token or a full (not inference-only) key."
        )
    parameters = list(params) + [
        {
            "name": q,
            "in": "query",
            "required": False,
            "description": d,
            "schema": {"type": "string"},
        }
        for q, d in op.query.items()
    ]
    if parameters:
        out["parameters"] = parameters
    if op.body is not None:
        body: dict[str, Any] = {"schema": refs[op.body]}
        if op.example is not None:
            body["example"] = dict(op.example)
        out["requestBody"] = {"required": True, "content": {"application/json": body}}
    content: dict[str, Any] = {}
    if op.returns is not None:
        content["application/json"] = {"schema": refs[op.returns]}
    if op.media is not None:
        content[op.media] = {"schema": {"type": "string"}}
    if op.stream is not None:
        # OpenAPI 3.1 has no schema for one event of a stream: name it in an extension
        content[op.stream_media] = {
            "schema": {"type": "string", "description": op.stream_note},
            "x-event-schema": refs[op.stream],
        }
    ok: dict[str, Any] = {"description": "OK" if op.status != 201 else "Created"}
    if op.status == 204:
        ok["description"] = "No content"
    elif content:
        ok["content"] = content
    responses: dict[str, Any] = {str(op.status): ok}

    def error(status: int, description: str) -> None:
        responses[str(status)] = {
            "description": description,
            "content": {"application/json": {"schema": refs[op.error_model]}},
        }

    if op.body is not None or op.query:
        error(400, "Invalid parameters (`param` names which)")
    if scope_ != "public":
        error(401, "Missing or wrong API key")
        error(403, "Not allowed (an inference-only key on an admin endpoint, a foreign origin)")
    for status, description in op.errors.items():
        error(status, description)
    out["responses"] = dict(sorted(responses.items()))
    return out


def openapi_document(
    prefix: str, routes: Sequence[tuple[str, type[ImpetusHandler]]], strict: bool = False
) -> dict[str, Any]:
    """The OpenAPI 3.1 document of `routes` (`impetus.api.routes.ROUTES`: the app puts it in
    its settings under ROUTES_SETTING, so that this module needs no import of the handlers),
    served under `prefix`."""
    doc = _document(tuple(routes), strict)
    return {**doc, "servers": [{"url": prefix.rstrip("/") or "/"}]}


@lru_cache(maxsize=4)
def _document(routes: tuple[tuple[str, type[ImpetusHandler]], ...], strict: bool) -> dict[str, Any]:
    documented = document_routes(routes, strict)
    schemas, refs = _components([d[4] for d in documented])
    paths: dict[str, Any] = {}
    for path, method, params, scope_, op in documented:
        paths.setdefault(path, {})[method] = _operation(path, method, params, scope_, op, refs)
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "impetus",
            "version": __version__,
            "description": "OpenAI-compatible API of impetus, with admin and operations endpoints.",
        },
        "paths": paths,
        "components": {
            "schemas": schemas,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
    }
