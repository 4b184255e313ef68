"""OpenAI requests -> engine `GenerateRequest`s, and engine events -> OpenAI response objects.

Pure functions and small accumulators, no I/O: the handlers feed events in, and take chunks or
whole responses out. A request is validated once, by its HTTP schema (impetus.api.schemas); the
`GenerateRequest` built here is sent to the engine as it is, without a second check.
"""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass, field
from typing import Any

from impetus.api.errors import APIError
from impetus.api.schemas import (
    AssistantMessage,
    ChatChoice,
    ChatChunkChoice,
    ChatCompletion,
    ChatCompletionChunk,
    ChatCompletionRequest,
    ChatDelta,
    ChatLogprobToken,
    ChoiceLogprobs,
    Completion,
    CompletionChoice,
    CompletionLogprobs,
    CompletionRequest,
    FunctionCall,
    PromptTokensDetails,
    ToolCallDelta,
    ToolCallOut,
    TopLogprob,
    UsageOut,
    _SamplingFields,
)
from impetus.protocol import (
    Delta,
    Done,
    GenerateRequest,
    SamplingParams,
    Start,
    Timings,
    TokenLogprob,
    ToolCall,
)

SYSTEM_FINGERPRINT = "impetus"
TEXT_PART_TYPES = {"text", "input_text"}


def new_id(prefix: str) -> str:
    return f"{prefix}-{secrets.token_hex(12)}"


# ---------------------------------------------------------------- requests


def sampling_from(req: _SamplingFields) -> SamplingParams:
    """OpenAI defaults where the request says nothing (temperature 1, top_p 1)."""
    values: dict[str, Any] = {
        "temperature": req.temperature,
        "top_p": req.top_p,
        "top_k": req.top_k,
        "min_p": req.min_p,
        "repetition_penalty": req.repetition_penalty,
        "presence_penalty": req.presence_penalty,
        "frequency_penalty": req.frequency_penalty,
        "seed": req.seed,
    }
    params = {k: v for k, v in values.items() if v is not None}
    if req.logit_bias:
        params["logit_bias"] = {int(k): float(v) for k, v in req.logit_bias.items()}
    return SamplingParams(**params)


def stop_list(stop: str | list[str] | None) -> list[str]:
    if stop is None:
        return []
    return [stop] if isinstance(stop, str) else list(stop)


def chat_request(req: ChatCompletionRequest) -> GenerateRequest:
    messages: list[dict[str, Any]] = []
    for i, m in enumerate(req.messages):
        msg = m.model_dump(exclude_none=True)
        if msg["role"] == "developer":  # OpenAI's newer name for the system role
            msg["role"] = "system"
        content = msg.get("content")
        if isinstance(content, list):
            for j, part in enumerate(content):
                if not isinstance(part, dict) or part.get("type") not in TEXT_PART_TYPES:
                    kind = part.get("type") if isinstance(part, dict) else type(part).__name__
                    raise APIError(
                        400,
                        f"Only text content parts are supported; messages[{i}].content[{j}] is {kind!r}.",
                        param=f"messages[{i}].content[{j}]",
                        code="unsupported_content",
                    )
                if not isinstance(part.get("text"), str):
                    raise APIError(
                        400,
                        "A text content part needs a 'text' string.",
                        param=f"messages[{i}].content[{j}].text",
                    )
        messages.append(msg)
    response_format = None
    if req.response_format is not None and req.response_format.type != "text":
        response_format = req.response_format.model_dump(by_alias=True, exclude_none=True)
    tool_choice: Any = req.tool_choice
    if tool_choice is not None and not isinstance(tool_choice, str):
        tool_choice = tool_choice.model_dump()
    return GenerateRequest(
        model=req.model,
        messages=messages,
        tools=[t.model_dump(exclude_none=True) for t in req.tools] if req.tools else None,
        tool_choice=tool_choice,
        chat_template_kwargs=req.chat_template_kwargs or {},
        sampling=sampling_from(req),
        max_tokens=req.max_completion_tokens or req.max_tokens,
        stop=stop_list(req.stop),
        n=req.n or 1,
        logprobs=bool(req.logprobs),
        top_logprobs=req.top_logprobs or 0,
        response_format=response_format,
        ignore_eos=bool(req.ignore_eos),
    )


def completion_requests(req: CompletionRequest) -> list[GenerateRequest]:
    """One engine request per prompt (OpenAI's batch form); each asks for n choices."""
    prompts = req.prompts()
    if req.echo and req.logprobs is not None:
        raise APIError(
            400,
            "'echo' together with 'logprobs' is not supported (no prompt logprobs).",
            param="echo",
        )
    if req.echo and any(not isinstance(p, str) for p in prompts):
        raise APIError(400, "'echo' needs text prompts, not token ids.", param="echo")
    return [
        GenerateRequest(
            model=req.model,
            prompt=p,
            sampling=sampling_from(req),
            max_tokens=req.max_tokens,
            stop=stop_list(req.stop),
            n=req.n or 1,
            logprobs=req.logprobs is not None,
            top_logprobs=req.logprobs or 0,
            ignore_eos=bool(req.ignore_eos),
        )
        for p in prompts
    ]


# ---------------------------------------------------------------- responses


def usage_out(prompt_tokens: int, completion_tokens: int, cached_tokens: int) -> UsageOut:
    return UsageOut(
        prompt_tokens=prompt_tokens,
        completion_tokens=completion_tokens,
        total_tokens=prompt_tokens + completion_tokens,
        prompt_tokens_details=PromptTokensDetails(cached_tokens=cached_tokens),
    )


def chat_logprobs(items: list[TokenLogprob]) -> ChoiceLogprobs:
    return ChoiceLogprobs(
        content=[
            ChatLogprobToken(
                token=lp.token,
                logprob=lp.logprob,
                bytes=lp.bytes,
                top_logprobs=[
                    TopLogprob(token=t.token, logprob=t.logprob, bytes=t.bytes)
                    for t in lp.top_logprobs
                ],
            )
            for lp in items
        ]
    )


def completion_logprobs(items: list[TokenLogprob], offset: int) -> CompletionLogprobs:
    """The legacy shape; `offset` is where the first token's text starts in the choice's text."""
    out = CompletionLogprobs()
    for lp in items:
        out.tokens.append(lp.token)
        out.token_logprobs.append(lp.logprob)
        out.top_logprobs.append(
            {t.token: t.logprob for t in lp.top_logprobs} if lp.top_logprobs else None
        )
        out.text_offset.append(offset)
        offset += len(lp.token)
    return out


def tool_calls_out(calls: list[ToolCall]) -> list[ToolCallOut]:
    return [
        ToolCallOut(id=c.id, function=FunctionCall(name=c.name, arguments=c.arguments))
        for c in calls
    ]


@dataclass
class ChoiceAcc:
    text: list[str] = field(default_factory=list)
    reasoning: list[str] = field(default_factory=list)
    logprobs: list[TokenLogprob] = field(default_factory=list)
    tool_calls: list[ToolCall] | None = None
    finish_reason: str | None = None
    stop_sequence: str | None = None
    completion_tokens: int = 0
    reasoning_tokens: int = 0
    timings: Timings | None = None
    streamed_tokens: int = 0  # tokens of the Delta events so far (completion_tokens is at Done)


@dataclass
class Accumulator:
    """Collects the events of one request (several engine generations for batched prompts)."""

    n: int = 1
    choices: dict[int, ChoiceAcc] = field(default_factory=dict)
    prompt_tokens: int = 0
    cached_tokens: int = 0
    model: str | None = None

    def add(self, index: int, ev: Start | Delta | Done) -> None:
        """`index` is the OpenAI choice index (prompt number * n + engine choice index)."""
        if isinstance(ev, Start):
            self.prompt_tokens += ev.prompt_tokens
            self.cached_tokens += ev.cached_tokens
            return
        acc = self.choices.setdefault(index, ChoiceAcc())
        if ev.text:
            acc.text.append(ev.text)
        if isinstance(ev, Delta):
            acc.streamed_tokens += len(ev.token_ids)
            if ev.reasoning:
                acc.reasoning.append(ev.reasoning)
            if ev.logprobs:
                acc.logprobs.extend(ev.logprobs)
        else:
            acc.finish_reason = ev.finish_reason
            acc.stop_sequence = ev.stop_sequence
            acc.tool_calls = ev.tool_calls
            acc.completion_tokens = ev.usage.completion_tokens
            acc.reasoning_tokens = ev.usage.reasoning_tokens
            acc.timings = ev.timings

    def usage(self) -> UsageOut:
        return usage_out(
            self.prompt_tokens,
            sum(c.completion_tokens for c in self.choices.values()),
            self.cached_tokens,
        )

    def usage_so_far(self) -> UsageOut:
        """While streaming: the tokens generated up to now (`continuous_usage_stats`)."""
        return usage_out(
            self.prompt_tokens,
            sum(max(c.completion_tokens, c.streamed_tokens) for c in self.choices.values()),
            self.cached_tokens,
        )

    def chat_completion(
        self,
        rid: str,
        created: int,
        model: str,
        want_logprobs: bool,
        include_reasoning: bool = True,
    ) -> ChatCompletion:
        choices = []
        for i in sorted(self.choices):
            c = self.choices[i]
            text = "".join(c.text)
            msg = AssistantMessage(content=text if (text or not c.tool_calls) else None)
            if include_reasoning and c.reasoning:
                msg.reasoning_content = "".join(c.reasoning)
            if c.tool_calls:
                msg.tool_calls = tool_calls_out(c.tool_calls)
            choices.append(
                ChatChoice(
                    index=i,
                    message=msg,
                    logprobs=chat_logprobs(c.logprobs) if want_logprobs else None,
                    finish_reason=c.finish_reason,
                )
            )
        return ChatCompletion(**self._whole(rid, created, model), choices=choices)

    def completion(
        self, rid: str, created: int, model: str, want_logprobs: bool, echo: list[str] | None
    ) -> Completion:
        choices = []
        for i in sorted(self.choices):
            c = self.choices[i]
            prefix = echo[i // self.n] if echo else ""
            choices.append(
                CompletionChoice(
                    index=i,
                    text=prefix + "".join(c.text),
                    logprobs=completion_logprobs(c.logprobs, len(prefix))
                    if want_logprobs
                    else None,
                    finish_reason=c.finish_reason,
                )
            )
        return Completion(**self._whole(rid, created, model), choices=choices)

    def _whole(self, rid: str, created: int, model: str) -> dict[str, Any]:
        """What a whole (non-streamed) chat or text completion has besides its choices."""
        return {
            "id": rid,
            "created": created,
            "model": model,
            "system_fingerprint": SYSTEM_FINGERPRINT,
            "usage": self.usage(),
        }


# ---------------------------------------------------------------- streaming chunks


@dataclass
class ChunkMaker:
    """Builds the SSE chunks of one streaming request, one per engine event."""

    rid: str
    model: str
    chat: bool
    include_usage: bool
    want_logprobs: bool
    n: int = 1
    echo: list[str] | None = None
    continuous_usage: bool = False  # the usage so far on every chunk
    include_reasoning: bool = True
    created: int = field(default_factory=lambda: int(time.time()))
    _offsets: dict[int, int] = field(default_factory=dict)
    _echoed: set[int] = field(default_factory=set)
    _template: dict[str, Any] | None = None

    def text_chunk(self, index: int, text: str) -> dict[str, Any]:
        """A chunk carrying only text: the per-token case, so it copies a template instead of
        building and dumping the schema models each time. The template is the schema models'
        own output, made once (tests hold it equal to `_wrap` of the same choice)."""
        if self._template is None:
            empty = (
                ChatChunkChoice(index=0, delta=ChatDelta(content=""))
                if self.chat
                else CompletionChoice(index=0, text="")
            )
            self._template = self._wrap(empty)
        choice = dict(self._template["choices"][0])
        choice["index"] = index
        if self.chat:
            choice["delta"] = {**choice["delta"], "content": text}
        else:
            choice["text"] = text
        out = dict(self._template)
        out["choices"] = [choice]
        return out

    def _wrap(self, choice: ChatChunkChoice | CompletionChoice) -> dict[str, Any]:
        if self.chat:
            chunk: Any = ChatCompletionChunk(
                id=self.rid,
                created=self.created,
                model=self.model,
                system_fingerprint=SYSTEM_FINGERPRINT,
                choices=[choice],
            )
        else:
            chunk = Completion(
                id=self.rid,
                created=self.created,
                model=self.model,
                system_fingerprint=SYSTEM_FINGERPRINT,
                choices=[choice],
            )
        out: dict[str, Any] = chunk.model_dump(exclude_none=True)
        # OpenAI's chunk shape keeps these keys, null when empty
        out["choices"][0].setdefault("finish_reason", None)
        out["choices"][0].setdefault("logprobs", None)
        if self.include_usage:
            out["usage"] = None
        return out

    def role(self, index: int) -> dict[str, Any]:
        """The first chunk of a chat choice: the assistant role and empty content."""
        return self._wrap(
            ChatChunkChoice(index=index, delta=ChatDelta(role="assistant", content=""))
        )

    def delta(self, index: int, ev: Delta) -> dict[str, Any] | None:
        reasoning = ev.reasoning if self.chat and self.include_reasoning else ""
        return self._text(index, ev.text, ev.logprobs, reasoning)

    def _text(
        self,
        index: int,
        piece: str,
        logprobs: list[TokenLogprob] | None,
        reasoning: str = "",
    ) -> dict[str, Any] | None:
        text = piece
        if not self.chat and self.echo and index not in self._echoed:
            self._echoed.add(index)
            text = self.echo[index // self.n] + text
        if not text and not reasoning and not (self.want_logprobs and logprobs):
            return None
        if not self.want_logprobs and not reasoning:  # (the offsets only place logprobs)
            return self.text_chunk(index, text)
        if self.chat:
            # a reasoning delta carries reasoning_content (and content only if it has text)
            delta = ChatDelta(reasoning_content=reasoning) if reasoning else ChatDelta()
            if text or not reasoning:
                delta.content = text
            return self._wrap(
                ChatChunkChoice(
                    index=index,
                    delta=delta,
                    logprobs=chat_logprobs(logprobs or []) if self.want_logprobs else None,
                )
            )
        offset = self._offsets.get(index, 0)
        self._offsets[index] = offset + len(text)
        lp = (
            completion_logprobs(logprobs or [], offset + len(text) - len(piece))
            if self.want_logprobs
            else None
        )
        return self._wrap(CompletionChoice(index=index, text=text, logprobs=lp))

    def done(self, index: int, ev: Done) -> list[dict[str, Any]]:
        """The last chunks of a choice: leftover text, tool calls, then the finish reason."""
        out = []
        if ev.text:
            d = self._text(index, ev.text, None)
            if d is not None:
                out.append(d)
        if self.chat:
            if ev.tool_calls:
                calls = [
                    ToolCallDelta(
                        index=k,
                        id=c.id,
                        type="function",
                        function=FunctionCall(name=c.name, arguments=c.arguments),
                    )
                    for k, c in enumerate(ev.tool_calls)
                ]
                out.append(
                    self._wrap(ChatChunkChoice(index=index, delta=ChatDelta(tool_calls=calls)))
                )
            out.append(
                self._wrap(
                    ChatChunkChoice(index=index, delta=ChatDelta(), finish_reason=ev.finish_reason)
                )
            )
        else:
            if self.echo and index not in self._echoed:
                d = self._text(index, "", None)
                if d is not None:
                    out.append(d)
            out.append(
                self._wrap(CompletionChoice(index=index, text="", finish_reason=ev.finish_reason))
            )
        return out

    def usage(self, usage: UsageOut) -> dict[str, Any]:
        obj = "chat.completion.chunk" if self.chat else "text_completion"
        return {
            "id": self.rid,
            "object": obj,
            "created": self.created,
            "model": self.model,
            "system_fingerprint": SYSTEM_FINGERPRINT,
            "choices": [],
            "usage": usage.model_dump(),
        }
