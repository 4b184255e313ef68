"""What every panel shares: how it reaches the server without blocking the kernel."""

from __future__ import annotations

import asyncio
from typing import Any

from jupyter_bokeh import BokehModel

from impetus.client import AsyncImpetusClient, Endpoint, ImpetusClient, default_endpoint
from impetus.widgets import _loop

ClientLike = ImpetusClient | AsyncImpetusClient | Endpoint | str | None


def as_endpoint(client: ClientLike) -> Endpoint | None:
    """An explicit endpoint from what the user passed; None means "find it" (in the background)."""
    if client is None:
        return None
    if isinstance(client, Endpoint):
        return client
    if isinstance(client, str):
        return Endpoint(client)
    return client.endpoint


class Connection:
    """Lazily resolved AsyncImpetusClient on the widget loop.

    Resolving may start a private `impetus serve` (seconds): that runs in a worker thread so the
    widget loop keeps serving the other panels, and never on the kernel's thread.
    """

    def __init__(self, client: ClientLike = None, model: str | None = None) -> None:
        self._endpoint = as_endpoint(client)
        self._model = model
        self._resolving: asyncio.Future[Endpoint] | None = None

    @property
    def endpoint(self) -> Endpoint | None:
        return self._endpoint

    async def get(self) -> AsyncImpetusClient:
        if self._endpoint is None:
            if self._resolving is None:
                self._resolving = asyncio.ensure_future(
                    asyncio.to_thread(default_endpoint, self._model)
                )
            try:
                self._endpoint = await asyncio.shield(self._resolving)
            except BaseException:
                self._resolving = None  # try again next time (the error is shown by the caller)
                raise
        return _loop.async_client(self._endpoint)


_bokehjs_loaded_in: int | None = None  # the IPython execution count that last loaded BokehJS


def load_bokehjs() -> None:
    """Put BokehJS into the page (jupyter_bokeh's views need it; `output_notebook` does it).

    Inline, core only (~1.3 MB, no CDN: offline machines must work), once per executed cell so
    that a cell re-run after a page reload brings it back.
    """
    global _bokehjs_loaded_in
    try:
        from IPython import get_ipython
    except ImportError:
        return
    shell = get_ipython()
    if shell is None or _bokehjs_loaded_in == shell.execution_count:
        return
    from bokeh.io import output_notebook
    from bokeh.resources import Resources

    output_notebook(Resources(mode="inline", components=["bokeh"]), hide_banner=True)
    _bokehjs_loaded_in = shell.execution_count


class Charts(BokehModel):
    """jupyter_bokeh's widget that loads BokehJS first, and whose `close` may run twice
    (explicitly, then on GC)."""

    _closed = False

    def __init__(self, model: Any, **kwargs: Any) -> None:
        load_bokehjs()
        super().__init__(model, **kwargs)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        super().close()


def short_error(e: BaseException) -> str:
    text = str(e) or type(e).__name__
    return text if len(text) < 600 else text[:600] + "…"


def fmt_bytes(n: float | int | None) -> str:
    if n is None:
        return "?"
    value = float(n)
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if abs(value) < 1024 or unit == "TB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} TB"


def fmt_seconds(s: float | int | None) -> str:
    if s is None or s != s or s < 0:  # None, NaN
        return "–"
    s = float(s)
    if s < 60:
        return f"{s:.0f} s"
    if s < 3600:
        return f"{int(s // 60)} min {int(s % 60):02d} s"
    return f"{int(s // 3600)} h {int(s % 3600 // 60):02d} min"
