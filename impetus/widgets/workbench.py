"""`Workbench`: the model picker, the chat and the dashboard in tabs, sharing one server."""

from __future__ import annotations

from typing import Any

import ipywidgets as w

from impetus.widgets._base import ClientLike, as_endpoint
from impetus.widgets.chat import Chat
from impetus.widgets.dashboard import Dashboard
from impetus.widgets.picker import ModelPicker


class Workbench(w.Tab):
    """`iw.Workbench()`: the one-line start. Tabs: Chat, Models, Dashboard."""

    def __init__(
        self, model: str | None = None, *, client: ClientLike = None, **chat_kwargs: Any
    ) -> None:
        endpoint = as_endpoint(client)
        self.chat = Chat(model=model, client=endpoint, **chat_kwargs)
        self.picker = ModelPicker(client=endpoint)
        self.dashboard = Dashboard(client=endpoint)
        super().__init__(children=[self.chat, self.picker, self.dashboard])
        for i, title in enumerate(("Chat", "Models", "Dashboard")):
            self.set_title(i, title)

    def close(self) -> None:
        for child in (self.chat, self.picker, self.dashboard):
            child.close()
        super().close()
