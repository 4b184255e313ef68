"""`ModelPicker`: the model registry, downloads with live progress, load / unload / delete."""

from __future__ import annotations

import asyncio
import concurrent.futures
from html import escape
from typing import Any

import ipywidgets as w

from impetus.api.schemas import AdminStatus
from impetus.client import AsyncPullStream, ImpetusError
from impetus.models.types import HubModel, PullProgress, RegistryEntry
from impetus.widgets import _loop
from impetus.widgets._base import ClientLike, Connection, fmt_bytes, fmt_seconds, short_error

Entry = RegistryEntry | HubModel  # a model of the registry, or one found on the hub


def label(entry: Entry, loaded: set[str]) -> str:
    if isinstance(entry, HubModel):
        downloads = f" · {entry.downloads:,} downloads" if entry.downloads else ""
        return "  ·  ".join([entry.id, "hub" + downloads])
    parts = [entry.id]
    if entry.size_bytes:
        parts.append(fmt_bytes(entry.size_bytes))
    if entry.quantization:
        parts.append(entry.quantization)
    if entry.memory_bytes:
        parts.append(f"~{fmt_bytes(entry.memory_bytes)} to serve")
    if entry.id in loaded or entry.loaded:
        parts.append("● loaded")
    elif entry.downloaded:
        parts.append("downloaded")
    return "  ·  ".join(parts)


def details(entry: Entry) -> list[tuple[str, Any]]:
    """The rows of the detail table (rows without a value are left out when shown)."""
    if isinstance(entry, HubModel):
        return [
            ("source", "Hugging Face hub"),
            ("kind", entry.pipeline_tag),
            ("downloads", entry.downloads),
            ("likes", entry.likes),
            ("last modified", entry.last_modified),
        ]
    memory = None
    if entry.memory_bytes:
        memory = f"~{fmt_bytes(entry.memory_bytes)}"
        if entry.serving_dtype:
            memory += f" ({entry.serving_dtype})"
    return [
        ("source", entry.source),
        ("kind", entry.kind),
        ("description", entry.description),
        ("architecture", entry.architecture),
        ("parameters", fmt_count(entry.parameters)),
        ("path", entry.path),
        ("from", entry.source_path),
        ("size", fmt_bytes(entry.size_bytes) if entry.size_bytes else None),
        ("quantization", entry.quantization),
        ("memory to serve", memory),
        ("context", entry.context_length),
    ]


def fmt_count(n: int | None) -> str | None:
    if not n:
        return None
    for unit, scale in (("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if n >= scale:
            return f"{n / scale:.1f}{unit}"
    return str(n)


class ModelPicker(w.VBox):
    """`iw.ModelPicker()`: pick, download, load and unload models."""

    def __init__(self, client: ClientLike = None) -> None:
        self._conn = Connection(client)
        self.entries: list[Entry] = []
        self.status: AdminStatus | None = None
        self._pull_future: concurrent.futures.Future[PullProgress | None] | None = None
        self._pulling: str | None = None

        self.search = w.Text(
            placeholder="filter, or a Hugging Face repo / search term", layout=w.Layout(flex="1")
        )
        self.hub_button = w.Button(
            description="Search hub", icon="search", tooltip="Search the Hugging Face hub"
        )
        self.refresh_button = w.Button(
            icon="refresh", tooltip="Reload the list", layout=w.Layout(width="40px")
        )
        self.select = w.Select(options=[], rows=8, layout=w.Layout(width="100%"))
        self.detail = w.HTML()
        self.download_button = w.Button(
            description="Download", icon="download", button_style="primary"
        )
        self.cancel_button = w.Button(description="Cancel", icon="stop", disabled=True)
        self.load_button = w.Button(description="Load", icon="play", button_style="success")
        self.unload_button = w.Button(description="Unload", icon="eject")
        self.delete_button = w.Button(description="Delete", icon="trash", button_style="danger")
        self.progress = w.FloatProgress(
            value=0.0, min=0.0, max=1.0, layout=w.Layout(width="100%", visibility="hidden")
        )
        self.progress_label = w.HTML()
        self.loaded = w.HTML()
        self.memory = w.FloatProgress(
            value=0.0, min=0.0, max=1.0, description="memory", layout=w.Layout(width="60%")
        )
        self.error = w.HTML()

        self.search.observe(lambda _: self._render_options(), "value")
        self.search.on_submit(lambda _: self._submit(self._search_hub()))
        self.hub_button.on_click(lambda _: self._submit(self._search_hub()))
        self.refresh_button.on_click(lambda _: self.refresh(wait=False))
        self.select.observe(lambda _: self._render_detail(), "value")
        self.download_button.on_click(lambda _: self._selected_then(self.download))
        self.cancel_button.on_click(lambda _: self.cancel())
        self.load_button.on_click(lambda _: self._selected_then(self.load))
        self.unload_button.on_click(lambda _: self._selected_then(self.unload))
        self.delete_button.on_click(lambda _: self._selected_then(self.delete))

        super().__init__(
            [
                w.HBox([self.search, self.hub_button, self.refresh_button]),
                self.select,
                self.detail,
                w.HBox(
                    [
                        self.download_button,
                        self.cancel_button,
                        self.load_button,
                        self.unload_button,
                        self.delete_button,
                    ]
                ),
                self.progress,
                self.progress_label,
                w.HTML("<b>Loaded</b>"),
                self.loaded,
                self.memory,
                self.error,
            ]
        )
        self.refresh(wait=False)

    # ---------------------------------------------------------------- public API
    @property
    def selected(self) -> str | None:
        return self.select.value or None

    def refresh(self, wait: bool = True, timeout: float = 60.0) -> None:
        """Reload the registry and the engine status."""
        future = self._submit(self._refresh())
        if wait:
            future.result(timeout)

    def download(
        self, model_id: str, *, load: bool = False
    ) -> concurrent.futures.Future[PullProgress | None]:
        """Start downloading (and converting) `model_id`; the future gives the last progress event."""
        if self._pull_future is not None and not self._pull_future.done():
            raise RuntimeError(f"{self._pulling} is downloading; cancel() it first")
        self._pulling = model_id
        self._pull_future = _loop.submit(self._pull(model_id, load))
        return self._pull_future

    def cancel(self) -> None:
        """Cancel the running download (in the server, not only here)."""
        if self._pulling is not None:
            self._submit(self._cancel(self._pulling))

    def load(self, model_id: str, wait: bool = False, timeout: float = 600.0) -> None:
        self._action(f"loading {model_id}…", lambda c: c.load(model_id), wait, timeout)

    def unload(self, model_id: str, wait: bool = False, timeout: float = 60.0) -> None:
        self._action(f"unloading {model_id}…", lambda c: c.unload(model_id), wait, timeout)

    def delete(self, model_id: str, wait: bool = False, timeout: float = 60.0) -> None:
        self._action(f"deleting {model_id}…", lambda c: c.delete(model_id), wait, timeout)

    # ---------------------------------------------------------------- internals
    def _submit(self, coro: Any) -> concurrent.futures.Future[Any]:
        return _loop.submit(coro)

    def _selected_then(self, fn: Any) -> None:
        if not self.selected:
            self.error.value = _err("select a model first")
            return
        try:
            fn(self.selected)
        except RuntimeError as e:
            self.error.value = _err(str(e))

    def _action(self, what: str, call: Any, wait: bool, timeout: float) -> None:
        async def run() -> None:
            self.progress_label.value = escape(what)
            try:
                client = await self._conn.get()
                await call(client)
                self.progress_label.value = ""
                self.error.value = ""
            except Exception as e:
                self.progress_label.value = ""
                self.error.value = _err(short_error(e))
            await self._refresh()

        future = self._submit(run())
        if wait:
            future.result(timeout)

    async def _refresh(self) -> None:
        try:
            client = await self._conn.get()
            registry, status = await asyncio.gather(client.models(), client.status())
            entries: list[Entry] = list(registry)
        except Exception as e:
            self.error.value = _err(f"cannot list models: {short_error(e)}")
            return
        known = {e.id for e in entries}
        entries += [e for e in self.entries if isinstance(e, HubModel) and e.id not in known]
        self.entries = entries
        self.status = status
        self.error.value = ""
        self._render_options()
        self._render_loaded()

    async def _search_hub(self) -> None:
        query = self.search.value.strip()
        if not query:
            return
        self.progress_label.value = f"searching the hub for {escape(query)}…"
        try:
            client = await self._conn.get()
            found = await client.search_models(query)
        except Exception as e:
            self.progress_label.value = ""
            self.error.value = _err(f"hub search failed: {short_error(e)}")
            return
        known = {e.id for e in self.entries}
        self.entries += [e for e in found if e.id not in known]
        self.progress_label.value = f"{len(found)} found on the hub"
        self._render_options()

    async def _pull(self, model_id: str, load: bool) -> PullProgress | None:
        self._set_pulling(True)
        self.progress.value = 0.0
        self.progress.bar_style = ""
        self.progress_label.value = f"starting download of {escape(model_id)}…"
        last: PullProgress | None = None
        stream: AsyncPullStream | None = None
        try:
            client = await self._conn.get()
            stream = await client.pull(model_id, load=load)
            async for event in stream:
                last = event
                self._show_progress(model_id, event)
        except asyncio.CancelledError:
            last = PullProgress(id=model_id, status="cancelled", message="cancelled")
            self._show_progress(model_id, last)
        except Exception as e:
            last = PullProgress(id=model_id, status="error", message=short_error(e))
            self._show_progress(model_id, last)
        finally:
            self._set_pulling(False)
            self._pulling = None
        await self._refresh()
        return last

    async def _cancel(self, model_id: str) -> None:
        try:
            client = await self._conn.get()
            await client.cancel_pull(model_id)
        except ImpetusError as e:
            self.error.value = _err(f"cancel failed: {short_error(e)}")

    def _set_pulling(self, on: bool) -> None:
        self.download_button.disabled = on
        self.cancel_button.disabled = not on
        self.progress.layout.visibility = "visible" if on or self.progress.value else "hidden"

    def _show_progress(self, model_id: str, ev: PullProgress) -> None:
        status = ev.status
        done, total = ev.bytes_done, ev.bytes_total or 0
        if total:
            self.progress.value = min(done / total, 1.0)
        self.progress.layout.visibility = "visible"
        name = escape(model_id)
        if status == "downloading":
            text = f"{name}: {fmt_bytes(done)} / {fmt_bytes(total) if total else '?'}"
            if ev.speed:
                text += f" · {fmt_bytes(ev.speed)}/s · ETA {fmt_seconds(ev.eta)}"
        elif status == "converting":
            text = f"{name}: converting… {escape(ev.message)}"
        elif status == "done":
            self.progress.value = 1.0
            self.progress.bar_style = "success"
            text = f"{name}: done {escape(ev.message)}"
        elif status == "cancelled":
            self.progress.bar_style = "warning"
            text = f"{name}: cancelled"
        elif status == "error":
            self.progress.bar_style = "danger"
            text = f"{name}: failed"
            self.error.value = _err(ev.message or "download failed")
        else:
            text = f"{name}: {escape(str(status))}"
        self.progress_label.value = text

    def _loaded_ids(self) -> set[str]:
        return {m.id for m in self.status.models} if self.status else set()

    def _render_options(self) -> None:
        query = self.search.value.strip().lower()
        loaded = self._loaded_ids()
        options = [
            (label(e, loaded), e.id)
            for e in self.entries
            if not query
            or query in e.id.lower()
            or (isinstance(e, RegistryEntry) and query in e.description.lower())
        ]
        current = self.select.value
        self.select.options = options
        if current in [v for _, v in options]:
            self.select.value = current
        self._render_detail()

    def _render_detail(self) -> None:
        entry = next((e for e in self.entries if e.id == self.select.value), None)
        if entry is None:
            self.detail.value = ""
            for button in (self.load_button, self.unload_button, self.delete_button):
                button.disabled = True
            return
        rows = details(entry)
        local = entry if isinstance(entry, RegistryEntry) else None
        loaded = entry.id in self._loaded_ids() or (local is not None and local.loaded)
        self.load_button.disabled = loaded
        self.unload_button.disabled = not loaded
        self.delete_button.disabled = not (local is not None and local.downloaded)
        self.detail.value = (
            "<table style='font-size:0.9em'>"
            + "".join(
                f"<tr><td style='color:#777;padding-right:1em'>{k}</td><td>{escape(str(v))}</td></tr>"
                for k, v in rows
                if v not in (None, "")
            )
            + "</table>"
        )

    def _render_loaded(self) -> None:
        models = self.status.models if self.status else []
        budget = self.status.memory_budget if self.status else 0
        used = sum(m.memory_bytes for m in models)
        self.loaded.value = (
            "<br>".join(
                f"{escape(m.id)} · {escape(m.dtype)} · {fmt_bytes(m.memory_bytes)}"
                + (f" · {m.active_requests} active" if m.active_requests else "")
                for m in models
            )
            or "<i>no model loaded</i>"
        )
        self.memory.value = min(used / budget, 1.0) if budget else 0.0
        self.memory.description = "memory"
        self.memory.tooltip = f"{fmt_bytes(used)} of {fmt_bytes(budget)} budget"
        self.loaded.value += f"<br><span style='color:#777'>{fmt_bytes(used)} of {fmt_bytes(budget)} budget used by weights"
        mlx = self.status.memory_used if self.status else 0
        if mlx:
            self.loaded.value += f" · MLX in use {fmt_bytes(mlx)}"
        self.loaded.value += "</span>"


def _err(text: str) -> str:
    return f'<div style="color:#b00020;background:#fde7ea;padding:4px 8px;border-radius:4px">{escape(text)}</div>'
