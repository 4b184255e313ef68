"""One streaming chat completion against any OpenAI-compatible endpoint, timed chunk by chunk.

Works with impetus, mlx_lm.server, llama.cpp, vLLM and Ollama: events are read by impetus' one
SSE parser (`impetus.client.sse`; comment lines such as mlx_lm's `: keepalive` are skipped),
usage is read from whichever chunk carries it, error bodies in OpenAI's shape, mlx_lm's
`{"error": "..."}` and FastAPI's `{"detail": ...}` all give a reason.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import Any

import httpx

from impetus.bench.schema import RequestResult
from impetus.bench.tokens import Tokenizer, count_tokens
from impetus.client.sse import aiter_events


@dataclass
class Endpoint:
    """An OpenAI-compatible server. `base_url` may or may not end with /v1."""

    base_url: str
    model: str
    api_key: str | None = None
    label: str = ""
    extra_headers: dict[str, str] = field(default_factory=dict)  # e.g. Jupyter's XSRF pair

    def __post_init__(self) -> None:
        url = self.base_url.rstrip("/")
        self.base_url = url if url.endswith("/v1") else url + "/v1"
        if not self.label:
            self.label = httpx.URL(self.base_url).netloc.decode() or self.base_url

    @property
    def headers(self) -> dict[str, str]:
        headers = dict(self.extra_headers)
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        return headers

    @property
    def root(self) -> str:
        """The server root (impetus' admin and ops routes live beside v1/)."""
        return self.base_url[: -len("/v1")]


@dataclass
class GenerationOptions:
    """What every request of a run asks for, so that runs are comparable."""

    max_tokens: int
    temperature: float = 0.0
    ignore_eos: bool = True  # extra body param; vLLM, llama.cpp and impetus honour it
    include_usage: bool = True
    extra_body: dict[str, Any] = field(default_factory=dict)

    def body(self, model: str, messages: list[dict[str, Any]]) -> dict[str, Any]:
        body: dict[str, Any] = {
            "model": model,
            "messages": messages,
            "max_tokens": self.max_tokens,
            "temperature": self.temperature,
            "stream": True,
        }
        if self.include_usage:
            body["stream_options"] = {"include_usage": True}
        if self.ignore_eos:
            body["ignore_eos"] = True
        body.update(self.extra_body)
        return body


def _reason(data: Any, fallback: str) -> str:
    """The message of an error body: OpenAI's {"error": {"message"}}, mlx_lm's {"error": "..."},
    FastAPI's {"detail": ...}; else the raw text."""
    message: Any = fallback
    if isinstance(data, dict):
        err = data.get("error", data.get("detail", data.get("message")))
        if isinstance(err, dict):
            message = err.get("message") or json.dumps(err)
        elif err is not None:
            message = err if isinstance(err, str) else json.dumps(err)
    return " ".join(str(message).split())[:300]


def error_message(status: int, content: bytes) -> str:
    """A one-line reason from an error response, whatever shape the server uses."""
    text = content.decode("utf-8", "replace").strip()
    try:
        data = json.loads(text)
    except ValueError:
        data = None
    message = _reason(data, text)
    return f"HTTP {status}: {message}" if message else f"HTTP {status}"


def exception_message(exc: BaseException) -> str:
    detail = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {detail}" if detail else type(exc).__name__


def _delta_text(choice: dict[str, Any]) -> str:
    """Generated text of a chunk: content, reasoning (vLLM / Ollama spellings) and tool calls."""
    delta = choice.get("delta") or {}
    parts = [delta.get("content"), delta.get("reasoning_content"), delta.get("reasoning")]
    text = "".join(p for p in parts if isinstance(p, str))
    for call in delta.get("tool_calls") or []:
        fn = call.get("function") or {}
        text += (fn.get("name") or "") + (fn.get("arguments") or "")
    return text


async def stream_chat(
    client: httpx.AsyncClient,
    endpoint: Endpoint,
    messages: list[dict[str, Any]],
    options: GenerationOptions,
    *,
    index: int = 0,
    tokenizer: Tokenizer | None = None,
    prompt_tokens: int | None = None,
    headers: dict[str, str] | None = None,
) -> tuple[RequestResult, str]:
    """Send one streaming request; return its timings and the generated text.

    `sent` is an absolute `time.perf_counter()` value; the load runner makes it relative.
    `prompt_tokens` is the caller's own count, used when the endpoint reports no usage.
    `headers`: this request's own, beside the endpoint's (a conversation's session id).
    """
    body = options.body(endpoint.model, messages)
    request_headers = {**endpoint.headers, **(headers or {})}
    result = RequestResult(index=index, success=False, prompt_tokens=prompt_tokens)
    text_parts: list[str] = []
    usage: dict[str, Any] | None = None
    first = last_text = last_data = 0.0
    done = False
    events = 0
    content_type = ""
    start = time.perf_counter()
    result.sent = start
    try:
        async with client.stream(
            "POST", endpoint.base_url + "/chat/completions", json=body, headers=request_headers
        ) as response:
            result.status_code = response.status_code
            content_type = response.headers.get("content-type", "")
            if response.status_code != 200:
                result.error = error_message(response.status_code, await response.aread())
                return _finish(result, start), ""
            async for event in aiter_events(response.aiter_lines()):
                if event.is_done:
                    done = True
                    break
                now = time.perf_counter()
                try:
                    chunk = json.loads(event.data)
                except ValueError:
                    result.error = f"bad SSE data: {event.data[:120]}"
                    return _finish(result, start), "".join(text_parts)
                last_data = now
                events += 1
                if event.event == "error" or chunk.get("error"):
                    result.error = "error in stream: " + _reason(chunk, event.data)
                    return _finish(result, start), "".join(text_parts)
                if chunk.get("usage"):
                    usage = chunk["usage"]
                for choice in chunk.get("choices") or []:
                    piece = _delta_text(choice)
                    if piece:
                        if not first:
                            first = now
                        else:
                            result.itl.append(now - last_text)
                        last_text = now
                        result.chunks += 1
                        text_parts.append(piece)
                    if choice.get("finish_reason"):
                        result.finish_reason = choice["finish_reason"]
    except (httpx.HTTPError, OSError) as exc:
        result.error = exception_message(exc)
        return _finish(result, start), "".join(text_parts)

    text = "".join(text_parts)
    if not events:
        result.error = f"no SSE events in the response (content-type {content_type or 'none'})"
    elif not done and result.finish_reason is None:
        result.error = "stream ended before the response was complete"
    elif not first:
        result.error = f"no output (finish_reason={result.finish_reason})"
    if result.error:
        return _finish(result, start), text

    result.success = True
    result.ttft = first - start
    result.e2e = last_data - start
    if usage:
        result.prompt_tokens = usage.get("prompt_tokens", prompt_tokens)
        details = usage.get("prompt_tokens_details") or {}
        result.cached_tokens = details.get("cached_tokens")
        if usage.get("completion_tokens") is not None:
            result.output_tokens = int(usage["completion_tokens"])
            result.tokens_source = "usage"
    if result.output_tokens is None and tokenizer is not None:
        result.output_tokens = count_tokens(tokenizer, text)
        result.tokens_source = "tokenizer"
    return _finish(result, start), text


def _finish(result: RequestResult, start: float) -> RequestResult:
    result.elapsed = time.perf_counter() - start
    return result
