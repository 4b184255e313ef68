"""The shipped nginx configurations in front of a real `impetus serve`: streaming, limits, TLS."""

from __future__ import annotations

import json
import ssl
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import openai
import pytest

from tests.api.conftest import ADMIN_KEY, Server
from tests.deploy.conftest import PACED
from tests.deploy.nginx import DEPLOY, Nginx, free_port, render_upstream, rewrite

# A server that is not shipped: a plain proxy to the same upstream, which inherits the compression
# the test server applies to event streams; the control that shows the streaming measure below
# tells a proxy that holds the stream back apart.
BUFFERED_CONTROL = """
server {{
    listen 127.0.0.1:{port};
    location / {{ proxy_pass http://impetus; proxy_http_version 1.1; }}
}}
"""


class Proxy:
    def __init__(self, nginx: Nginx, ports: dict[str, int]) -> None:
        self.nginx = nginx
        self.http = f"http://127.0.0.1:{ports['http']}/"
        self.https = f"https://127.0.0.1:{ports['https']}/"
        self.redirect = f"http://127.0.0.1:{ports['redirect']}/"
        self.buffered = f"http://127.0.0.1:{ports['buffered']}/"


@pytest.fixture(scope="module")
def replica(server_factory: Callable[..., Server], paced_models: Path) -> Server:
    return server_factory("--model-dir", str(paced_models), "--model", PACED)


@pytest.fixture(scope="module")
def proxy(
    replica: Server, tls_files: tuple[Path, Path], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Proxy]:
    nginx = Nginx(tmp_path_factory.mktemp("nginx"))
    nginx.conf("impetus-upstream.conf", render_upstream([replica.base_url.split("/")[2]]))
    ports = {name: free_port() for name in ("http", "https", "redirect", "buffered")}

    site = (DEPLOY / "impetus.conf").read_text()
    site = rewrite(site, r"^\s*listen 80;$", f"    listen 127.0.0.1:{ports['http']};", 1)
    site = rewrite(site, r"^\s*listen \[::\]:80;\n", "", 1)
    nginx.site("impetus", site)

    cert, key = tls_files
    tls = (DEPLOY / "impetus-tls.conf").read_text()
    tls = rewrite(tls, r"^\s*listen 80;$", f"    listen 127.0.0.1:{ports['redirect']};", 1)
    tls = rewrite(tls, r"^\s*listen 443 ssl;$", f"    listen 127.0.0.1:{ports['https']} ssl;", 1)
    tls = rewrite(tls, r"^\s*listen \[::\]:(80|443 ssl);\n", "", 2)
    tls = rewrite(tls, r"ssl_certificate \S+;", f"ssl_certificate {cert};", 1)
    tls = rewrite(tls, r"ssl_certificate_key \S+;", f"ssl_certificate_key {key};", 1)
    nginx.site("impetus-tls", tls)
    nginx.site("control", BUFFERED_CONTROL.format(port=ports["buffered"]))

    nginx.start()
    p = Proxy(nginx, ports)
    nginx.wait_http(p.http + "health")
    yield p
    nginx.stop()


def client_for(base: str, **kw: object) -> openai.OpenAI:
    return openai.OpenAI(base_url=base + "v1", api_key=ADMIN_KEY, max_retries=0, **kw)  # type: ignore[arg-type]


def stream_times(client: openai.OpenAI, tokens: int = 16) -> tuple[float, list[float], int]:
    """(request sent, arrival time of every chunk with text, completion tokens)."""
    sent = time.monotonic()
    arrivals: list[float] = []
    usage = 0
    for chunk in client.chat.completions.create(
        model=PACED,
        messages=[{"role": "user", "content": "Tell me a story."}],
        max_tokens=tokens,
        stream=True,
        stream_options={"include_usage": True},
        extra_body={"ignore_eos": True},
    ):
        if chunk.choices and chunk.choices[0].delta.content:
            arrivals.append(time.monotonic())
        if chunk.usage:
            usage = chunk.usage.completion_tokens
    assert usage == tokens
    # a random model's token can end inside a UTF-8 sequence and send no text of its own: how many
    # chunks carry text depends on what it sampled; two are enough to measure the spread
    assert len(arrivals) >= 2
    return sent, arrivals, usage


def spread_ratio(client: openai.OpenAI) -> float:
    """How much of a streamed request's duration its chunks' arrivals span (best of two).

    A relative measure, no timing threshold: through a proxy that buffers, the chunks all arrive
    in one burst at the end (ratio near 0); streamed, they span the generation of 16 tokens, most
    of the request (on a loaded machine the engine stalls now and then, so best of two)."""
    best = 0.0
    for _ in range(2):
        sent, arrivals, _ = stream_times(client)
        best = max(best, (arrivals[-1] - arrivals[0]) / (arrivals[-1] - sent))
    return best


def warm_up(client: openai.OpenAI) -> None:
    """The first request on a fresh server pays one-time costs that would dwarf the stream."""
    client.chat.completions.create(
        model=PACED, messages=[{"role": "user", "content": "Hi"}], max_tokens=2
    )


def test_tokens_stream_through_nginx(proxy: Proxy) -> None:
    client = client_for(proxy.http)
    warm_up(client)
    streamed = spread_ratio(client)
    buffered = spread_ratio(client_for(proxy.buffered))  # the control
    assert buffered < 0.1, buffered
    assert streamed > 0.3, streamed


def test_nginx_tls_example(proxy: Proxy, tls_files: tuple[Path, Path]) -> None:
    cert, _ = tls_files
    trust = ssl.create_default_context(cafile=str(cert))
    with httpx.Client(verify=trust) as http:
        client = client_for(proxy.https, http_client=http)
        warm_up(client)
        assert spread_ratio(client) > 0.3
    # plain HTTP is sent to HTTPS
    r = httpx.get(proxy.redirect + "v1/models", timeout=10)
    assert r.status_code == 301 and r.headers["location"].startswith("https://127.0.0.1")


def _chat_of_size(size: int) -> bytes:
    """A one-token chat request padded with JSON whitespace to exactly `size` bytes (cheap for
    impetus to answer, however large)."""
    body = json.dumps(
        {"model": PACED, "max_tokens": 1, "messages": [{"role": "user", "content": "Hi"}]}
    ).encode()
    return body + b" " * (size - len(body))


def test_body_limit_matches_impetus(proxy: Proxy) -> None:
    """nginx's limit is impetus's default --max-body-bytes (8 MiB): a body at the limit reaches
    impetus, one byte more is refused by nginx in OpenAI's error shape."""
    limit = 8 * 1024 * 1024
    headers = {"Authorization": f"Bearer {ADMIN_KEY}", "Content-Type": "application/json"}
    url = proxy.http + "v1/chat/completions"
    over = httpx.post(url, content=_chat_of_size(limit + 1), headers=headers, timeout=60)
    assert over.status_code == 413
    assert over.json()["error"]["code"] == "request_too_large"
    with pytest.raises(openai.APIStatusError) as err:
        client_for(proxy.http).embeddings.create(model="m", input="x" * (limit + 1))
    assert err.value.status_code == 413 and err.value.code == "request_too_large"
    # at the limit the request passes nginx, and impetus answers it
    at = httpx.post(url, content=_chat_of_size(limit), headers=headers, timeout=120)
    assert at.status_code == 200, at.text
    assert at.json()["usage"]["completion_tokens"] == 1


def test_errors_keep_openai_shape(proxy: Proxy, tmp_path: Path) -> None:
    """impetus's own errors pass through nginx; nginx's (no replica up) have OpenAI's shape."""
    with pytest.raises(openai.AuthenticationError) as auth:
        openai.OpenAI(base_url=proxy.http + "v1", api_key="wrong", max_retries=0).models.list()
    assert auth.value.code == "invalid_api_key"

    down = Nginx(tmp_path / "down")
    down.conf("impetus-upstream.conf", render_upstream([f"127.0.0.1:{free_port()}"]))
    port = free_port()
    site = rewrite(
        (DEPLOY / "impetus.conf").read_text(), r"^\s*listen 80;$", f"listen 127.0.0.1:{port};", 1
    )
    down.site("impetus", rewrite(site, r"^\s*listen \[::\]:80;\n", "", 1))
    down.start()
    try:
        with pytest.raises(openai.InternalServerError) as err:
            client_for(f"http://127.0.0.1:{port}/").models.list()
        assert err.value.status_code == 503 and err.value.code == "upstream_unavailable"
    finally:
        down.stop()
