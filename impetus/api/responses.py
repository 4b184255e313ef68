"""OpenAI's Responses API: `POST /v1/responses`, `GET` and `DELETE /v1/responses/{id}`.

A response request becomes the same engine request as a chat completion (through the chat path's
own conversion), so both share the batch, the prompt cache, constrained output and the reasoning
split. `previous_response_id` continues a stored conversation: the store keeps each response's
whole conversation as chat messages, so the continued prompt starts with the previous prompt and
answer and the engine's prompt cache serves that prefix. The store is bounded (oldest dropped
first) and per server; a response is visible only to the credential that created it.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError
from tornado.iostream import StreamClosedError

from impetus.api import convert, sse
from impetus.api.auth import scope
from impetus.api.errors import APIError
from impetus.api.openai_handlers import GenerationHandler
from impetus.api.openapi import GENERATION_ERRORS, operation
from impetus.api.responses_schemas import (
    DeletedResponse,
    FunctionCallItem,
    FunctionCallOutputItem,
    MessageItem,
    NamedFunctionChoice,
    ResponseObject,
    ResponseRequest,
    ResponseStreamEvent,
)
from impetus.api.schemas import ChatCompletionRequest
from impetus.api.streams import EventStream
from impetus.protocol import Delta, Done, GenerateRequest, Start

STORE_MAX = 512  # responses kept for previous_response_id / GET; the oldest go first


@dataclass
class Stored:
    owner: str
    response: dict[str, Any]
    messages: list[dict[str, Any]]  # the whole conversation, this response's answer included


class ResponseStore:
    """Stored responses, bounded in number; one per service (server)."""

    def __init__(self, max_items: int = STORE_MAX) -> None:
        self.max_items = max_items
        self._items: OrderedDict[str, Stored] = OrderedDict()

    def put(self, rid: str, stored: Stored) -> None:
        self._items[rid] = stored
        self._items.move_to_end(rid)
        while len(self._items) > self.max_items:
            self._items.popitem(last=False)

    def get(self, rid: str, owner: str) -> Stored:
        stored = self._items.get(rid)
        if stored is None or stored.owner != owner:
            raise APIError(
                404,
                f"No response with id '{rid}' is stored (store: false, deleted, or dropped "
                f"from the store of the last {self.max_items}).",
                param="response_id",
                code="response_not_found",
            )
        return stored

    def delete(self, rid: str, owner: str) -> None:
        self.get(rid, owner)
        del self._items[rid]

    def __len__(self) -> int:
        return len(self._items)


def store_of(service: Any) -> ResponseStore:
    store: ResponseStore | None = getattr(service, "responses", None)
    if store is None:
        store = service.responses = ResponseStore()
    return store


# ---------------------------------------------------------------- requests


def input_messages(req: ResponseRequest) -> list[dict[str, Any]]:
    """The request's input items as chat messages. Consecutive function_call items become one
    assistant message with several tool calls; reasoning items stay out of the prompt."""
    if isinstance(req.input, str):
        return [{"role": "user", "content": req.input}]
    out: list[dict[str, Any]] = []
    for item in req.input:
        if isinstance(item, MessageItem):
            out.append({"role": item.role, "content": item.text()})
        elif isinstance(item, FunctionCallItem):
            call = {
                "id": item.call_id,
                "type": "function",
                "function": {"name": item.name, "arguments": item.arguments},
            }
            last = out[-1] if out else None
            if (
                last
                and last["role"] == "assistant"
                and last.get("tool_calls")
                and not last["content"]
            ):
                last["tool_calls"].append(call)
            else:
                out.append({"role": "assistant", "content": "", "tool_calls": [call]})
        elif isinstance(item, FunctionCallOutputItem):
            out.append({"role": "tool", "tool_call_id": item.call_id, "content": item.output})
    return out


def generate_request(
    req: ResponseRequest, history: list[dict[str, Any]]
) -> tuple[GenerateRequest, list[dict[str, Any]]]:
    """(the engine request, the conversation so far) for a response request."""
    messages = list(history)
    if req.instructions:
        # instructions apply to this turn only (OpenAI: not carried over by previous_response_id)
        messages = [m for m in messages if m.get("role") != "system" or not m.get("instructions")]
        messages.insert(0, {"role": "system", "content": req.instructions, "instructions": True})
    messages += input_messages(req)
    body: dict[str, Any] = {
        "model": req.model,
        "messages": [{k: v for k, v in m.items() if k != "instructions"} for m in messages],
        "max_completion_tokens": req.max_output_tokens,
        "temperature": req.temperature,
        "top_p": req.top_p,
    }
    if req.tools:
        body["tools"] = [
            {
                "type": "function",
                "function": t.model_dump(exclude={"type"}, exclude_none=True),
            }
            for t in req.tools
        ]
    if isinstance(req.tool_choice, NamedFunctionChoice):
        body["tool_choice"] = {"type": "function", "function": {"name": req.tool_choice.name}}
    elif req.tool_choice is not None:
        body["tool_choice"] = req.tool_choice
    fmt = req.text.format if req.text else None
    if fmt is not None and fmt.type == "json_object":
        body["response_format"] = {"type": "json_object"}
    elif fmt is not None and fmt.type == "json_schema":
        body["response_format"] = {
            "type": "json_schema",
            "json_schema": {
                "name": fmt.name or "output",
                "schema": fmt.schema_,
                "strict": fmt.strict,
            },
        }
    try:
        chat = ChatCompletionRequest.model_validate(
            {k: v for k, v in body.items() if v is not None}
        )
    except ValidationError as e:
        raise APIError.from_validation(e) from None
    return convert.chat_request(chat), messages


# ---------------------------------------------------------------- responses


def _usage(acc: convert.Accumulator) -> dict[str, Any]:
    choice = acc.choices.get(0) or convert.ChoiceAcc()
    out_tokens = choice.completion_tokens
    return {
        "input_tokens": acc.prompt_tokens,
        "input_tokens_details": {"cached_tokens": acc.cached_tokens, "cache_write_tokens": 0},
        "output_tokens": out_tokens,
        "output_tokens_details": {"reasoning_tokens": choice.reasoning_tokens},
        "total_tokens": acc.prompt_tokens + out_tokens,
    }


@dataclass
class ResponseBuilder:
    """The response object and its streaming events, fed with one generation's engine events."""

    req: ResponseRequest
    model: str
    rid: str = field(default_factory=lambda: convert.new_id("resp").replace("-", "_"))
    created_at: int = field(default_factory=lambda: int(time.time()))
    output: list[dict[str, Any]] = field(default_factory=list)
    events: list[dict[str, Any]] = field(default_factory=list)
    seq: int = 0
    _open: dict[str, Any] | None = None  # the output item receiving deltas

    def response(self, status: str, acc: convert.Accumulator | None = None) -> dict[str, Any]:
        fmt = self.req.text.format if self.req.text and self.req.text.format else None
        choice = acc.choices.get(0) if acc else None
        incomplete = status == "incomplete"
        return {
            "id": self.rid,
            "object": "response",
            "created_at": self.created_at,
            "status": status,
            "error": None,
            "incomplete_details": {"reason": "max_output_tokens"} if incomplete else None,
            "instructions": self.req.instructions,
            "max_output_tokens": self.req.max_output_tokens,
            "model": self.model,
            "output": self.output,
            "parallel_tool_calls": True,
            "previous_response_id": self.req.previous_response_id,
            "store": self.req.store is not False,
            "temperature": self.req.temperature,
            "top_p": self.req.top_p,
            "text": {
                "format": fmt.model_dump(by_alias=True, exclude_none=True)
                if fmt
                else {"type": "text"}
            },
            "tool_choice": self.req.tool_choice.model_dump()
            if isinstance(self.req.tool_choice, NamedFunctionChoice)
            else (self.req.tool_choice or "auto"),
            "tools": [t.model_dump(exclude_none=True) for t in self.req.tools or []],
            "usage": _usage(acc) if acc and choice else None,
            "metadata": {},
        }

    def _emit(self, kind: str, **data: Any) -> None:
        self.events.append({"type": kind, "sequence_number": self.seq, **data})
        self.seq += 1

    def start(self) -> None:
        self._emit("response.created", response=self.response("in_progress"))
        self._emit("response.in_progress", response=self.response("in_progress"))

    def _index(self) -> int:
        return len(self.output) - 1

    def _open_item(self, item: dict[str, Any], part: dict[str, Any] | None) -> None:
        self.close_item()
        self.output.append(item)
        self._open = item
        self._emit(
            "response.output_item.added",
            output_index=self._index(),
            item=dict(item, content=[]) if part else item,
        )
        if part is not None:
            self._emit(
                "response.content_part.added",
                item_id=item["id"],
                output_index=self._index(),
                content_index=0,
                part=dict(part),
            )

    def close_item(self) -> None:
        item, self._open = self._open, None
        if item is None:
            return
        item["status"] = "completed"
        index = self._index()
        if item["type"] == "message":
            part = item["content"][0]
            self._emit(
                "response.output_text.done",
                item_id=item["id"],
                output_index=index,
                content_index=0,
                text=part["text"],
                logprobs=[],
            )
            self._emit(
                "response.content_part.done",
                item_id=item["id"],
                output_index=index,
                content_index=0,
                part=part,
            )
        elif item["type"] == "reasoning":
            part = item["content"][0]
            self._emit(
                "response.reasoning_text.done",
                item_id=item["id"],
                output_index=index,
                content_index=0,
                text=part["text"],
            )
            self._emit(
                "response.content_part.done",
                item_id=item["id"],
                output_index=index,
                content_index=0,
                part=part,
            )
        self._emit("response.output_item.done", output_index=index, item=item)

    def feed(self, text: str, reasoning: str = "") -> None:
        # include_reasoning: false drops the thinking here, so neither the stored response nor
        # the streamed events carry a reasoning item (usage still counts its tokens)
        if reasoning and self.req.include_reasoning is not False:
            if self._open is None or self._open["type"] != "reasoning":
                part: dict[str, Any] = {"type": "reasoning_text", "text": ""}
                item: dict[str, Any] = {
                    "type": "reasoning",
                    "id": convert.new_id("rs").replace("-", "_"),
                    "summary": [],
                    "content": [part],
                    "status": "in_progress",
                }
                self._open_item(item, part)
            assert self._open is not None
            self._open["content"][0]["text"] += reasoning
            self._emit(
                "response.reasoning_text.delta",
                item_id=self._open["id"],
                output_index=self._index(),
                content_index=0,
                delta=reasoning,
            )
        if text:
            if self._open is None or self._open["type"] != "message":
                part = {
                    "type": "output_text",
                    "text": "",
                    "annotations": [],
                    "logprobs": [],
                }
                item = {
                    "type": "message",
                    "id": convert.new_id("msg").replace("-", "_"),
                    "status": "in_progress",
                    "role": "assistant",
                    "content": [part],
                }
                self._open_item(item, part)
            assert self._open is not None
            self._open["content"][0]["text"] += text
            self._emit(
                "response.output_text.delta",
                item_id=self._open["id"],
                output_index=self._index(),
                content_index=0,
                delta=text,
                logprobs=[],
            )

    def finish(self, acc: convert.Accumulator, text: str = "") -> dict[str, Any]:
        """The last events of the response (`text`: what the engine held back until the end);
        returns the finished response object."""
        choice = acc.choices.get(0) or convert.ChoiceAcc()
        self.feed(text)
        self.close_item()
        for call in choice.tool_calls or []:
            item = {
                "type": "function_call",
                "id": convert.new_id("fc").replace("-", "_"),
                "call_id": call.id,
                "name": call.name,
                "arguments": "",
                "status": "in_progress",
            }
            self.output.append(item)
            index = self._index()
            self._emit("response.output_item.added", output_index=index, item=dict(item))
            item["arguments"] = call.arguments
            item["status"] = "completed"
            self._emit(
                "response.function_call_arguments.delta",
                item_id=item["id"],
                output_index=index,
                delta=call.arguments,
            )
            self._emit(
                "response.function_call_arguments.done",
                item_id=item["id"],
                output_index=index,
                name=call.name,
                arguments=call.arguments,
            )
            self._emit("response.output_item.done", output_index=index, item=item)
        status = "incomplete" if choice.finish_reason == "length" else "completed"
        final = self.response(status, acc)
        self._emit(f"response.{status}", response=final)
        return final

    def take(self) -> list[dict[str, Any]]:
        out, self.events = self.events, []
        return out


def answer_messages(output: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """A response's output as the chat message that continues the conversation."""
    text = "".join(
        part["text"] for item in output if item["type"] == "message" for part in item["content"]
    )
    calls = [
        {
            "id": item["call_id"],
            "type": "function",
            "function": {"name": item["name"], "arguments": item["arguments"]},
        }
        for item in output
        if item["type"] == "function_call"
    ]
    msg: dict[str, Any] = {"role": "assistant", "content": text}
    if calls:
        msg["tool_calls"] = calls
    return [msg]


# ---------------------------------------------------------------- handlers


def owner(handler: GenerationHandler) -> str:
    """Who may see a stored response: the API key or Jupyter user that created it."""
    return str(getattr(handler.current_user, "username", "") or "anonymous")


class ResponsesHandler(GenerationHandler):
    @scope("inference")
    @operation(
        "OpenAI Responses (stream: true for SSE events)",
        tag="OpenAI",
        body=ResponseRequest,
        returns=ResponseObject,
        stream=ResponseStreamEvent,
        stream_note="with stream: true, `event: <type>` + `data: <event JSON>` events",
        errors={**GENERATION_ERRORS, 404: "Unknown model or previous_response_id"},
        example={
            "model": "smollm2-135m",
            "input": "Say hello in three words.",
            "max_output_tokens": 32,
        },
    )
    async def post(self) -> None:
        req = self.parse(ResponseRequest)
        store = store_of(self.service)
        history: list[dict[str, Any]] = []
        if req.previous_response_id:
            history = store.get(req.previous_response_id, owner(self)).messages
        greq, messages = generate_request(req, history)
        builder = ResponseBuilder(req, greq.model)

        async def consume(events: EventStream) -> None:
            acc = convert.Accumulator()
            final: dict[str, Any] | None = None
            if req.stream:
                final = await self._stream_response(events, builder, acc)
            elif await self.collect(events, acc):
                choice = acc.choices.get(0)
                if choice is not None:
                    builder.feed("", "".join(choice.reasoning))
                    final = builder.finish(acc, "".join(choice.text))
                    self.write_json(final)
            if final is not None and req.store is not False:
                store.put(
                    builder.rid,
                    Stored(owner(self), final, messages + answer_messages(final["output"])),
                )

        await self.generate([greq], consume)

    async def send_stream_error(self, err: APIError) -> None:
        body = {"type": "error", "code": err.code, "message": err.message, "param": err.param}
        await sse.send(self, body, event="error")
        await sse.finish(self)

    async def _stream_response(
        self, events: EventStream, builder: ResponseBuilder, acc: convert.Accumulator
    ) -> dict[str, Any] | None:
        pending = await self.started(events)
        if pending is None:
            return None
        sse.start(self)
        self._headers_sent = True
        final: dict[str, Any] | None = None
        try:
            builder.start()
            async for index, ev in self.stream_items(events, pending):
                final = await self._send(builder, acc, index, ev) or final
            if not await self.end_of_stream(events):
                return None
            await sse.finish(self)
        except StreamClosedError:
            self.on_connection_close()
            return None
        return final

    async def _send(
        self,
        builder: ResponseBuilder,
        acc: convert.Accumulator,
        index: int,
        ev: Start | Delta | Done,
    ) -> dict[str, Any] | None:
        acc.add(index, ev)
        final = None
        if isinstance(ev, Delta):
            builder.feed(ev.text, ev.reasoning)
        elif isinstance(ev, Done):
            final = builder.finish(acc, ev.text)
        for data in builder.take():
            await sse.send(self, data, event=data["type"])
        return final


class ResponseHandler(GenerationHandler):
    @scope("inference")
    @operation(
        "A stored response", tag="OpenAI", returns=ResponseObject, errors={404: "Not stored"}
    )
    async def get(self, rid: str) -> None:
        self.write_json(store_of(self.service).get(rid, owner(self)).response)

    @scope("inference")
    @operation(
        "Delete a stored response",
        tag="OpenAI",
        returns=DeletedResponse,
        errors={404: "Not stored"},
    )
    async def delete(self, rid: str) -> None:
        store_of(self.service).delete(rid, owner(self))
        self.write_json(DeletedResponse(id=rid))
