"""Operations endpoints: health, ready, metrics, the OpenAPI document and the offline explorer."""

from __future__ import annotations

import html
from importlib.resources import files

from impetus.api.auth import scope
from impetus.api.base import ImpetusHandler
from impetus.api.errors import RETRY_AFTER_SECONDS, APIError
from impetus.api.openapi import ROUTES_SETTING, openapi_document, operation
from impetus.api.schemas import Health, Ready

STATIC = files("impetus.api") / "static"


class HealthHandler(ImpetusHandler):
    """Liveness: the HTTP server answers. It does not wait on the engine."""

    _track_activity = False  # probes must not count as Jupyter activity (idle culling)

    @scope("public")
    @operation("Liveness", tag="Operations", returns=Health)
    async def get(self) -> None:
        self.write_json(Health(engine=self.service.engine.state))


class ReadyHandler(ImpetusHandler):
    """Readiness: the engine runs and has a model loaded; 503 with the reason otherwise."""

    _track_activity = False

    @scope("public")
    @operation(
        "Readiness: engine up and a model loaded (503 otherwise)",
        tag="Operations",
        returns=Ready,
        errors={503: "Not ready (the message says why; see Retry-After)"},
    )
    async def get(self) -> None:
        ok, why, models = await self.service.readiness()
        if not ok:
            raise APIError(
                503,
                f"Not ready: {why}.",
                type="server_error",
                code="not_ready",
                headers={"Retry-After": str(RETRY_AFTER_SECONDS)},
            )
        ranks = self.service.engine.ranks
        self.write_json(
            Ready(
                models=models,
                ranks=ranks.size if ranks else 1,
                distributed_backend=ranks.backend if ranks else None,
            )
        )


class MetricsHandler(ImpetusHandler):
    _track_activity = False

    @scope("admin")
    @operation("Prometheus metrics", tag="Operations", media="text/plain")
    async def get(self) -> None:
        if self.service.engine.state == "ready":
            await self.service.status()
        else:
            self.service.metrics.set_status(None)
        self.set_header("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
        self.finish(
            self.service.metrics.render(),
            set_content_type="text/plain; version=0.0.4; charset=utf-8",
        )


class OpenAPIHandler(ImpetusHandler):
    @scope("public")
    @operation("This OpenAPI document", tag="Operations", media="application/json")
    async def get(self) -> None:
        prefix = self.settings.get("impetus_prefix", "/")
        self.write_json(openapi_document(prefix, self.settings[ROUTES_SETTING]))


class ExplorerHandler(ImpetusHandler):
    """A small self-contained page (HTML + JS + CSS shipped in the package, no CDN)."""

    ASSETS = {
        "": ("explorer.html", "text/html; charset=utf-8"),
        "explorer.js": ("explorer.js", "text/javascript; charset=utf-8"),
        "explorer.css": ("explorer.css", "text/css; charset=utf-8"),
    }

    @property
    def content_security_policy(self) -> str:
        # scripts and styles only from these very files; requests only to this server
        return "; ".join(
            [
                "default-src 'none'",
                "script-src 'self'",
                "style-src 'self'",
                "connect-src 'self'",
                "img-src 'self' data:",
                "base-uri 'none'",
                "form-action 'none'",
                "frame-ancestors 'self'",
            ]
        )

    @scope("public")
    @operation(
        "The API explorer (a page and its script and style)", tag="Operations", media="text/html"
    )
    async def get(self, asset: str = "") -> None:
        if asset not in self.ASSETS:
            raise APIError(404, f"No such explorer file: {asset!r}.", code="not_found")
        name, ctype = self.ASSETS[asset]
        if asset == "":
            # Jupyter sets the _xsrf cookie when a page asks for the token; the page sends it
            # back as X-XSRFToken for POSTs made with the browser session.
            _ = self.xsrf_token
        body = (STATIC / name).read_bytes()
        if asset == "":
            # absolute asset and API URLs: the page works at docs and docs/ alike
            prefix = html.escape(self.settings.get("impetus_prefix", "/"), quote=True)
            body = body.replace(b"__PREFIX__", prefix.encode())
        self.set_header("Cache-Control", "no-cache")
        self.finish(body, set_content_type=ctype)
