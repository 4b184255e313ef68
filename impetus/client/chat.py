"""Chat requests and what a streamed answer amounted to (text, usage, client-side timings)."""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel

# Below this (seconds between the first and the last text chunk) a decode speed is not measurable.
MIN_DECODE_SPAN = 0.02


class ChatResult(BaseModel):
    """What one streamed answer amounted to; timings measured here, at the client."""

    text: str = ""
    model: str | None = None
    id: str | None = None
    finish_reason: str | None = None  # "stop" | "length" | ... ; "cancelled" when closed here
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    cached_tokens: int | None = None
    usage: dict[str, Any] | None = None
    ttft: float | None = None  # seconds from sending the request to the first text
    elapsed: float = 0.0  # seconds from sending the request to the end
    tokens_per_second: float | None = None  # decode speed: the engine's if it reports it, else ours
    engine_timings: dict[str, Any] | None = None  # the server's own timings, where it sends them
    # OpenAI logprobs entries ({"token", "logprob", "top_logprobs"}), when they were asked for
    logprobs: list[dict[str, Any]] | None = None

    def summary(self) -> str:
        parts = []
        if self.tokens_per_second is not None:
            parts.append(f"{self.tokens_per_second:.1f} tok/s")
        if self.ttft is not None:
            parts.append(f"TTFT {self.ttft * 1000:.0f} ms")
        if self.completion_tokens is not None:
            parts.append(f"{self.completion_tokens} tokens")
        if self.cached_tokens is not None and self.prompt_tokens:
            parts.append(f"cached {self.cached_tokens}/{self.prompt_tokens} prompt tokens")
        if self.finish_reason:
            parts.append(self.finish_reason)
        return " · ".join(parts)


class ChatAccumulator:
    """Turns chat.completion.chunk payloads into deltas and a ChatResult."""

    def __init__(self) -> None:
        self.t0 = time.perf_counter()
        self.t_first: float | None = None
        self.t_last: float | None = None
        self.parts: list[str] = []
        self.tokens: list[dict[str, Any]] = []  # logprobs entries of the whole answer
        # ... since the last text delta: tokens held back as partial characters come with the
        # text that completes them
        self.step_tokens: list[dict[str, Any]] = []
        self._unsent: list[dict[str, Any]] = []
        self.result = ChatResult()

    def add(self, chunk: Mapping[str, Any]) -> str:
        now = time.perf_counter()
        self.result.id = chunk.get("id") or self.result.id
        self.result.model = chunk.get("model") or self.result.model
        text = ""
        step: list[dict[str, Any]] = []
        for choice in chunk.get("choices") or []:
            if choice.get("index", 0) != 0:
                continue
            delta = choice.get("delta") or {}
            text += delta.get("content") or ""
            step += (choice.get("logprobs") or {}).get("content") or []
            if choice.get("finish_reason"):
                self.result.finish_reason = choice["finish_reason"]
        self.tokens += step
        self._unsent += step
        if text:
            self.step_tokens, self._unsent = self._unsent, []
            if self.t_first is None:
                self.t_first = now
            self.t_last = now
            self.parts.append(text)
        # llama.cpp-style engine timings, on the last chunk or inside usage, where a server sends them
        timings = chunk.get("timings") or (chunk.get("usage") or {}).get("timings")
        if isinstance(timings, dict):
            self.result.engine_timings = dict(timings)
        usage = chunk.get("usage")
        if usage:
            self.result.usage = dict(usage)
            self.result.prompt_tokens = usage.get("prompt_tokens")
            self.result.completion_tokens = usage.get("completion_tokens")
            details = usage.get("prompt_tokens_details") or {}
            self.result.cached_tokens = details.get("cached_tokens")
        return text

    def finish(self, cancelled: bool = False) -> ChatResult:
        r = self.result
        r.text = "".join(self.parts)
        r.logprobs = self.tokens or None
        r.elapsed = time.perf_counter() - self.t0
        if cancelled and r.finish_reason is None:
            r.finish_reason = "cancelled"
        if self.t_first is not None:
            r.ttft = self.t_first - self.t0
        engine_tps = (r.engine_timings or {}).get("decode_tps")
        if isinstance(engine_tps, int | float) and engine_tps > 0:
            r.tokens_per_second = float(engine_tps)
        elif r.completion_tokens and r.completion_tokens > 1 and self.t_first is not None:
            # decode speed seen here: the tokens after the first over the time after the first.
            # Tokens that arrive in one burst (a server flushing several engine steps at once)
            # give no measurable span: no number then, rather than an absurd one.
            span = (self.t_last or self.t_first) - self.t_first
            if span >= MIN_DECODE_SPAN:
                r.tokens_per_second = (r.completion_tokens - 1) / span
        return r


# The header that names a conversation to a proxy in front of several replicas, which then keeps
# all its turns on the replica whose prompt cache holds it (deploy/nginx, docs/scale.md).
SESSION_HEADER = "X-Session-Id"


def session_headers(session: str | None) -> dict[str, str] | None:
    return {SESSION_HEADER: session} if session else None


def chat_body(
    messages: list[dict[str, Any]],
    model: str,
    *,
    stream: bool,
    temperature: float | None = None,
    top_p: float | None = None,
    max_tokens: int | None = None,
    **extra: Any,
) -> dict[str, Any]:
    body: dict[str, Any] = {"model": model, "messages": messages, "stream": stream}
    if stream:
        body["stream_options"] = {"include_usage": True}
    for key, value in (("temperature", temperature), ("top_p", top_p), ("max_tokens", max_tokens)):
        if value is not None:
            body[key] = value
    body.update(extra)
    return body
