"""The base class of every impetus handler: authentication, body limits, OpenAI-shaped errors.

It is a jupyter_server `APIHandler` in both homes: inside Jupyter it gets the server's identity
provider, authorizer, origin and XSRF checks; in `impetus serve` the app supplies
`ServeIdentityProvider` and an allow-all authorizer (API keys are the only credentials there).
impetus API keys are checked first, from the `Authorization` header only: a key is not a browser
credential, so key-authenticated requests skip the cookie-oriented XSRF and origin checks exactly
as Jupyter does for its own token.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any, TypeVar

from jupyter_core.utils import ensure_async
from jupyter_server.auth.identity import User
from jupyter_server.base.handlers import APIHandler
from msgspec import Struct
from pydantic import BaseModel, ValidationError
from tornado import web
from tornado.iostream import StreamClosedError

from impetus.api.auth import method_scope, presented_key
from impetus.api.errors import APIError, unauthorized
from impetus.api.keys import KeyMatch
from impetus.protocol import to_builtins

if TYPE_CHECKING:
    from impetus.api.service import ImpetusService

M = TypeVar("M", bound=BaseModel)
SERVICE_KEY = "impetus_service"
# the route table (impetus.api.routes.ROUTES), placed in the app settings by whoever mounts the
# handlers: the handlers read it from there, so that no module they import imports them back
ROUTES_SETTING = "impetus_routes"
# the replica's name (`impetus serve --instance-id`), sent with every response when set
INSTANCE_SETTING = "impetus_instance"
INSTANCE_HEADER = "X-Impetus-Instance"
ACTIONS = {"GET": "read", "HEAD": "read", "OPTIONS": "read"}  # anything else: "write"


@web.stream_request_body
class ImpetusHandler(APIHandler):
    """Subclasses tag each HTTP method with `@scope(...)`; untagged methods are refused."""

    auth_resource = "impetus"
    api_key: KeyMatch | None = None

    async def _execute(self, transforms: Any, *args: bytes, **kwargs: bytes) -> None:
        # Tornado's request lifecycle, counted from start to end (http_handlers_open), so that a
        # handler left waiting forever (e.g. on the body of a client that left) shows up.
        gauge = self.service.metrics.http_handlers
        gauge.inc()
        try:
            await super()._execute(transforms, *args, **kwargs)
        finally:
            gauge.dec()

    def set_default_headers(self) -> None:
        super().set_default_headers()
        # a default header: errors (which clear the headers) and streams carry it too
        if instance := self.settings.get(INSTANCE_SETTING):
            self.set_header(INSTANCE_HEADER, instance)

    @property
    def service(self) -> ImpetusService:
        service: ImpetusService = self.settings[SERVICE_KEY]
        return service

    # ---- authentication -------------------------------------------------------------------

    async def prepare(self) -> None:  # type: ignore[override]
        self._chunks: list[bytes] = []
        self._body_size = 0
        self._body_too_large = False
        method_name = (self.request.method or "").lower()
        if method_name == "options":
            await super().prepare()  # CORS preflight: APIHandler.options is public by design
            return
        method = getattr(self, method_name, None)
        if method is None or getattr(web.RequestHandler, method_name, None) is getattr(
            type(self), method_name, None
        ):
            raise APIError(
                405, f"Method {self.request.method} is not allowed here.", code="method_not_allowed"
            )
        needed = method_scope(method)
        if needed is None:  # fail closed: a handler method without a scope is a bug
            raise APIError(
                500, f"{type(self).__name__}.{method_name} has no auth scope.", code="internal"
            )

        key = presented_key(self.request.headers)
        match = self.service.keys.match(key) if key else None
        if match is not None:
            self.api_key = match
            self._token_authenticated = True
            self.current_user = self._jupyter_current_user = User(
                username=f"apikey-{match.id}", name=f"API key {match.id}"
            )
            self.set_cors_headers()
            if needed == "admin" and match.scope != "admin":
                raise APIError(
                    403,
                    "This API key is for inference only (/v1/*); admin endpoints need a Jupyter token or a full key.",
                    code="insufficient_scope",
                )
        else:
            if key and "Authorization" not in self.request.headers:
                # Anthropic's clients send their key as `x-api-key`: let a Jupyter token travel
                # that way too. Like Authorization, a custom header is no browser credential.
                self.request.headers["Authorization"] = f"token {key}"
            if not self.check_host():  # DNS rebinding guard (loopback-only servers)
                raise APIError(
                    403,
                    f"Host {self.request.host!r} is not allowed; this server only answers to local names.",
                    code="host_not_allowed",
                )
            try:
                await super().prepare()
            except web.HTTPError as e:
                if e.status_code == 403 and not self.current_user:
                    raise self._no_credentials(key) from None
                if e.status_code == 404:  # jupyter_server's answer to a foreign Origin
                    raise APIError(
                        403,
                        f"Cross-origin request blocked (Origin: {self.request.headers.get('Origin')}); "
                        "send an API key or token in the Authorization header.",
                        code="cross_origin",
                    ) from None
                raise
            if needed != "public":
                if not self.current_user:
                    raise self._no_credentials(key)
                allowed = await ensure_async(
                    self.authorizer.is_authorized(
                        self,
                        self.current_user,
                        ACTIONS.get(self.request.method or "", "write"),
                        self.auth_resource,
                    )
                )
                if not allowed:
                    raise APIError(403, "Not authorized to use impetus.", code="forbidden")
        self._check_declared_size()

    def _no_credentials(self, key: str | None) -> APIError:
        if key:
            return unauthorized("Incorrect API key provided.", code="invalid_api_key")
        return unauthorized(code="missing_api_key")

    def check_xsrf_cookie(self) -> None:
        if self.api_key is not None:
            return None  # a header credential: not forgeable by a foreign page
        return super().check_xsrf_cookie()

    # ---- request body ---------------------------------------------------------------------

    def _check_declared_size(self) -> None:
        declared = self.request.headers.get("Content-Length")
        limit = self.service.settings.max_body_bytes
        if declared is not None and declared.isdigit() and int(declared) > limit:
            # Refused before reading it; tornado closes the connection after this response.
            raise self._too_large()
        if self.request.connection is not None:
            # Our limit, not the server's default, decides. A chunked body may run past it by a
            # margin that is read and dropped (so the client still gets its 413); beyond that
            # Tornado drops the connection.
            known = declared is not None and declared.isdigit()
            self.request.connection.set_max_body_size(limit if known else 4 * limit + (1 << 20))  # type: ignore[attr-defined]

    def _too_large(self) -> APIError:
        limit = self.service.settings.max_body_bytes
        return APIError(
            413, f"Request body is larger than {limit} bytes.", code="request_too_large"
        )

    def data_received(self, chunk: bytes) -> None:
        self._body_size += len(chunk)
        if self._body_size > self.service.settings.max_body_bytes:
            # chunked upload past the limit: keep reading (so the client gets its 413), store nothing
            self._body_too_large = True
            self._chunks.clear()
        else:
            self._chunks.append(chunk)

    def body_bytes(self) -> bytes:
        if self._body_too_large:
            raise self._too_large()
        return b"".join(self._chunks)

    def parse(self, model: type[M]) -> M:
        """The JSON body validated against `model`; a 400 in OpenAI's shape otherwise."""
        raw = self.body_bytes()
        if not raw.strip():
            raise APIError(
                400, "The request body is empty; send a JSON object.", code="invalid_json"
            )
        try:
            data = json.loads(raw)
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise APIError(400, f"The body is not valid JSON: {e}.", code="invalid_json") from None
        if not isinstance(data, dict):
            raise APIError(400, "The body must be a JSON object.", code="invalid_json")
        if b"\\u" in raw:
            _check_unicode(data)
        try:
            return model.model_validate(data)
        except ValidationError as e:
            raise APIError.from_validation(e) from None

    # ---- responses ------------------------------------------------------------------------

    def write_json(
        self, obj: BaseModel | Struct | dict[str, Any] | list[Any], status: int = 200
    ) -> None:
        """An api schema (pydantic), an engine record (impetus.protocol) or plain data as JSON."""
        self.set_status(status)
        if isinstance(obj, BaseModel):
            text = obj.model_dump_json(exclude_none=True)
        else:
            text = json.dumps(to_builtins(obj))
        self.finish(text)

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        """Every error in OpenAI's shape, whatever raised it (us, Tornado or jupyter_server)."""
        exc = kwargs.get("exc_info", (None, None, None))[1]
        if isinstance(exc, APIError):
            err = exc
        elif isinstance(exc, web.HTTPError):
            message = (
                exc.log_message % exc.args if exc.log_message and exc.args else exc.log_message
            )
            err = APIError(exc.status_code, message or exc.reason or self._reason, code=None)
        else:
            err = APIError(
                status_code, "Internal server error; see the server log.", code="internal"
            )
        if err.status >= 400:
            self.service.metrics.http_errors.labels(str(err.status)).inc()
        self.clear_header("Content-Type")
        for name, value in err.headers.items():
            self.set_header(name, value)
        self.set_header("Cache-Control", "no-store")
        self.finish(json.dumps(self.error_body(err)))

    def on_finish(self) -> None:
        self.service.metrics.observe_http(
            self.endpoint_label(),
            self.request.method or "",
            self.get_status(),
            self.request.request_time(),
        )

    def endpoint_label(self) -> str:
        """The metrics label of this handler: its (first) route pattern, never a raw path with
        ids in it."""
        for pattern, cls in self.settings.get(ROUTES_SETTING, ()):
            if cls is type(self):
                return "/" + str(pattern)
        return type(self).__name__

    def error_body(self, err: APIError) -> dict[str, Any]:
        """The JSON of an error response; handlers of other protocols answer in their own shape."""
        return err.body()

    def log_exception(self, typ: Any, value: Any, tb: Any) -> None:
        if isinstance(value, APIError):
            level = self.log.warning if value.status >= 500 else self.log.info
            level(
                "%s %s -> %d %s",
                self.request.method,
                self.request.path,
                value.status,
                value.message,
            )
            return
        super().log_exception(typ, value, tb)

    def send_error(self, status_code: int = 500, **kwargs: Any) -> None:
        exc = kwargs.get("exc_info", (None, None, None))[1]
        if isinstance(exc, APIError):
            status_code = exc.status  # tornado only knows HTTPError's status
        if isinstance(exc, StreamClosedError):
            return  # the client is gone: nothing to tell it
        super().send_error(status_code, **kwargs)


def _check_unicode(data: Any) -> None:
    """JSON may escape half of a UTF-16 surrogate pair (`"\\udc00"`); Python accepts it, but such
    a string is not Unicode and fails later where text is encoded (the engine's wire): a 400 here.
    Only bodies with `\\u` escapes are walked."""
    try:
        json.dumps(data, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError as e:
        raise APIError(
            400,
            f"The body contains an unpaired UTF-16 surrogate ({e.object[e.start : e.end]!a}), "
            "which is not valid Unicode.",
            code="invalid_json",
        ) from None
