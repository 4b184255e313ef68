"""health, ready, metrics, openapi.json and the offline API explorer."""

from __future__ import annotations

import re

from impetus.api.routes import ROUTES
from tests.api.conftest import Server

HELLO = [{"role": "user", "content": "Hello"}]


def test_health_and_ready(server: Server, model: str) -> None:
    assert server.get("health", key=None).json() == {"status": "ok", "engine": "ready"}
    ready = server.get("ready", key=None).json()
    assert ready["status"] == "ready" and model in ready["models"]


def test_admin_status(server: Server, model: str) -> None:
    st = server.get("admin/status").json()
    assert st["state"] == "ready" and st["pid"] > 0
    assert st["endpoint"] == server.url("v1")
    assert model in [m["id"] for m in st["models"]]
    assert st["draining"] is False


def test_metrics_after_requests(server: Server, model: str) -> None:
    client = server.openai()
    before = server.metric("impetus:generation_tokens_total")
    client.chat.completions.create(model=model, messages=HELLO, max_tokens=7, temperature=0)  # type: ignore[arg-type]
    list(
        client.chat.completions.create(
            model=model, messages=HELLO, max_tokens=5, temperature=0, stream=True
        )
    )  # type: ignore[arg-type]
    text = server.get("metrics").text
    for name in (
        "impetus:time_to_first_token_seconds_bucket",
        "impetus:inter_token_latency_seconds_bucket",
        "impetus:e2e_request_latency_seconds_bucket",
        "impetus:request_queue_time_seconds_bucket",
        "impetus:prompt_tokens_total",
        "impetus:generation_tokens_total",
        "impetus:num_requests_running",
        "impetus:num_requests_waiting",
        "impetus:prefix_cache_queries_total",
        "impetus:prefix_cache_hits_total",
        "impetus:engine_restarts_total",
        "impetus:request_success_total",
    ):
        assert re.search(rf"^{re.escape(name)}[{{ ]", text, re.M), name
    assert server.metric("impetus:generation_tokens_total") - before == 12
    assert server.metric("impetus:time_to_first_token_seconds_count", f'model_name="{model}"') >= 2
    assert (
        server.metric("impetus:prefix_cache_hits_total") > 0
    )  # the second request reused the first's prompt
    assert server.metric("impetus:num_requests_running") == 0


def test_openapi_document(server: Server) -> None:
    doc = server.get("openapi.json", key=None).json()
    assert doc["openapi"].startswith("3.")
    paths = set(doc["paths"])
    for pattern, _ in ROUTES:
        if pattern.startswith(("docs", "openapi")):
            continue
        path = "/" + re.sub(r"\([^)]*\)", "{x}", pattern)
        normalized = {re.sub(r"\{[^}]+\}", "{x}", p) for p in paths}
        assert path in normalized, pattern
    chat = doc["paths"]["/v1/chat/completions"]["post"]
    ref = chat["requestBody"]["content"]["application/json"]["schema"]["$ref"]
    schema = doc["components"]["schemas"][ref.rsplit("/", 1)[1]]
    assert {"model", "messages", "stream", "tools", "response_format", "logprobs"} <= set(
        schema["properties"]
    )
    assert "text/event-stream" in chat["responses"]["200"]["content"]
    assert chat["security"] == [{"bearer": []}]
    assert "security" not in doc["paths"]["/health"]["get"]


def test_explorer_works_offline(server: Server) -> None:
    page = server.get("docs", key=None)
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    csp = page.headers["content-security-policy"]
    assert "script-src 'self'" in csp and "connect-src 'self'" in csp
    html = page.text
    # every asset comes from this server: no CDN, no absolute URL to anywhere
    assert not re.search(r"(src|href)=\"(https?:)?//", html)
    assert 'src="/docs/explorer.js"' in html and 'href="/docs/explorer.css"' in html
    for asset, ctype in (
        ("docs/explorer.js", "text/javascript"),
        ("docs/explorer.css", "text/css"),
    ):
        r = server.get(asset, key=None)
        assert r.status_code == 200 and r.headers["content-type"].startswith(ctype)
        assert "http://" not in r.text and "https://" not in r.text
    assert "openapi.json" in server.get("docs/explorer.js", key=None).text
    assert server.get("docs/", key=None).status_code == 200
    assert server.get("docs/secrets.txt", key=None).status_code == 404
