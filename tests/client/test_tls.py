"""`openai()` keeps the endpoint's TLS setting: against a server with a self-signed certificate
(a Jupyter server run with its own certificate), the OpenAI SDK works wherever ImpetusClient does.

The server here is a real HTTPS server on loopback (the standard library's, wrapped with `ssl`:
it starts in milliseconds, where `impetus serve --certfile` starts an engine), with a certificate
made for the test (tests/deploy/certs.py).
"""

from __future__ import annotations

import json
import ssl
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import openai
import pytest

from impetus.client import Endpoint, ImpetusClient
from tests.deploy.certs import self_signed


class _Models(BaseHTTPRequestHandler):
    """Answers `v1/models` as impetus does."""

    def do_GET(self) -> None:
        body = json.dumps(
            {
                "object": "list",
                "data": [{"id": "tiny", "object": "model", "created": 1, "owned_by": "impetus"}],
            }
        ).encode()
        self.send_response(200 if self.path.endswith("/v1/models") else 404)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture()
def https_url(tmp_path: Path) -> Iterator[str]:
    cert, key = self_signed(tmp_path)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Models)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"https://localhost:{server.server_address[1]}/impetus/"
    finally:
        server.shutdown()
        server.server_close()


def test_openai_client_keeps_verify_off_for_a_self_signed_server(https_url: str) -> None:
    endpoint = Endpoint(https_url, "token", source="jupyter", verify=False)
    with ImpetusClient(endpoint=endpoint) as client:
        assert [m.id for m in client.served_models()] == ["tiny"]
        assert [m.id for m in client.openai(max_retries=0).models.list()] == ["tiny"]


def test_openai_client_checks_certificates_by_default(https_url: str) -> None:
    client = ImpetusClient(endpoint=Endpoint(https_url, "token"))
    with pytest.raises(openai.APIConnectionError):
        client.openai(max_retries=0).models.list()
