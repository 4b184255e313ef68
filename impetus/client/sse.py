"""Server-sent events, read line by line: the one SSE parser of impetus' Python clients (this
package's streams and the benchmark's timed requests).

Follows https://html.spec.whatwg.org/#event-stream-interpretation: `data:` lines of one event are
joined with newlines, `event:` names it, a blank line ends it, `:` lines are comments (mlx_lm's
`: keepalive`), other fields (`id:`, `retry:`) are not used by any OpenAI-style server and are
skipped. An event not ended by a blank line when the stream ends is dropped, as the spec says.
"""

from __future__ import annotations

from collections.abc import AsyncIterable, AsyncIterator, Iterable, Iterator
from typing import NamedTuple

DONE = "[DONE]"  # the data of OpenAI's last event


class ServerSentEvent(NamedTuple):
    event: str  # "message" unless the server named it
    data: str

    @property
    def is_done(self) -> bool:
        return self.data.strip() == DONE


class SSEDecoder:
    """Lines in, events out."""

    def __init__(self) -> None:
        self.event = ""
        self.data: list[str] = []

    def feed(self, line: str) -> ServerSentEvent | None:
        """One line in; an event out when a blank line ends one."""
        line = line.rstrip("\r\n")
        if not line:
            if not self.data:
                self.event = ""
                return None
            out = ServerSentEvent(self.event or "message", "\n".join(self.data))
            self.event, self.data = "", []
            return out
        if line.startswith(":"):  # comment / keep-alive
            return None
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "data":
            self.data.append(value)
        elif name == "event":
            self.event = value
        return None


def iter_events(lines: Iterable[str]) -> Iterator[ServerSentEvent]:
    decoder = SSEDecoder()
    for line in lines:
        if (ev := decoder.feed(line)) is not None:
            yield ev


async def aiter_events(lines: AsyncIterable[str]) -> AsyncIterator[ServerSentEvent]:
    decoder = SSEDecoder()
    async for line in lines:
        if (ev := decoder.feed(line)) is not None:
            yield ev
