"""The Tornado application of `impetus serve`: the shared handlers at `/`, without Jupyter.

The handlers are jupyter_server `APIHandler`s; here they get the few settings those read (an
identity provider that knows no users but `--no-auth`'s anonymous one, an allow-all authorizer,
no cookie XSRF since API keys travel in headers, and a loopback-only Host check when auth is off,
against DNS rebinding).
"""

from __future__ import annotations

import json
import logging
from typing import Any

from jupyter_server.auth.authorizer import AllowAllAuthorizer
from tornado import web

from impetus.api.auth import ServeIdentityProvider
from impetus.api.base import SERVICE_KEY
from impetus.api.openapi import ROUTES_SETTING
from impetus.api.routes import ROUTES, build_handlers
from impetus.api.service import ImpetusService

log = logging.getLogger("impetus.api")


class NotFoundHandler(web.RequestHandler):
    """Unknown paths: 404 in OpenAI's error shape too."""

    def prepare(self) -> None:
        self.set_status(404)
        self.set_header("Content-Type", "application/json")
        error = {
            "message": f"Unknown path: {self.request.path}",
            "type": "invalid_request_error",
            "param": None,
            "code": "not_found",
        }
        self.finish(json.dumps({"error": error}))


def make_app(service: ImpetusService) -> web.Application:
    settings = service.settings
    identity = ServeIdentityProvider(no_auth=settings.no_auth)
    app_settings: dict[str, Any] = {
        SERVICE_KEY: service,
        "impetus_prefix": "/",
        ROUTES_SETTING: ROUTES,
        "base_url": "/",
        "identity_provider": identity,
        "authorizer": AllowAllAuthorizer(identity_provider=identity),
        "disable_check_xsrf": True,
        "allow_remote_access": not settings.no_auth,
        "allow_origin": settings.allow_origin,
        "xsrf_cookies": False,
        "serverapp": None,
        "websocket_ping_interval": None,
    }
    return web.Application(
        build_handlers("/"), default_handler_class=NotFoundHandler, **app_settings
    )
