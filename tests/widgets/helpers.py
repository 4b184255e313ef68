"""Helpers of the widget tests."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any


class Recorder:
    """Every comm message a widget publishes (outside a kernel its comm drops them)."""

    def __init__(self, widget: Any) -> None:
        self.data: list[dict[str, Any]] = []
        comm = widget.comm

        def publish(
            msg_type: str, data: Any = None, metadata: Any = None, buffers: Any = None, **keys: Any
        ) -> None:
            if data is not None:
                self.data.append(data)

        comm.publish_msg = publish

    def custom(self, kind: str | None = None) -> list[dict[str, Any]]:
        out = [d["content"] for d in self.data if d.get("method") == "custom"]
        return [m for m in out if kind is None or m.get("type") == kind]

    def updates(self, key: str) -> list[Any]:
        return [
            d["state"][key]
            for d in self.data
            if d.get("method") == "update" and key in d.get("state", {})
        ]


def wait_for(predicate: Callable[[], Any], timeout: float = 30.0, poll: float = 0.05) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"condition not met within {timeout} s")
        time.sleep(poll)
