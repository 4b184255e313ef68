"""Property-based fuzzing of every operation in a real server's /openapi.json (schemathesis).

Every operation of the document: OpenAI's, Anthropic's (`v1/messages*`), the Responses API
(`v1/responses*`), Ollama's (`api/*`), admin and ops. Checks on every response: no 5xx, status
codes, content types and bodies as the document declares them, and every error in its protocol's
own shape. Bounded for CI (IMPETUS_FUZZ_EXAMPLES examples per operation, 8 by default);
benchmarks/fuzz.sh runs the same test with many more.

The server's hub (HF_ENDPOINT) is a local fake with no repositories: a fuzzed pull never leaves
the machine, and every id it names is a repository the hub does not have.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
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
EXAMPLES = int(os.environ.get("IMPETUS_FUZZ_EXAMPLES", "8"))
DEFAULT_MODEL = "smollm2-135m"
ERROR_FIELDS = {"message", "type", "param", "code"}


def protocol_of(path: str) -> str:
    """Whose error shape an operation answers in: anthropic, ollama or openai (the Responses
    API, admin and ops routes answer OpenAI's)."""
    if path.startswith("/v1/messages"):
        return "anthropic"
    if path.startswith("/api/"):
        return "ollama"
    return "openai"


def error_shape(protocol: str, response: Any) -> None:
    """Every 4xx / 5xx answer is in its protocol's own error shape: OpenAI's
    `{"error": {message, type, param, code}}`, Anthropic's
    `{"type": "error", "error": {"type", "message"}}`, Ollama's `{"error": "..."}`."""
    if response.status_code < 400:
        return
    body = response.json()
    assert isinstance(body, dict), f"not a JSON object: {body!r}"
    if protocol == "anthropic":
        assert set(body) == {"type", "error"} and body["type"] == "error", (
            f"not Anthropic's: {body!r}"
        )
        assert set(body["error"]) == {"type", "message"}, f"error fields: {sorted(body['error'])}"
        assert isinstance(body["error"]["type"], str) and body["error"]["type"]
        message = body["error"]["message"]
    elif protocol == "ollama":
        assert set(body) == {"error"} and isinstance(body["error"], str), f"not Ollama's: {body!r}"
        message = body["error"]
    else:
        assert set(body) == {"error"}, f"not an OpenAI error: {body!r}"
        assert set(body["error"]) == ERROR_FIELDS, f"error fields: {sorted(body['error'])}"
        message = body["error"]["message"]
    assert isinstance(message, str) and message, body


@pytest.fixture(scope="module")
def empty_hub() -> Iterator[str]:
    """A hub with no repositories: every pulled id is unknown there, nothing is downloaded."""
    from tests.fake_hub import FakeHub

    hub = FakeHub().start()
    yield hub.url
    hub.stop()


@pytest.fixture(scope="module")
def fuzz_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny random Llama with a 128-token context: a fuzzed request may ask for n=128 and
    the whole context, and the generations it asks for bound the run's time."""
    from tests.tiny_model import build_tiny_llama

    return build_tiny_llama(tmp_path_factory.mktemp("models") / "fuzz-llama", context=128)


@pytest.fixture(scope="module")
def fuzz_server(
    server_factory: Callable[..., Server],
    fuzz_model_dir: Path,
    empty_hub: str,
    tmp_path_factory: pytest.TempPathFactory,
) -> Server:
    # online (the suite is offline by default), but the only hub is the empty one on loopback
    hub = {
        "HF_ENDPOINT": empty_hub,
        "HF_HUB_OFFLINE": "0",
        "HF_HUB_CACHE": str(tmp_path_factory.mktemp("hf-cache")),
        "HF_HUB_DISABLE_TELEMETRY": "1",
    }
    return server_factory(
        "--model", str(fuzz_model_dir), "--max-tokens-default", "8", "--max-queue", "64",
        env=hub,
    )  # fmt: skip


def with_model(doc: Any, model: str) -> Any:
    """The document with its examples' model id (the embedded SmolLM2: 135M parameters, seconds
    per request on a 2-core machine, hundreds of MB) replaced by the fuzz server's tiny model."""
    if isinstance(doc, dict):
        return {k: with_model(v, model) for k, v in doc.items()}
    if isinstance(doc, list):
        return [with_model(v, model) for v in doc]
    return model if doc == DEFAULT_MODEL else doc


def test_openapi_operations(fuzz_server: Server, fuzz_model_dir: Path) -> None:
    """Each operation of the document, EXAMPLES generated requests (schemathesis' pytest plugin
    does not run under pytest 9: hypothesis drives each operation's strategy directly)."""
    doc = httpx.get(fuzz_server.url("openapi.json"), timeout=30).json()
    schema = schemathesis.openapi.from_dict(with_model(doc, str(fuzz_model_dir)))
    headers = {"Authorization": f"Bearer {fuzz_server.key}"}  # every operation, not only its 401
    tried: dict[str, int] = {}
    statuses: dict[int, int] = {}
    failures: list[str] = []
    server_errors: list[str] = []
    took: dict[str, float] = {}
    for result in schema.get_all_operations():
        op = result.ok()
        protocol = protocol_of(op.path)
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
                error_shape(protocol, response)  # noqa: B023
            except Exception as e:  # collect every operation's failure, then report them all
                failures.append(
                    f"{label}: {case.as_curl_command(headers)}\n  {type(e).__name__}: {str(e)[:600]}"  # noqa: B023
                )
                raise

        t0 = time.monotonic()
        try:
            run()
        except BaseException as e:  # a check failed (recorded above) or the strategy itself did
            if isinstance(e, KeyboardInterrupt):
                raise
            if tried[label] == 0:
                failures.append(f"{label}: no request generated: {type(e).__name__}: {e}")
        took[label] = time.monotonic() - t0
    total = sum(tried.values())
    by_protocol: dict[str, int] = {}
    for label, n in tried.items():
        p = protocol_of(label.split(" ", 1)[1])
        by_protocol[p] = by_protocol.get(p, 0) + n
    print(
        f"\nfuzz: {total} requests over {len(tried)} operations ({by_protocol}); "
        f"statuses {dict(sorted(statuses.items()))}; 5xx: {len(server_errors)}; "
        f"check failures: {len(failures)}"
    )
    slowest = sorted(took.items(), key=lambda kv: -kv[1])[:6]
    print("fuzz: slowest operations " + ", ".join(f"{k} {v:.1f} s" for k, v in slowest))
    assert len(tried) >= 35 and total >= len(tried), failures[:3]
    assert {"openai", "anthropic", "ollama"} <= set(by_protocol), by_protocol
    assert not server_errors, "\n".join(server_errors[:5]) + "\n" + fuzz_server.log_text()
    assert not failures, "\n".join(failures[:10])


def test_an_unpaired_surrogate_is_a_400_not_a_500(
    fuzz_server: Server, fuzz_model_dir: Path
) -> None:
    """Found by the fuzzer: JSON may escape half a surrogate pair; it used to reach the engine's
    wire encoder and answer 500."""
    raw = (
        '{"model": "'
        + str(fuzz_model_dir)
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
    fuzz_server: Server, fuzz_model_dir: Path
) -> None:
    """Found by the fuzzer: a huge integer in a free-form field passed validation and failed in
    the engine's wire encoder (500)."""
    body = {
        "model": str(fuzz_model_dir),
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


def test_a_model_path_with_a_nul_byte_is_a_400(fuzz_server: Server) -> None:
    """Found by the fuzzer: a path-like model id holding a NUL byte ("~y\x00", "/a\x00b")
    reached the first stat, whose ValueError was a 500."""
    for mid in ("~y\x00z", "/no-such/a\x00b", "./x\x00"):
        for path, body in (
            ("v1/embeddings", {"model": mid, "input": "hi"}),
            (
                "v1/chat/completions",
                {"model": mid, "messages": [{"role": "user", "content": "hi"}]},
            ),
        ):
            r = fuzz_server.post(path, body)
            assert r.status_code == 400 and r.json()["error"]["param"] == "model", (mid, r.text)
    r = fuzz_server.post("api/show", {"model": "/no-such/a\x00b"})
    assert r.status_code in (400, 404), r.text
    error_shape("ollama", r)


def test_pulling_a_repo_the_hub_does_not_have_is_a_404(fuzz_server: Server) -> None:
    """What the fuzzer met on `api/pull` (stream false): an unknown repo was a 502
    `download_failed`. Every pull operation now says 404, in its protocol's shape, with no
    download (the fuzz server's hub is an empty local one)."""
    for stream in (False, True):
        r = fuzz_server.post("api/pull", {"model": "nobody/no-such-model", "stream": stream})
        assert r.status_code == 404, (stream, r.text)
        error_shape("ollama", r)
    r = fuzz_server.post("admin/models/pull", {"id": "nobody/no-such-model"})
    assert r.status_code == 404, r.text
    error_shape("openai", r)


def test_an_integer_past_64_bits_in_a_tool_schema_is_a_400_on_count_tokens(
    fuzz_server: Server, fuzz_model_dir: Path
) -> None:
    """Found by the long fuzz run: `v1/messages/count_tokens` sends its request to the engine as
    a call, whose encoding had no guard (the generation path had one): a 500."""
    body = {
        "model": str(fuzz_model_dir),
        "messages": [{"role": "user", "content": "hi"}],
        "tools": [{"name": "f", "input_schema": {"type": "object", "x": [-(2**80)]}}],
    }
    r = fuzz_server.post("v1/messages/count_tokens", body)
    assert r.status_code == 400, r.text
    error_shape("anthropic", r)
    assert "cannot take" in r.json()["error"]["message"]


def test_a_folder_that_is_not_a_model_is_not_found(
    fuzz_server: Server, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """Found by the long fuzz run: a path model id naming any folder (`/lib`) reached the
    engine's loader, whose `model_load_failed` is a 500."""
    folder = tmp_path_factory.mktemp("not-a-model")
    for path, body, protocol in (
        ("v1/responses", {"model": str(folder), "input": "hi"}, "openai"),
        ("v1/chat/completions", {"model": str(folder), "messages": [{"role": "user", "content": "hi"}]}, "openai"),
        ("api/generate", {"model": str(folder), "prompt": "hi", "stream": False}, "ollama"),
    ):  # fmt: skip
        r = fuzz_server.post(path, body)
        assert r.status_code == 404, (path, r.text)
        error_shape(protocol, r)
