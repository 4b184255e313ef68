"""Anthropic's Messages API: `/v1/messages` and `/v1/messages/count_tokens`.

A Messages request becomes the same engine request as a chat completion (through the chat path's
own conversion, `convert.chat_request`), so both protocols share the batch, the prompt cache,
constrained tool calls and the reasoning split; only the shapes differ. Errors, auth failures
included, come back in Anthropic's shape: `{"type": "error", "error": {"type", "message"}}`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError
from tornado.iostream import StreamClosedError

from impetus.api import convert, sse
from impetus.api.anthropic_schemas import (
    AnthropicError,
    CountTokensRequest,
    Message,
    MessageParam,
    MessagesRequest,
    MessageStreamEvent,
    MessageUsage,
    TextBlock,
    TextOut,
    ThinkingBlock,
    ThinkingConfig,
    ThinkingOut,
    TokenCount,
    ToolChoice,
    ToolParam,
    ToolResultBlock,
    ToolUseBlock,
    ToolUseOut,
)
from impetus.api.auth import scope
from impetus.api.base import ImpetusHandler
from impetus.api.errors import APIError
from impetus.api.openai_handlers import GenerationHandler
from impetus.api.openapi import GENERATION_ERRORS, operation
from impetus.api.schemas import ChatCompletionRequest
from impetus.api.streams import EventStream
from impetus.protocol import Delta, Done, EngineError, GenerateRequest, Start, ToolCall

# HTTP status -> Anthropic's error type (their documented table)
ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    405: "invalid_request_error",
    409: "invalid_request_error",
    413: "request_too_large",
    429: "rate_limit_error",
    503: "overloaded_error",
    504: "timeout_error",
}

STOP_REASONS = {"stop": "end_turn", "length": "max_tokens", "tool_calls": "tool_use"}


def error_body(err: APIError) -> dict[str, Any]:
    kind = ERROR_TYPES.get(
        err.status, "api_error" if err.status >= 500 else "invalid_request_error"
    )
    message = err.message
    if err.param and err.param not in message:
        message = f"{err.param}: {message}"
    return {"type": "error", "error": {"type": kind, "message": message}}


class AnthropicHandler(ImpetusHandler):
    """Anthropic's error shape for everything this handler answers, auth failures included."""

    def error_body(self, err: APIError) -> dict[str, Any]:
        return error_body(err)


# ---------------------------------------------------------------- requests


def _system_text(system: str | list[TextBlock] | None) -> str | None:
    if system is None:
        return None
    return system if isinstance(system, str) else "".join(b.text for b in system)


def _expect_role(role: str, expected: str, block: str, i: int, j: int) -> None:
    """A content block in a message of the wrong role: a 400 naming where it is."""
    if role != expected:
        raise APIError(
            400,
            f"{block} blocks belong in {expected} messages.",
            param=f"messages[{i}].content[{j}]",
        )


def _chat_messages(
    system: str | list[TextBlock] | None, messages: list[MessageParam]
) -> list[dict[str, Any]]:
    """Anthropic messages as OpenAI chat messages (what the engine's chat templates get).

    tool_result blocks become `tool` messages, tool_use blocks the assistant's `tool_calls`;
    thinking blocks of earlier turns stay out of the prompt, as reasoning models' own templates
    leave them out."""
    out: list[dict[str, Any]] = []
    text = _system_text(system)
    if text:
        out.append({"role": "system", "content": text})
    for i, m in enumerate(messages):
        if isinstance(m.content, str):
            out.append({"role": m.role, "content": m.content})
            continue
        texts: list[str] = []
        calls: list[dict[str, Any]] = []
        for j, block in enumerate(m.content):
            if isinstance(block, TextBlock):
                texts.append(block.text)
            elif isinstance(block, ToolResultBlock):
                _expect_role(m.role, "user", "tool_result", i, j)
                content = block.text()
                if block.is_error:
                    content = f"Error: {content}"
                out.append({"role": "tool", "tool_call_id": block.tool_use_id, "content": content})
            elif isinstance(block, ToolUseBlock):
                _expect_role(m.role, "assistant", "tool_use", i, j)
                calls.append(
                    {
                        "id": block.id,
                        "type": "function",
                        "function": {"name": block.name, "arguments": json.dumps(block.input)},
                    }
                )
            elif isinstance(block, ThinkingBlock):
                continue
            else:
                raise APIError(
                    400,
                    f"Only text, tool_use, tool_result and thinking blocks are supported; "
                    f"messages[{i}].content[{j}] is {block.type!r}.",
                    param=f"messages[{i}].content[{j}]",
                )
        if (
            texts
            or calls
            or m.role == "user"
            and not any(b.type == "tool_result" for b in m.content)
        ):
            msg: dict[str, Any] = {"role": m.role, "content": "".join(texts)}
            if calls:
                msg["tool_calls"] = calls
            out.append(msg)
    return out


def _openai_tools(tools: list[ToolParam] | None) -> list[dict[str, Any]] | None:
    if not tools:
        return None
    return [
        {
            "type": "function",
            "function": {
                "name": t.name,
                "description": t.description,
                "parameters": t.input_schema,
            },
        }
        for t in tools
    ]


def _openai_tool_choice(choice: ToolChoice | None) -> Any:
    if choice is None:
        return None
    if choice.type == "tool":
        return {"type": "function", "function": {"name": choice.name}}
    return {"auto": "auto", "any": "required", "none": "none"}[choice.type]


def _template_kwargs(thinking: ThinkingConfig | None) -> dict[str, Any]:
    # mlx-lm hands `enable_thinking` to templates (renamed for those that call it otherwise);
    # adaptive keeps the template's own default
    if thinking is None or thinking.type == "adaptive":
        return {}
    return {"enable_thinking": thinking.type == "enabled"}


def generate_request(req: MessagesRequest) -> GenerateRequest:
    body: dict[str, Any] = {
        "model": req.model,
        "messages": _chat_messages(req.system, req.messages),
        "max_tokens": req.max_tokens,
        "temperature": req.temperature,
        "top_p": req.top_p,
        "top_k": req.top_k,
        "stop": req.stop_sequences or None,
        "tools": _openai_tools(req.tools),
        "tool_choice": _openai_tool_choice(req.tool_choice),
        "chat_template_kwargs": _template_kwargs(req.thinking),
    }
    fmt = req.output_config.format if req.output_config else None
    if fmt is not None:
        body["response_format"] = {
            "type": "json_schema",
            "json_schema": {"name": "output", "schema": fmt.schema_},
        }
    greq = convert.chat_request(_chat_request(body))
    if req.thinking is not None and req.thinking.type == "enabled":
        greq.reasoning_budget = req.thinking.budget_tokens
    return greq


def _chat_request(body: dict[str, Any]) -> ChatCompletionRequest:
    try:
        return ChatCompletionRequest.model_validate(
            {k: v for k, v in body.items() if v is not None}
        )
    except ValidationError as e:
        raise APIError.from_validation(e) from None


# ---------------------------------------------------------------- responses


def usage(prompt_tokens: int, cached_tokens: int, output_tokens: int) -> MessageUsage:
    return MessageUsage(
        input_tokens=prompt_tokens - cached_tokens,
        output_tokens=output_tokens,
        cache_read_input_tokens=cached_tokens,
    )


def _tool_input(call: ToolCall) -> dict[str, Any]:
    try:
        value = json.loads(call.arguments)
    except json.JSONDecodeError:
        return {"arguments": call.arguments}
    return value if isinstance(value, dict) else {"value": value}


def message(acc: convert.Accumulator, rid: str, model: str, want_thinking: bool) -> Message:
    choice = acc.choices.get(0) or convert.ChoiceAcc()
    content: list[ThinkingOut | TextOut | ToolUseOut] = []
    if want_thinking and choice.reasoning:
        content.append(ThinkingOut(thinking="".join(choice.reasoning)))
    text = "".join(choice.text)
    if text or not choice.tool_calls:
        content.append(TextOut(text=text))
    for call in choice.tool_calls or []:
        content.append(ToolUseOut(id=call.id, name=call.name, input=_tool_input(call)))
    return Message(
        id=rid,
        model=model,
        content=content,
        stop_reason=STOP_REASONS.get(choice.finish_reason or "stop", "end_turn")
        if choice.stop_sequence is None
        else "stop_sequence",
        stop_sequence=choice.stop_sequence,
        usage=usage(acc.prompt_tokens, acc.cached_tokens, choice.completion_tokens),
    )


@dataclass
class MessageStream:
    """Anthropic's streaming events for one message: content blocks open and close as the
    engine's deltas switch between thinking, text and tool calls."""

    rid: str
    model: str
    want_thinking: bool
    index: int = -1
    open_kind: str | None = None
    events: list[tuple[str, dict[str, Any]]] = field(default_factory=list)

    def start(self, prompt_tokens: int, cached_tokens: int) -> None:
        msg: dict[str, Any] = {
            "id": self.rid,
            "type": "message",
            "role": "assistant",
            "model": self.model,
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": usage(prompt_tokens, cached_tokens, 0).model_dump(),
        }
        self._emit("message_start", {"message": msg})
        self._emit("ping", {})

    def _emit(self, kind: str, data: dict[str, Any]) -> None:
        self.events.append((kind, {"type": kind, **data}))

    def _block(self, kind: str, block: dict[str, Any]) -> None:
        self.close_block()
        self.index += 1
        self.open_kind = kind
        self._emit("content_block_start", {"index": self.index, "content_block": block})

    def close_block(self) -> None:
        if self.open_kind is None:
            return
        if self.open_kind == "thinking":
            # Anthropic's clients expect a signature before a thinking block closes
            self._delta({"type": "signature_delta", "signature": ""})
        self._emit("content_block_stop", {"index": self.index})
        self.open_kind = None

    def _delta(self, delta: dict[str, Any]) -> None:
        self._emit("content_block_delta", {"index": self.index, "delta": delta})

    def feed(self, text: str, reasoning: str = "") -> None:
        if reasoning and self.want_thinking:
            if self.open_kind != "thinking":
                self._block("thinking", {"type": "thinking", "thinking": "", "signature": ""})
            self._delta({"type": "thinking_delta", "thinking": reasoning})
        if text:
            if self.open_kind != "text":
                self._block("text", {"type": "text", "text": ""})
            self._delta({"type": "text_delta", "text": text})

    def finish(self, ev: Done) -> None:
        self.feed(ev.text)
        for call in ev.tool_calls or []:
            self._block(
                "tool_use", {"type": "tool_use", "id": call.id, "name": call.name, "input": {}}
            )
            self._delta({"type": "input_json_delta", "partial_json": json.dumps(_tool_input(call))})
        if self.index < 0:  # nothing generated: still one (empty) text block, as Anthropic does
            self._block("text", {"type": "text", "text": ""})
        self.close_block()
        reason = STOP_REASONS.get(ev.finish_reason or "stop", "end_turn")
        if ev.stop_sequence is not None:
            reason = "stop_sequence"
        self._emit(
            "message_delta",
            {
                "delta": {"stop_reason": reason, "stop_sequence": ev.stop_sequence},
                "usage": {"output_tokens": ev.usage.completion_tokens},
            },
        )
        self._emit("message_stop", {})

    def take(self) -> list[tuple[str, dict[str, Any]]]:
        out, self.events = self.events, []
        return out


# ---------------------------------------------------------------- handlers


class MessagesHandler(AnthropicHandler, GenerationHandler):
    @scope("inference")
    @operation(
        "Anthropic Messages (stream: true for SSE events)",
        tag="Anthropic",
        body=MessagesRequest,
        returns=Message,
        stream=MessageStreamEvent,
        stream_note="with stream: true, `event: <type>` + `data: <event JSON>` events",
        errors=GENERATION_ERRORS,
        error_model=AnthropicError,
        example={
            "model": "smollm2-135m",
            "max_tokens": 32,
            "system": "Be brief.",
            "messages": [{"role": "user", "content": "Say hello in three words."}],
        },
    )
    async def post(self) -> None:
        req = self.parse(MessagesRequest)
        greq = generate_request(req)
        want_thinking = req.thinking is None or req.thinking.shown
        rid = convert.new_id("msg").replace("-", "_")

        async def consume(events: EventStream) -> None:
            if req.stream:
                await self._stream_message(events, MessageStream(rid, greq.model, want_thinking))
            else:
                acc = convert.Accumulator()
                if await self.collect(events, acc):
                    self.write_json(message(acc, rid, greq.model, want_thinking))

        await self.generate([greq], consume)

    async def send_stream_error(self, err: APIError) -> None:
        await sse.send(self, error_body(err), event="error")
        await sse.finish(self)

    async def _stream_message(self, events: EventStream, out: MessageStream) -> None:
        pending = await self.started(events)
        if pending is None:
            return
        sse.start(self)
        self._headers_sent = True
        try:
            async for _, ev in self.stream_items(events, pending):
                await self._send(out, ev)
            if await self.end_of_stream(events):
                await sse.finish(self)
        except StreamClosedError:
            self.on_connection_close()

    async def _send(self, out: MessageStream, ev: Start | Delta | Done) -> None:
        if isinstance(ev, Start):
            out.start(ev.prompt_tokens, ev.cached_tokens)
        elif isinstance(ev, Delta):
            out.feed(ev.text, ev.reasoning)
        else:
            out.finish(ev)
        for kind, data in out.take():
            await sse.send(self, data, event=kind)


class CountTokensHandler(AnthropicHandler):
    @scope("inference")
    @operation(
        "Anthropic: the prompt's token count",
        tag="Anthropic",
        body=CountTokensRequest,
        returns=TokenCount,
        errors={404: "Unknown model"},
        error_model=AnthropicError,
    )
    async def post(self) -> None:
        req = self.parse(CountTokensRequest)
        body = {
            "model": req.model,
            "messages": _chat_messages(req.system, req.messages),
            "tools": _openai_tools(req.tools),
            "tool_choice": _openai_tool_choice(req.tool_choice),
            "chat_template_kwargs": _template_kwargs(req.thinking),
        }
        greq = convert.chat_request(_chat_request(body))
        service = self.service
        with service.track():
            await service.ensure_engine()
            try:
                tokens = await service.engine.tokenize(greq)
            except EngineError as e:
                raise APIError.from_engine(e) from e
        self.write_json(TokenCount(input_tokens=len(tokens)))
