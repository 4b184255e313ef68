"""Who may call what: scopes on handler methods, and the identity provider of `impetus serve`.

Every HTTP method of every impetus handler is tagged with one scope by `@scope(...)`; the base
handler (`impetus.api.base.ImpetusHandler.prepare`) enforces it and refuses methods without a
tag, so a handler that forgets its decorator fails closed (and tests/api/test_auth_static.py
fails in CI).

* `public`: no credentials (health, ready, the OpenAPI document, the explorer page).
* `inference`: /v1/* — an inference-only API key, a full key, or a Jupyter user.
* `admin`: admin/*, metrics — a full key of `impetus serve`, or a Jupyter user (never an
  inference-only key: those open /v1/* and nothing else).

In Jupyter, the server's own identity provider authenticates tokens and browser sessions and its
authorizer is asked about the `impetus` resource; in `impetus serve` the same handlers run with
`ServeIdentityProvider`, which knows no user except the anonymous one of `--no-auth`.
"""

from __future__ import annotations

import ipaddress
import re
import socket
from collections.abc import Callable
from typing import Any, Literal, TypeVar

from jupyter_server.auth.decorator import allow_unauthenticated
from jupyter_server.auth.identity import IdentityProvider, User
from tornado import web
from traitlets import Bool

Scope = Literal["public", "inference", "admin"]
SCOPE_ATTR = "__impetus_scope__"
F = TypeVar("F", bound=Callable[..., Any])

_AUTH_HEADER = re.compile(r"\s*(?:bearer|token)\s+(\S+)\s*$", re.IGNORECASE)


def scope(name: Scope) -> Callable[[F], F]:
    """Tag a handler method with the scope a caller needs."""

    def mark(method: F) -> F:
        if name == "public":
            # tell jupyter_server too, or its `allow_unauthenticated_access=False` mode refuses it
            method = allow_unauthenticated(method)
        setattr(method, SCOPE_ATTR, name)
        return method

    return mark


def method_scope(method: Any) -> Scope | None:
    return getattr(method, SCOPE_ATTR, None)


def presented_key(headers: Any) -> str | None:
    """The API key a client sent: `Authorization: Bearer|token KEY`, or `api-key` / `x-api-key`."""
    m = _AUTH_HEADER.match(headers.get("Authorization", ""))
    if m:
        return m.group(1)
    for name in ("X-Api-Key", "Api-Key"):
        value = headers.get(name)
        if value:
            return str(value).strip()
    return None


class ServeIdentityProvider(IdentityProvider):
    """`impetus serve` has no Jupyter users: callers are API keys (checked before this runs)."""

    no_auth = Bool(False, help="everyone is the anonymous admin (loopback only)").tag(config=True)

    def get_user(self, handler: web.RequestHandler) -> User | None:
        if self.no_auth:
            return User(username="anonymous", name="anonymous", display_name="anonymous")
        return None

    def should_check_origin(self, handler: web.RequestHandler) -> bool:
        return True

    def is_token_authenticated(self, handler: web.RequestHandler) -> bool:
        return bool(getattr(handler, "_token_authenticated", False))

    @property
    def auth_enabled(self) -> bool:
        return not self.no_auth


def is_loopback(host: str) -> bool:
    """True when `host` (an address or a name) only resolves to loopback addresses."""
    host = host.strip("[]")
    if not host:  # all interfaces
        return False
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        pass
    try:
        infos = socket.getaddrinfo(host, None)
    except OSError:
        return False
    return bool(infos) and all(ipaddress.ip_address(str(i[4][0])).is_loopback for i in infos)
