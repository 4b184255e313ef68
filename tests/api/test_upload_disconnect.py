"""A client that leaves in the middle of its request body: the handler ends (Tornado fails the
pending body future in `on_connection_close`, which the handlers' overrides must pass on)."""

from __future__ import annotations

import socket
import time
from urllib.parse import urlsplit

import pytest

from tests.api.conftest import Server

OPEN = "impetus:http_handlers_open"


def wait_for(server: Server, value: float, what: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    seen = server.metric(OPEN)
    while seen != value and time.monotonic() < deadline:
        time.sleep(0.05)
        seen = server.metric(OPEN)
    assert seen == value, f"{what}: {OPEN} is {seen}, expected {value}"


@pytest.mark.parametrize(
    "path",
    [
        "v1/chat/completions",  # overrides on_connection_close (cancels its generations)
        "v1/completions",
        "admin/models/pull",  # overrides it too (wakes its progress loop)
        "api/pull",  # Ollama's pull: the same override
        "v1/embeddings",  # Tornado's own on_connection_close
    ],
)
def test_a_handler_ends_when_its_client_leaves_mid_body(server: Server, path: str) -> None:
    # the /metrics request that reads the gauge is itself one open handler
    idle = server.metric(OPEN)
    url = urlsplit(server.url(path))
    head = (
        f"POST {url.path} HTTP/1.1\r\nHost: {url.netloc}\r\n"
        f"Authorization: Bearer {server.key}\r\nContent-Type: application/json\r\n"
        "Content-Length: 100000\r\n\r\n"
    )
    with socket.create_connection((url.hostname, url.port)) as sock:
        sock.sendall(head.encode() + b'{"model": "')
        wait_for(server, idle + 1, "the handler did not start reading the body")
    wait_for(server, idle, "the handler still waits for the body of a client that left")
