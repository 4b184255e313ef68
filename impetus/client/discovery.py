"""Where the api lives (`Endpoint`) and how a process finds it.

In order:
1. an explicit ``base_url`` (and ``api_key``);
2. ``IMPETUS_URL`` / ``IMPETUS_API_KEY`` in the environment;
3. the Jupyter server that started this kernel (``JPY_PARENT_PID`` matched against
   ``jupyter_server.serverapp.list_running_servers()``), if it hosts the impetus extension:
   base ``{url}impetus/``, its token as a Bearer key;
4. otherwise a private ``impetus serve`` on a free loopback port, started once per process and
   stopped at exit (papermill in CI, plain scripts).
"""

from __future__ import annotations

import ipaddress
import os
import secrets
import socket
import threading
from dataclasses import dataclass, field
from typing import Literal
from urllib.parse import urlsplit

import httpx

from impetus.client.errors import ServerUnavailable
from impetus.client.server import DEFAULT_MODEL, PrivateServer


@dataclass
class Endpoint:
    """Where the api lives and how to authenticate. `base_url` ends with a slash."""

    base_url: str
    api_key: str | None = None
    source: Literal["explicit", "env", "jupyter", "private"] = "explicit"
    verify: bool = True
    server: PrivateServer | None = None
    # Jupyter without a token checks XSRF on POST even with a Bearer header; tornado's check is
    # a double-submit compare of cookie and header, so one random value sent as both passes it.
    xsrf: str = field(default_factory=lambda: secrets.token_hex(16))

    def __post_init__(self) -> None:
        if not self.base_url.endswith("/"):
            self.base_url += "/"

    def url(self, path: str) -> str:
        return self.base_url + path.lstrip("/")

    @property
    def openai_base_url(self) -> str:
        return self.url("v1")

    def headers(self) -> dict[str, str]:
        headers = {"X-XSRFToken": self.xsrf, "Cookie": f"_xsrf={self.xsrf}"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        return headers

    @property
    def is_local(self) -> bool:
        """True when the server runs on this machine (its engine pid is then one of ours to see)."""
        host = urlsplit(self.base_url).hostname or ""
        if host in ("localhost", socket.gethostname()):
            return True
        try:
            return ipaddress.ip_address(host).is_loopback
        except ValueError:
            return False


def find_endpoint(model: str | None = None, *, start: bool = True) -> Endpoint:
    """Resolve where the api is (see the module docstring); start a private server if needed."""
    url = os.environ.get("IMPETUS_URL")
    if url:
        return Endpoint(url, os.environ.get("IMPETUS_API_KEY") or None, source="env")
    jupyter = _jupyter_endpoint()
    if jupyter is not None:
        return jupyter
    if not start:
        raise ServerUnavailable("no impetus server found (IMPETUS_URL unset, no Jupyter server)")
    server = PrivateServer(model or os.environ.get("IMPETUS_MODEL") or DEFAULT_MODEL)
    server.start()
    return Endpoint(server.base_url, None, source="private", server=server)


_default_lock = threading.Lock()
_default: Endpoint | None = None


def default_endpoint(model: str | None = None) -> Endpoint:
    """The process-wide endpoint every widget shares (one private server per kernel at most)."""
    global _default
    with _default_lock:
        if _default is None or (_default.server is not None and not _default.server.running):
            _default = find_endpoint(model)
        return _default


def _jupyter_endpoint() -> Endpoint | None:
    """The Jupyter server that launched this kernel, if it serves impetus."""
    parent = os.environ.get("JPY_PARENT_PID")
    if not parent:
        return None
    try:
        from jupyter_server.serverapp import list_running_servers
    except ImportError:
        return None
    for info in list_running_servers():
        if str(info.get("pid")) != parent or info.get("sock"):
            continue
        host = str(info.get("hostname") or "localhost")
        if host in ("", "0.0.0.0", "::", "*"):  # a wildcard bind: this machine answers on loopback
            host = "127.0.0.1"
        if ":" in host:
            host = f"[{host}]"
        scheme = "https" if info.get("secure") else "http"
        base_url = f"{scheme}://{host}:{info['port']}{info.get('base_url') or '/'}impetus/"
        endpoint = Endpoint(
            base_url,
            info.get("token") or None,
            source="jupyter",
            # the runtime file vouches for this server; a self-signed certificate is expected
            verify=not info.get("secure"),
        )
        if _serves_impetus(endpoint):
            return endpoint
    return None


def _serves_impetus(endpoint: Endpoint) -> bool:
    try:
        r = httpx.get(
            endpoint.url("health"), headers=endpoint.headers(), timeout=5.0, verify=endpoint.verify
        )
    except httpx.HTTPError:
        return False
    return r.status_code == 200
