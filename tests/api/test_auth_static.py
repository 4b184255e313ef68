"""CI check: every handler is an ImpetusHandler and every HTTP method it serves carries a scope.

The base class refuses untagged methods at run time too (fail closed); the second test proves it
on a real server.
"""

from __future__ import annotations

import asyncio

import httpx
from tornado import web
from tornado.httpserver import HTTPServer
from tornado.netutil import bind_sockets

from impetus.api.auth import method_scope, scope
from impetus.api.base import ImpetusHandler
from impetus.api.routes import ROUTES, handler_classes
from impetus.api.service import ImpetusService
from impetus.config import Settings

HTTP_METHODS = ("get", "head", "post", "put", "patch", "delete")


def served_methods(cls: type[web.RequestHandler]) -> list[str]:
    """The HTTP methods the class implements (not Tornado's 405 defaults)."""
    return [m for m in HTTP_METHODS if getattr(cls, m) is not getattr(web.RequestHandler, m)]


def test_every_handler_carries_an_auth_scope() -> None:
    assert ROUTES
    for cls in handler_classes():
        assert issubclass(cls, ImpetusHandler), (
            f"{cls.__name__} does not derive from ImpetusHandler"
        )
        methods = served_methods(cls)
        assert methods, f"{cls.__name__} serves nothing"
        for name in methods:
            assert method_scope(getattr(cls, name)) in ("public", "inference", "admin"), (
                f"{cls.__name__}.{name} has no @scope(...)"
            )


def test_v1_is_never_public_and_admin_is_admin() -> None:
    for pattern, cls in ROUTES:
        for name in served_methods(cls):
            s = method_scope(getattr(cls, name))
            if pattern.startswith("v1/"):
                assert s == "inference", (pattern, name)
            if pattern.startswith("admin/") or pattern == "metrics":
                assert s == "admin", (pattern, name)
            if pattern.startswith("api/"):  # Ollama's: inference, but pull writes models
                expected = {"api/pull": "admin", "api/version": "public"}.get(pattern, "inference")
                assert s == expected, (pattern, name)


class Forgetful(ImpetusHandler):
    async def get(self) -> None:  # no @scope: must be refused
        self.write_json({"leak": True})


class Tagged(ImpetusHandler):
    @scope("public")
    async def get(self) -> None:
        self.write_json({"ok": True})


def test_untagged_methods_fail_closed(tmp_path: object) -> None:
    async def main() -> tuple[httpx.Response, httpx.Response]:
        service = ImpetusService(Settings(home=tmp_path, no_auth=True))  # type: ignore[arg-type]
        from impetus.api.app import make_app

        app = make_app(service)
        app.add_handlers(".*", [("/forgetful", Forgetful), ("/tagged", Tagged)])
        sockets = bind_sockets(0, "127.0.0.1")
        server = HTTPServer(app)
        server.add_sockets(sockets)
        port = sockets[0].getsockname()[1]
        try:
            async with httpx.AsyncClient() as client:
                return await client.get(f"http://127.0.0.1:{port}/forgetful"), await client.get(
                    f"http://127.0.0.1:{port}/tagged"
                )
        finally:
            server.stop()

    forgetful, tagged = asyncio.run(main())
    assert forgetful.status_code == 500 and "leak" not in forgetful.text
    assert forgetful.json()["error"]["code"] == "internal"
    assert tagged.status_code == 200
