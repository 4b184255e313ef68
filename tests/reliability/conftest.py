"""Fixtures of the reliability tests: real `impetus serve` processes (tests/api's helpers)."""

from __future__ import annotations

from tests.api.conftest import (  # noqa: F401 - fixtures used by this folder's tests
    ADMIN_KEY,
    Server,
    long_chat,
    model,
    server,
    server_factory,
    slow_model_dir,
    start_server,
    stop_module_servers,
    tool_model_dir,
)
