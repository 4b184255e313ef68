"""Model management over HTTP: list, search, pull (progress as SSE), load, unload, delete.

Thin handlers over `impetus.models` (the registry and hub downloads) and the engine.
"""

from __future__ import annotations

import asyncio
import importlib
import logging
from typing import Any

from impetus.config import Settings

log = logging.getLogger("impetus.api")


async def registry_entries(settings: Settings) -> list[dict[str, Any]]:
    """The registry's entries as dicts (it scans folders: run it off the event loop)."""
    try:
        registry = importlib.import_module("impetus.models.registry")
    except ImportError:  # the registry module is not part of this build yet
        return []
    entries = await asyncio.to_thread(registry.list_entries, settings)
    return [e.model_dump(mode="json") if hasattr(e, "model_dump") else dict(e) for e in entries]


ROUTES: list[tuple[str, Any]] = []
