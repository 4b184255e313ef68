"""A real HTTP proxy in front of a real server, for the bad-endpoint cases of the benchmark.

* `fail_every=N`: every Nth request gets a 500 in OpenAI's error shape (N=2: half of them);
* `strip_usage=True`: `stream_options` is removed from the body, so the upstream sends no
  `usage` (an endpoint that never reports token counts).
Everything else is forwarded as is, streamed chunk by chunk.
"""

from __future__ import annotations

import asyncio
import json
import threading
from typing import Any

import httpx
import tornado.web
from tornado.httpserver import HTTPServer
from tornado.netutil import bind_sockets


class _Handler(tornado.web.RequestHandler):
    def initialize(self, proxy: FlakyProxy) -> None:
        self.proxy = proxy

    async def post(self, path: str) -> None:
        proxy = self.proxy
        with proxy.lock:
            proxy.count += 1
            fail = proxy.fail_every > 0 and proxy.count % proxy.fail_every == 0
        if fail:
            self.set_status(500)
            self.set_header("Content-Type", "application/json")
            self.finish(
                json.dumps(
                    {
                        "error": {
                            "message": "injected failure",
                            "type": "server_error",
                            "param": None,
                            "code": None,
                        }
                    }
                )
            )
            return
        body: dict[str, Any] = json.loads(self.request.body or b"{}")
        if proxy.strip_usage:
            body.pop("stream_options", None)
        async with (
            httpx.AsyncClient(timeout=120) as client,
            client.stream("POST", proxy.upstream + path, json=body) as response,
        ):
            self.set_status(response.status_code)
            self.set_header(
                "Content-Type", response.headers.get("content-type", "application/json")
            )
            async for chunk in response.aiter_raw():
                self.write(chunk)
                await self.flush()
        self.finish()

    async def get(self, path: str) -> None:
        async with httpx.AsyncClient(timeout=30) as client:
            response = await client.get(self.proxy.upstream + path)
        self.set_status(response.status_code)
        self.set_header("Content-Type", response.headers.get("content-type", "application/json"))
        self.finish(response.content)


class FlakyProxy:
    def __init__(self, upstream: str, *, fail_every: int = 0, strip_usage: bool = False) -> None:
        self.upstream = upstream.rstrip("/")  # server root: paths are forwarded as they come
        self.fail_every = fail_every
        self.strip_usage = strip_usage
        self.count = 0
        self.lock = threading.Lock()
        self.port = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._server: HTTPServer | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def start(self) -> FlakyProxy:
        ready = threading.Event()

        def run() -> None:
            loop = asyncio.new_event_loop()
            asyncio.set_event_loop(loop)
            self._loop = loop
            app = tornado.web.Application([(r"(/.*)", _Handler, {"proxy": self})])
            sockets = bind_sockets(0, "127.0.0.1")
            self.port = sockets[0].getsockname()[1]
            self._server = HTTPServer(app)
            self._server.add_sockets(sockets)
            ready.set()
            loop.run_forever()
            loop.close()

        self._thread = threading.Thread(target=run, name="flaky-proxy", daemon=True)
        self._thread.start()
        ready.wait(10)
        return self

    def stop(self) -> None:
        if self._loop is None:
            return
        loop = self._loop

        def shutdown() -> None:
            if self._server is not None:
                self._server.stop()
            loop.stop()

        loop.call_soon_threadsafe(shutdown)
        if self._thread is not None:
            self._thread.join(10)
        self._loop = None
