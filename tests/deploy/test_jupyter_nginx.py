"""deploy/nginx/jupyterlab.conf in front of a real Jupyter server with the impetus extension:
the impetus API streams through it, and Jupyter's WebSockets upgrade through it."""

from __future__ import annotations

import asyncio
import os
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest
from tornado.httpclient import HTTPRequest
from tornado.websocket import websocket_connect

from tests.deploy.conftest import PACED
from tests.deploy.nginx import DEPLOY, Nginx, free_port, render_upstream, rewrite
from tests.deploy.test_nginx import spread_ratio, warm_up


@pytest.fixture(scope="module")
def jupyter(
    paced_models: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[int, str]]:
    """A Jupyter server as docs/deploy.md starts it behind nginx (loopback, trusted X-headers)."""
    tmp = tmp_path_factory.mktemp("jupyter")
    port, token = free_port(), secrets.token_hex(16)
    env = {k: v for k, v in os.environ.items() if not k.startswith("IMPETUS_")}
    env.update(
        JUPYTER_RUNTIME_DIR=str(tmp / "runtime"),
        JUPYTER_CONFIG_DIR=str(tmp / "config"),
        IMPETUS_HOME=str(tmp / "home"),
        IMPETUS_MODEL_DIR=str(paced_models),
        IMPETUS_MODELS=PACED,
        IMPETUS_ENGINE_START="eager",
    )
    cmd = [
        sys.executable, "-m", "jupyter_server", "--no-browser", "--ip=127.0.0.1", f"--port={port}",
        f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={tmp}",
        "--ServerApp.jpserver_extensions=impetus=True",
        "--ServerApp.trust_xheaders=True", "--ServerApp.allow_remote_access=True", "--allow-root",
    ]  # fmt: skip
    log = tmp / "jupyter.log"
    proc = subprocess.Popen(
        cmd, env=env, stdout=log.open("wb"), stderr=subprocess.STDOUT, start_new_session=True
    )
    try:
        deadline = time.monotonic() + 180
        while True:
            try:
                r = httpx.get(f"http://127.0.0.1:{port}/impetus/ready", timeout=2)
                if r.status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert proc.poll() is None and time.monotonic() < deadline, log.read_text()[-3000:]
            time.sleep(0.5)
        yield port, token
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)


@pytest.fixture(scope="module")
def proxy(jupyter: tuple[int, str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    nginx = Nginx(tmp_path_factory.mktemp("nginx-jupyter"))
    nginx.conf("impetus-upstream.conf", render_upstream(["127.0.0.1:9"]))  # unused here
    port = free_port()
    site = (DEPLOY / "jupyterlab.conf").read_text()
    site = rewrite(site, r"^\s*listen 80;$", f"    listen 127.0.0.1:{port};", 1)
    site = rewrite(site, r"^\s*listen \[::\]:80;\n", "", 1)
    site = rewrite(site, r"server 127\.0\.0\.1:8888;", f"server 127.0.0.1:{jupyter[0]};", 1)
    nginx.site("jupyterlab", site)
    nginx.start()
    base = f"http://127.0.0.1:{port}/"
    nginx.wait_http(base + "api/status")
    yield base
    nginx.stop()


def test_impetus_streams_through_nginx_in_jupyter(proxy: str, jupyter: tuple[int, str]) -> None:
    _, token = jupyter
    client = openai.OpenAI(base_url=proxy + "impetus/v1", api_key=token, max_retries=0)
    warm_up(client)
    assert spread_ratio(client) > 0.3
    assert httpx.get(proxy + "lab", timeout=10).status_code in (200, 302, 404)  # Jupyter answers


def test_websockets_upgrade_through_nginx(proxy: str, jupyter: tuple[int, str]) -> None:
    """Jupyter's event WebSocket, opened as a browser does (with an Origin of the proxy's host)."""
    _, token = jupyter
    url = proxy.replace("http://", "ws://") + "api/events/subscribe"
    origin = proxy.rstrip("/")

    async def connect() -> None:
        request = HTTPRequest(
            url, headers={"Authorization": f"token {token}", "Origin": origin}, request_timeout=20
        )
        conn = await websocket_connect(request)
        try:
            # the socket stays open through nginx: a message from the server arrives on it
            httpx.post(
                proxy + "api/events",
                json={"schema_id": "https://events.jupyter.org/jupyter_server/gateway_client/v1",
                      "version": "1", "data": {"msg": "from the test", "status": "success"}},
                headers={"Authorization": f"token {token}"},
                timeout=10,
            )  # fmt: skip
            message = await asyncio.wait_for(conn.read_message(), timeout=20)
            assert message is not None and "from the test" in str(message)
        finally:
            conn.close()

    asyncio.run(connect())
