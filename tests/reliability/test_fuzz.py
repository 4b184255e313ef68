"""Property-based fuzzing of every operation in a real server's /openapi.json (schemathesis).

Checks on every response: no 5xx, status codes, content types and bodies as the document
declares them, and every error in OpenAI's shape. Bounded for CI (IMPETUS_FUZZ_EXAMPLES examples
per operation, 8 by default); benchmarks/fuzz.sh runs the same test with many more.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

schemathesis = pytest.importorskip("schemathesis")  # the dev extra installs it

from hypothesis import HealthCheck, settings  # noqa: E402

from tests.api.conftest import Server  # noqa: E402

EXAMPLES = int(os.environ.get("IMPETUS_FUZZ_EXAMPLES", "8"))
ERROR_FIELDS = {"message", "type", "param", "code"}


@schemathesis.check
def openai_error_shape(ctx: Any, response: Any, case: Any) -> bool | None:
    """Every 4xx / 5xx answer of the API is `{"error": {message, type, param, code}}`."""
    if response.status_code < 400:
        return None
    body = response.json()
    assert isinstance(body, dict) and set(body) == {"error"}, f"not an OpenAI error: {body!r}"
    assert set(body["error"]) == ERROR_FIELDS, f"error fields: {sorted(body['error'])}"
    assert isinstance(body["error"]["message"], str) and body["error"]["message"]
    return True


@pytest.fixture(scope="module")
def fuzz_server(server_factory: Callable[..., Server], tiny_model_dir: Path) -> Server:
    # small generations: a fuzzed request may ask for n=128 and the whole context
    return server_factory(
        "--model", str(tiny_model_dir), "--max-tokens-default", "8", "--max-queue", "64"
    )  # fmt: skip


@pytest.fixture(scope="module")
def fuzz_schema(fuzz_server: Server) -> Any:
    schema = schemathesis.openapi.from_url(fuzz_server.url("openapi.json"))
    schema.config.update(base_url=fuzz_server.base_url.rstrip("/"))
    return schema


schema = schemathesis.pytest.from_fixture("fuzz_schema")


@schema.parametrize()
@settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=os.environ.get("IMPETUS_FUZZ_RANDOM") != "1",
    suppress_health_check=list(HealthCheck),
)
def test_openapi_operations(case: Any, fuzz_server: Server) -> None:
    # the admin key: every operation is reached, not just its 401
    case.call_and_validate(
        headers={"Authorization": f"Bearer {fuzz_server.key}"},
        timeout=120,
        excluded_checks=[schemathesis.checks.ignored_auth]
        if hasattr(schemathesis.checks, "ignored_auth")
        else [],
    )
