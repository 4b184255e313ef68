"""The event loop the widgets do their I/O on, in a daemon thread of its own.

Not the kernel's loop: a cell that blocks (``time.sleep``, a long computation, ``chat.ask``) must
not stop a stream or the dashboard, and cancelling a task here closes its HTTP connection at once,
which a thread blocked in ``recv`` could not do. Widget updates sent from this thread reach the
front end on ipykernel >= 7.1.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar

from impetus.client import AsyncImpetusClient, Endpoint, default_endpoint

T = TypeVar("T")

_lock = threading.Lock()
_loop: asyncio.AbstractEventLoop | None = None
_clients: dict[int, AsyncImpetusClient] = {}


def loop() -> asyncio.AbstractEventLoop:
    global _loop
    with _lock:
        if _loop is None or _loop.is_closed():
            new = asyncio.new_event_loop()
            threading.Thread(target=new.run_forever, name="impetus-widgets", daemon=True).start()
            _loop = new
        return _loop


def submit(coro: Coroutine[Any, Any, T]) -> concurrent.futures.Future[T]:
    """Run `coro` on the widget loop; the returned future can be waited on or cancelled."""
    return asyncio.run_coroutine_threadsafe(coro, loop())


def call_soon(fn: Any, *args: Any) -> None:
    loop().call_soon_threadsafe(fn, *args)


def async_client(endpoint: Endpoint | None = None) -> AsyncImpetusClient:
    """One AsyncImpetusClient per endpoint, living on the widget loop (httpx pools are per loop)."""
    endpoint = endpoint or default_endpoint()
    with _lock:
        client = _clients.get(id(endpoint))
        if client is None:
            client = _clients[id(endpoint)] = AsyncImpetusClient(endpoint=endpoint)
        return client
