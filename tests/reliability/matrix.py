"""The security matrix's table: every route of the route table × every kind of credential.

Routes come from `impetus.api.routes.ROUTES` and each method's `@scope`, so a route added later is
in the matrix at once. Each request is one a handler can answer cheaply (an empty JSON body on
POST: a 400 once past authentication, no generation, no download), so that "allowed" means
"reached the handler": any status but 401 / 403 and never a 5xx.

The tables in docs/reliability.md are the ones the tests measure: each test compares its table
with the one between `<!-- matrix:NAME -->` markers there and fails when they differ;
`IMPETUS_UPDATE_DOCS=1 pytest tests/reliability -k security_matrix` writes them.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from impetus.api.auth import method_scope
from impetus.api.routes import ROUTES

METHODS = ("get", "post", "delete", "put", "patch")
ALLOWED = "ok"  # reached the handler


DOC = Path(__file__).resolve().parents[2] / "docs" / "reliability.md"
UPDATE_VAR = "IMPETUS_UPDATE_DOCS"


@dataclass(frozen=True)
class Case:
    method: str  # GET, POST, ...
    path: str  # relative to the API prefix
    scope: str  # public | inference | admin
    label: str  # the path as the docs show it: `{id}` for a variable part


def _concrete(pattern: str, variable: str = "no-such-thing") -> str:
    """A path that the route's pattern matches: groups get `variable` (or their first
    alternative)."""

    def sample(m: re.Match[str]) -> str:
        inner = m.group(1)
        if "|" in inner and "[" not in inner:
            return inner.split("|")[0].replace("\\", "")
        return variable

    path = re.sub(r"\(([^()]*)\)", sample, pattern)
    return path.replace("\\.", ".").replace("/?", "")


def cases() -> list[Case]:
    out = []
    for pattern, handler in ROUTES:
        for name in METHODS:
            method = getattr(handler, name, None)
            scope = method_scope(method) if method is not None else None
            if scope is not None:
                path = _concrete(pattern)
                assert re.fullmatch(pattern, path), (pattern, path)
                out.append(Case(name.upper(), path, scope, _concrete(pattern, "{id}")))
    return out


def table(columns: list[str], rows: list[list[str]]) -> str:
    """A Markdown table: `columns` over `rows`."""
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def check_doc(name: str, text: str) -> None:
    """docs/reliability.md holds `text` between `<!-- matrix:NAME -->` and `<!-- /matrix:NAME -->`
    (written there when IMPETUS_UPDATE_DOCS=1)."""
    begin, end = f"<!-- matrix:{name} -->\n", f"<!-- /matrix:{name} -->"
    doc = DOC.read_text(encoding="utf-8")
    head, found, rest = doc.partition(begin)
    assert found and end in rest, f"docs/reliability.md has no {begin.strip()} ... {end} section"
    current, _, tail = rest.partition(end)
    if os.environ.get(UPDATE_VAR) == "1":
        DOC.write_text(head + begin + text + end + tail, encoding="utf-8")
    else:
        assert current == text, (
            f"docs/reliability.md's {name} matrix differs from the measured one: "
            f"rerun with {UPDATE_VAR}=1 to write it\n{text}"
        )


def expected(scope: str, credential: str, method: str) -> str:
    """What `credential` gets on a route of `scope` through `impetus serve` (status or ok)."""
    if credential == "foreign_origin":
        # a web page elsewhere, with no credential of its own: the cross-origin check refuses
        # even the public routes (403 cross_origin); the others need a key first (401)
        return "403" if scope == "public" else "401"
    if scope == "public":
        return ALLOWED
    if credential in ("admin_key", "foreign_origin_with_key"):
        return ALLOWED  # a header credential is not forgeable by a page: Origin does not matter
    if credential == "inference_key":
        return ALLOWED if scope == "inference" else "403"
    return "401"  # none, wrong, cookie (serve has no cookie credential)


def outcome(status: int) -> str:
    return ALLOWED if status not in (401, 403) and status < 500 else str(status)


def body_for(method: str) -> dict[str, Any] | None:
    return {} if method in ("POST", "PUT", "PATCH") else None


def assert_error_shape(path: str, body: Any) -> None:
    """Each protocol's own error shape: Anthropic's for v1/messages*, Ollama's for api/*,
    OpenAI's for everything else."""
    path = path.split("impetus/", 1)[-1]
    if path.startswith("v1/messages"):
        assert body["type"] == "error" and {"type", "message"} <= set(body["error"]), body
    elif path.startswith("api/"):
        assert set(body) == {"error"} and isinstance(body["error"], str), body
    else:
        assert set(body) == {"error"}, body
        assert set(body["error"]) == {"message", "type", "param", "code"}, body
