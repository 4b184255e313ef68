"""Streamed answers: chat deltas and pull progress, each as a blocking and an async iterator.

What to do with each event is written once (`_Chat`, `_Pull`); the sync and async classes only
differ in how they read lines and close the response. Closing a stream closes the connection,
which is how the api layer learns to cancel the generation in the engine.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx

from impetus.client.chat import ChatAccumulator, ChatResult
from impetus.client.errors import ImpetusError, ServerUnavailable
from impetus.client.sse import ServerSentEvent, aiter_events, iter_events
from impetus.models.types import PullProgress

PULL_FINAL: frozenset[str] = frozenset({"done", "error", "cancelled"})


def event_payload(ev: ServerSentEvent) -> dict[str, Any] | None:
    """JSON of one SSE event; None for the `[DONE]` sentinel; raises on error events."""
    if ev.is_done:
        return None
    payload = json.loads(ev.data)
    if ev.event == "error" or (
        isinstance(payload, dict) and isinstance(payload.get("error"), dict)
    ):
        raise ImpetusError.from_payload(payload)
    if not isinstance(payload, dict):
        raise ImpetusError(f"unexpected event data: {ev.data[:200]}")
    return payload


def _payloads(response: httpx.Response) -> Iterator[dict[str, Any]]:
    for ev in iter_events(response.iter_lines()):
        if (payload := event_payload(ev)) is None:
            return
        yield payload


async def _apayloads(response: httpx.Response) -> AsyncIterator[dict[str, Any]]:
    async for ev in aiter_events(response.aiter_lines()):
        if (payload := event_payload(ev)) is None:
            return
        yield payload


class _Chat:
    """A chat stream's state: the accumulated answer, and whether we closed it ourselves."""

    def __init__(self, response: httpx.Response) -> None:
        self._response = response
        self._acc = ChatAccumulator()
        self._closed = False
        self.result: ChatResult | None = None

    def _broken(self, e: Exception) -> None:
        # closing the response (Stop) ends the read with an error: that is not a failure
        if not self._closed:
            raise ServerUnavailable(f"stream broken: {e}") from e

    def _finish(self) -> None:
        self.result = self._acc.finish(cancelled=self._closed)

    def mark_cancelled(self) -> None:
        """Called when the reader is cancelled (the connection then closes)."""
        self._closed = True

    @property
    def step_tokens(self) -> list[dict[str, Any]]:
        """The logprobs entries of the tokens behind the last text delta (`logprobs=True`)."""
        return self._acc.step_tokens


class ChatStream(_Chat):
    """Iterate for text deltas; `.result` after the end; `close()` stops (the engine cancels)."""

    def __iter__(self) -> Iterator[str]:
        try:
            for payload in _payloads(self._response):
                if text := self._acc.add(payload):
                    yield text
        except (httpx.HTTPError, httpx.StreamError) as e:
            self._broken(e)
        finally:
            self._response.close()
            self._finish()

    def close(self) -> None:
        self._closed = True
        self._response.close()

    def __enter__(self) -> ChatStream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class AsyncChatStream(_Chat):
    """`async for` text deltas; `.result` after the end; `aclose()` stops (the engine cancels)."""

    async def __aiter__(self) -> AsyncIterator[str]:
        try:
            async for payload in _apayloads(self._response):
                if text := self._acc.add(payload):
                    yield text
        except (httpx.HTTPError, httpx.StreamError) as e:
            self._broken(e)
        finally:
            await self._response.aclose()
            self._finish()

    async def aclose(self) -> None:
        self._closed = True
        await self._response.aclose()


class _Pull:
    """Progress events of a model download, as `PullProgress` (the type the server sends)."""

    def __init__(self, response: httpx.Response) -> None:
        self._response = response
        self.last: PullProgress | None = None

    def _seen(self, payload: dict[str, Any]) -> PullProgress:
        """Read and record an event (`self.last`)."""
        self.last = PullProgress.model_validate(payload)
        return self.last


class PullStream(_Pull):
    def __iter__(self) -> Iterator[PullProgress]:
        try:
            for payload in _payloads(self._response):
                event = self._seen(payload)
                yield event
                if event.status in PULL_FINAL:
                    break
        finally:
            self._response.close()

    def close(self) -> None:
        self._response.close()


class AsyncPullStream(_Pull):
    async def __aiter__(self) -> AsyncIterator[PullProgress]:
        try:
            async for payload in _apayloads(self._response):
                event = self._seen(payload)
                yield event
                if event.status in PULL_FINAL:
                    break
        finally:
            await self._response.aclose()

    async def aclose(self) -> None:
        await self._response.aclose()
