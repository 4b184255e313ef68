"""/openapi.json is generated from the route table and the handlers' @scope / @operation: every
route is in it, a new route appears by registering it, and the document is valid OpenAPI 3.1."""

from __future__ import annotations

from typing import Any

import pytest
from openapi_spec_validator import validate
from pydantic import BaseModel

from impetus.api.auth import scope
from impetus.api.base import ImpetusHandler
from impetus.api.openapi import _path, document_routes, openapi_document, operation
from impetus.api.routes import ROUTES


def refs(node: Any) -> list[str]:
    if isinstance(node, dict):
        own = [node["$ref"]] if isinstance(node.get("$ref"), str) else []
        return own + [r for v in node.values() for r in refs(v)]
    if isinstance(node, list):
        return [r for v in node for r in refs(v)]
    return []


def test_the_document_is_valid_and_complete() -> None:
    doc = openapi_document("/impetus/", ROUTES, strict=True)
    validate(doc)
    assert doc["servers"] == [{"url": "/impetus"}]
    schemas = doc["components"]["schemas"]
    for ref in refs(doc):
        assert ref.rsplit("/", 1)[1] in schemas, ref
    # every method of every route, with the scope its decorator carries
    documented = document_routes(ROUTES)
    assert len(documented) == sum(len(doc["paths"][p]) for p in doc["paths"])
    for path, method, _, scope_, _ in documented:
        op = doc["paths"][path][method]
        assert ("security" in op) == (scope_ != "public"), (path, method)


class Thing(BaseModel):
    name: str


class ThingCreated(BaseModel):
    id: str
    name: str


class ThingHandler(ImpetusHandler):
    @scope("inference")
    @operation("Make a thing", tag="Things", body=Thing, returns=ThingCreated, status=201)
    async def post(self, kind: str) -> None:
        raise NotImplementedError  # never served: only documented


class Undocumented(ImpetusHandler):
    """Something nobody described."""

    @scope("admin")
    async def get(self) -> None:
        raise NotImplementedError


def test_a_registered_route_appears_with_its_schemas() -> None:
    routes = [*ROUTES, (r"v1/things/(red|green)", ThingHandler)]
    doc = openapi_document("/", routes)
    validate(doc)
    op = doc["paths"]["/v1/things/{kind}"]["post"]
    assert op["tags"] == ["Things"] and op["security"] == [{"bearer": []}]
    assert op["parameters"][0]["schema"] == {"type": "string", "enum": ["red", "green"]}
    body = op["requestBody"]["content"]["application/json"]["schema"]
    assert body == {"$ref": "#/components/schemas/Thing"}
    assert op["responses"]["201"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/ThingCreated"
    }
    assert {"400", "401", "403"} <= set(op["responses"])
    assert {"Thing", "ThingCreated"} <= set(doc["components"]["schemas"])


def test_a_route_without_its_documentation_is_refused() -> None:
    routes = [*ROUTES, (r"admin/undocumented", Undocumented)]
    with pytest.raises(ValueError, match=r"Undocumented.get .*needs @scope and @operation"):
        openapi_document("/", routes, strict=True)
    # served, the document still lists it (from the docstring) rather than failing whole
    served = openapi_document("/", routes)
    assert served["paths"]["/admin/undocumented"]["get"]["tags"] == ["Undocumented"]


@pytest.mark.parametrize(
    ("pattern", "names", "path", "schema"),
    [
        ("health", [], "/health", None),
        (r"openapi\.json", [], "/openapi.json", None),
        ("docs/?", ["asset"], "/docs", None),
        (r"v1/models/(.+)", ["model_id"], "/v1/models/{model_id}", {"type": "string"}),
        (
            r"admin/keys/([A-Za-z0-9_-]+)",
            ["key_id"],
            "/admin/keys/{key_id}",
            {"type": "string", "pattern": "^[A-Za-z0-9_-]+$"},
        ),
        (
            r"docs/(explorer\.js|explorer\.css)",
            ["asset"],
            "/docs/{asset}",
            {"type": "string", "enum": ["explorer.js", "explorer.css"]},
        ),
    ],
)
def test_route_patterns_as_paths(
    pattern: str, names: list[str], path: str, schema: dict[str, Any] | None
) -> None:
    got, params = _path(pattern, names)
    assert got == path
    assert [p["schema"] for p in params] == ([schema] if schema else [])


@pytest.mark.parametrize(
    ("pattern", "names"), [(r"v1/(a)/(b)", ["x"]), (r"v1/items?", []), (r"v1/[0-9]+", [])]
)
def test_patterns_a_path_cannot_express_are_refused(pattern: str, names: list[str]) -> None:
    with pytest.raises(ValueError, match="route"):
        _path(pattern, names)


def _twin() -> type[ImpetusHandler]:
    class Thing(BaseModel):  # the same class name as the module's Thing, another shape
        size: int

    class TwinHandler(ImpetusHandler):
        @scope("inference")
        @operation("Make another thing", tag="Things", body=Thing)
        async def post(self) -> None:
            raise NotImplementedError

    return TwinHandler


def test_two_models_of_one_name_get_two_schemas() -> None:
    routes = [*ROUTES, (r"v1/things/(red|green)", ThingHandler), (r"v1/twins", _twin())]
    doc = openapi_document("/", routes, strict=True)
    validate(doc)
    schemas = doc["components"]["schemas"]
    for ref in refs(doc):
        assert ref.rsplit("/", 1)[1] in schemas, ref

    def body(path: str) -> dict[str, Any]:
        ref = doc["paths"][path]["post"]["requestBody"]["content"]["application/json"]["schema"]
        schema: dict[str, Any] = schemas[ref["$ref"].rsplit("/", 1)[1]]
        return schema

    assert set(body("/v1/things/{kind}")["properties"]) == {"name"}
    assert set(body("/v1/twins")["properties"]) == {"size"}
