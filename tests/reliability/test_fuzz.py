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

from hypothesis import HealthCheck, given, settings  # noqa: E402

from tests.api.conftest import Server  # noqa: E402

# What the document promises about each response. Left out: positive_data_acceptance (a
# schema-valid body may still be refused with a 400 for what a schema cannot say, e.g. a model id
# that is not a valid name) and negative_data_rejection (unknown fields are ignored on purpose,
# as OpenAI's API does).
CHECKS = [
    schemathesis.checks.not_a_server_error,
    schemathesis.checks.status_code_conformance,
    schemathesis.checks.content_type_conformance,
    schemathesis.checks.response_headers_conformance,
    schemathesis.checks.response_schema_conformance,
]
# The Anthropic (v1/messages) and Ollama (api/) routes answer errors in their own shapes: not
# fuzzed here yet (docs/reliability.md says what a first run found there).
OTHER_PROTOCOLS = ("/v1/messages", "/api/", "/v1/responses")
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


def test_openapi_operations(fuzz_server: Server) -> None:
    """Each operation of the document, EXAMPLES generated requests (schemathesis' pytest plugin
    does not run under pytest 9: hypothesis drives each operation's strategy directly)."""
    schema = schemathesis.openapi.from_url(fuzz_server.url("openapi.json"))
    headers = {"Authorization": f"Bearer {fuzz_server.key}"}  # every operation, not only its 401
    tried: dict[str, int] = {}
    statuses: dict[int, int] = {}
    failures: list[str] = []
    server_errors: list[str] = []
    for result in schema.get_all_operations():
        op = result.ok()
        if op.path.startswith(OTHER_PROTOCOLS):
            continue
        label = f"{op.method.upper()} {op.path}"
        tried[label] = 0

        @given(case=op.as_strategy())
        @settings(
            max_examples=EXAMPLES,
            deadline=None,
            derandomize=os.environ.get("IMPETUS_FUZZ_RANDOM") != "1",
            suppress_health_check=list(HealthCheck),
            database=None,
        )
        def run(case: Any) -> None:
            tried[label] += 1  # noqa: B023 - run() is called within this iteration
            response = case.call(
                base_url=fuzz_server.base_url.rstrip("/"), headers=headers, timeout=120
            )
            statuses[response.status_code] = statuses.get(response.status_code, 0) + 1
            if response.status_code >= 500:
                server_errors.append(
                    f"{label} {case.query!r} {case.body!r:.1000} -> {response.text[:300]}"  # noqa: B023
                )
            try:
                case.validate_response(response, headers=headers, checks=CHECKS)
                openai_error_shape(None, response, case)
            except Exception as e:  # collect every operation's failure, then report them all
                failures.append(
                    f"{label}: {case.as_curl_command(headers)}\n  {type(e).__name__}: {str(e)[:600]}"  # noqa: B023
                )
                raise

        try:
            run()
        except BaseException as e:  # a check failed (recorded above) or the strategy itself did
            if isinstance(e, KeyboardInterrupt):
                raise
            if tried[label] == 0:
                failures.append(f"{label}: no request generated: {type(e).__name__}: {e}")
    total = sum(tried.values())
    print(
        f"\nfuzz: {total} requests over {len(tried)} operations; statuses {dict(sorted(statuses.items()))}"
    )
    assert len(tried) >= 20 and total >= len(tried), failures[:3]
    assert not server_errors, "\n".join(server_errors[:5]) + "\n" + fuzz_server.log_text()
    assert not failures, "\n".join(failures[:10])


def test_an_unpaired_surrogate_is_a_400_not_a_500(
    fuzz_server: Server, tiny_model_dir: Path
) -> None:
    """Found by the fuzzer: JSON may escape half a surrogate pair; it used to reach the engine's
    wire encoder and answer 500."""
    import httpx

    raw = (
        '{"model": "'
        + str(tiny_model_dir)
        + '", "messages": [{"role": "user", "content": "a\\udc00b"}]}'
    )
    r = httpx.post(
        fuzz_server.url("v1/chat/completions"),
        content=raw,
        headers={**fuzz_server.headers(), "Content-Type": "application/json"},
        timeout=60,
    )
    assert r.status_code == 400, r.text
    assert (
        r.json()["error"]["code"] == "invalid_json" and "surrogate" in r.json()["error"]["message"]
    )


def test_an_integer_past_64_bits_is_a_400_not_a_500(
    fuzz_server: Server, tiny_model_dir: Path
) -> None:
    """Found by the fuzzer: a huge integer in a free-form field passed validation and failed in
    the engine's wire encoder (500)."""
    body = {
        "model": str(tiny_model_dir),
        "messages": [{"role": "user", "content": "hi", "x": 2**70}],
    }
    r = fuzz_server.post("v1/chat/completions", body)
    assert r.status_code == 400, r.text
    assert "cannot take" in r.json()["error"]["message"]


def test_a_bad_search_limit_is_a_400(fuzz_server: Server) -> None:
    """Found by the fuzzer: `limit=abc` was an uncaught ValueError (500)."""
    for limit in ("abc", "\u0667", "0", "-3"):
        r = fuzz_server.get("admin/models/search", params={"q": "x", "limit": limit})
        assert r.status_code == 400 and r.json()["error"]["param"] == "limit", (limit, r.text)


def test_a_tilde_model_id_of_an_unknown_user_is_not_found(tmp_path: Path) -> None:
    """Found by the fuzzer on the Ollama routes: `~name...` as a model path raised RuntimeError
    ("Could not determine home directory") from Path.expanduser: a 500."""
    from impetus.config import Settings
    from impetus.models.errors import ModelError
    from impetus.models.lookup import find

    with pytest.raises(ModelError) as e:
        find("~no-such-user-5/model", Settings(home=tmp_path), allow_paths=True)
    assert e.value.code == "model_not_found"
