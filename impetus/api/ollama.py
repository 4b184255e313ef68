"""Ollama's API: `/api/chat`, `/api/generate`, `/api/embed`, `/api/tags`, `/api/show`, `/api/ps`,
`/api/pull`, `/api/version`.

Served at the server root by `impetus serve` (an Ollama client's host is the server's URL) and at
`{base_url}impetus/api/...` in Jupyter (the host is `{server}{base_url}impetus`), so it never meets
Jupyter's own `/api/`. Generations go through the chat path's conversion and the same engine
batch; streaming is NDJSON (Ollama's default: `"stream": false` for one object). Durations come
from the engine's timings of the request (nanoseconds, as Ollama reports them): load_duration is
the time before the request joined the batch (loading the model just in time, waiting for a slot),
prompt_eval_duration the prefill, eval_duration first token to last. Errors are `{"error": "..."}`
with the HTTP status.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel, ValidationError
from tornado.iostream import StreamClosedError

from impetus import __version__
from impetus.api import admin_models, convert
from impetus.api import ollama_schemas as s
from impetus.api.auth import scope
from impetus.api.base import ImpetusHandler
from impetus.api.errors import APIError
from impetus.api.ollama_schemas import (
    ChatMessageIn,
    ChatRequest,
    EmbedRequest,
    GenerateRequestIn,
    ModelNameRequest,
    Options,
    PullRequestIn,
    keep_alive_seconds,
    model_id,
    tagged,
)
from impetus.api.openai_handlers import GenerationHandler
from impetus.api.openapi import GENERATION_ERRORS, F, Schema, operation
from impetus.api.schemas import ChatCompletionRequest, ParamError
from impetus.api.streams import EventStream
from impetus.models.types import PullProgress
from impetus.protocol import Delta, Done, EngineError, GenerateRequest, Start, ToolCall

NDJSON = "application/x-ndjson"
DONE_REASONS = {"stop": "stop", "length": "length", "tool_calls": "stop", "cancelled": "stop"}


def now_iso() -> str:
    return datetime.now(UTC).isoformat().replace("+00:00", "Z")


# how every streaming Ollama endpoint answers, for the OpenAPI document
NDJSON_NOTE = "by default (stream: false for one object), one JSON object a line; the last has done: true and the counts"


def ollama_operation(
    summary: str, *, lines: Schema | None = None, **details: Any
) -> Callable[[F], F]:
    """`operation` for an Ollama route: its errors in Ollama's shape. `lines`: the model of each
    NDJSON line of a route that streams, which is also the shape of its whole answer."""
    if lines is not None:
        details.update(returns=lines, stream=lines, stream_media=NDJSON, stream_note=NDJSON_NOTE)
    return operation(summary, tag="Ollama", error_model=s.OllamaError, **details)


def generation_operation(
    summary: str, body: type[BaseModel], lines: Schema, **example: Any
) -> Callable[[F], F]:
    """`ollama_operation` for a generation route (chat, generate): the engine's errors, and an
    example body of the built-in model, a few tokens long, with the route's own `example` input."""
    return ollama_operation(
        summary,
        body=body,
        lines=lines,
        errors=GENERATION_ERRORS,
        example={"model": "smollm2-135m", **example, "options": {"num_predict": 32}},
    )


class OllamaHandler(ImpetusHandler):
    """Ollama's error shape (`{"error": message}`) for everything it answers, auth included."""

    def error_body(self, err: APIError) -> dict[str, Any]:
        return {"error": err.message}

    def parse_ollama(self, model: type[Any]) -> Any:
        try:
            return self.parse(model)
        except ParamError as e:  # raised by a validator outside pydantic's wrapping
            raise APIError(400, str(e), param=e.param) from None

    async def write_line(self, obj: dict[str, Any]) -> None:
        self.write(json.dumps(obj, ensure_ascii=False, separators=(",", ":")) + "\n")
        await self.flush()

    def start_ndjson(self) -> None:
        self.set_status(200)
        self.set_header("Content-Type", NDJSON)
        self.set_header("Cache-Control", "no-cache")
        self.set_header("X-Accel-Buffering", "no")

    async def end_ndjson(self) -> None:
        await self.finish(set_content_type=NDJSON)

    async def keep_alive(self, model: str, value: Any) -> float | None:
        """Load `model` with the request's keep_alive (seconds; the engine unloads it once idle
        that long). None: the engine's default applies."""
        try:
            seconds = keep_alive_seconds(value)
        except ParamError as e:
            raise APIError(400, str(e), param="keep_alive") from None
        if seconds is None:
            return None
        service = self.service
        await service.ensure_engine()
        try:
            await service.engine.load(model, keep_alive=seconds, allow_paths=False)
        except EngineError as e:
            raise APIError.from_engine(e) from e
        return seconds


# ---------------------------------------------------------------- requests


def _sampling(options: Options | None) -> dict[str, Any]:
    if options is None:
        return {}
    o = options
    out = {
        "temperature": o.temperature,
        "top_p": o.top_p,
        "top_k": o.top_k,
        "min_p": o.min_p,
        "seed": o.seed,
        "repetition_penalty": o.repeat_penalty,
        "presence_penalty": o.presence_penalty,
        "frequency_penalty": o.frequency_penalty,
        "stop": o.stop or None,
    }
    if o.num_predict is not None and o.num_predict > 0:
        out["max_tokens"] = o.num_predict
    return out


def _format(fmt: Any) -> dict[str, Any] | None:
    if fmt == "json":
        return {"type": "json_object"}
    if isinstance(fmt, dict):
        return {"type": "json_schema", "json_schema": {"name": "format", "schema": fmt}}
    return None


def _messages(messages: list[ChatMessageIn]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for i, m in enumerate(messages):
        if m.images:
            raise APIError(
                400,
                f"messages[{i}] has images; impetus serves text models only.",
                param=f"messages[{i}].images",
            )
        msg: dict[str, Any] = {"role": m.role, "content": m.content}
        if m.tool_calls:
            msg["tool_calls"] = [
                {
                    "id": f"call_{i}_{k}",
                    "type": "function",
                    "function": {
                        "name": c.function.name,
                        "arguments": json.dumps(c.function.arguments),
                    },
                }
                for k, c in enumerate(m.tool_calls)
            ]
        if m.role == "tool" and m.tool_name:
            msg["name"] = m.tool_name
        out.append(msg)
    return out


def engine_request(
    model: str,
    messages: list[dict[str, Any]],
    *,
    options: Options | None,
    fmt: Any,
    think: bool | None,
    tools: list[dict[str, Any]] | None = None,
) -> GenerateRequest:
    body: dict[str, Any] = {"model": model, "messages": messages, **_sampling(options)}
    body["response_format"] = _format(fmt)
    body["tools"] = tools
    if think is not None:
        body["chat_template_kwargs"] = {"enable_thinking": think}
    try:
        chat = ChatCompletionRequest.model_validate(
            {k: v for k, v in body.items() if v is not None}
        )
    except ValidationError as e:
        raise APIError.from_validation(e) from None
    greq = convert.chat_request(chat)
    if options is not None:
        if options.repeat_last_n is not None:
            greq.sampling.penalty_context = options.repeat_last_n
        greq.context_length = options.num_ctx
    return greq


def _ns(seconds: float) -> int:
    return int(seconds * 1e9)


def _stats(acc: convert.Accumulator, started: float) -> dict[str, Any]:
    choice = acc.choices.get(0) or convert.ChoiceAcc()
    t = choice.timings
    out: dict[str, Any] = {
        "done_reason": DONE_REASONS.get(choice.finish_reason or "stop", "stop"),
        "total_duration": _ns(time.perf_counter() - started),
        "prompt_eval_count": acc.prompt_tokens,
        "eval_count": choice.completion_tokens,
    }
    if t is not None:
        out["load_duration"] = _ns(t.queue)
        out["prompt_eval_duration"] = _ns(t.prefill)
        out["eval_duration"] = _ns(max(t.e2e - t.ttft, 0.0))
    return out


def _tool_calls(calls: list[ToolCall] | None) -> list[dict[str, Any]] | None:
    if not calls:
        return None
    out = []
    for c in calls:
        try:
            args = json.loads(c.arguments)
        except json.JSONDecodeError:
            args = {"arguments": c.arguments}
        out.append({"function": {"name": c.name, "arguments": args}})
    return out


# ---------------------------------------------------------------- generation handlers


class _OllamaGeneration(OllamaHandler, GenerationHandler):
    chat = True

    async def send_stream_error(self, err: APIError) -> None:
        await self.write_line({"error": err.message})
        await self.end_ndjson()

    def _chunk(self, model: str, text: str, thinking: str, done: bool) -> dict[str, Any]:
        out: dict[str, Any] = {"model": tagged(model), "created_at": now_iso()}
        if self.chat:
            msg: dict[str, Any] = {"role": "assistant", "content": text}
            if thinking:
                msg["thinking"] = thinking
            out["message"] = msg
        else:
            out["response"] = text
            if thinking:
                out["thinking"] = thinking
        out["done"] = done
        return out

    async def run_ollama(
        self, greq: GenerateRequest, name: str, stream: bool, show_thinking: bool
    ) -> None:
        started = time.perf_counter()

        async def consume(events: EventStream) -> None:
            acc = convert.Accumulator()
            if not stream:
                if await self.collect(events, acc):
                    choice = acc.choices.get(0) or convert.ChoiceAcc()
                    out = self._chunk(
                        name,
                        "".join(choice.text),
                        "".join(choice.reasoning) if show_thinking else "",
                        True,
                    )
                    self._add_tools(out, choice.tool_calls)
                    out.update(_stats(acc, started))
                    self.write_json(out)
                return
            pending = await self.started(events)
            if pending is None:
                return
            self.start_ndjson()
            self._headers_sent = True
            try:
                for index, ev in pending:
                    await self._send(name, acc, index, ev, show_thinking, started)
                while (item := await self._next(events)) is not None:
                    await self._send(name, acc, *item, show_thinking, started)
                if await self.end_of_stream(events):
                    await self.end_ndjson()
            except StreamClosedError:
                self.on_connection_close()

        await self.generate([greq], consume)

    def _add_tools(self, out: dict[str, Any], calls: list[ToolCall] | None) -> None:
        tool_calls = _tool_calls(calls)
        if tool_calls and self.chat:
            out["message"]["tool_calls"] = tool_calls

    async def _send(
        self,
        name: str,
        acc: convert.Accumulator,
        index: int,
        ev: Start | Delta | Done,
        show_thinking: bool,
        started: float,
    ) -> None:
        acc.add(index, ev)
        if isinstance(ev, Delta):
            thinking = ev.reasoning if show_thinking else ""
            if ev.text or thinking:
                await self.write_line(self._chunk(name, ev.text, thinking, False))
        elif isinstance(ev, Done):
            if ev.text:
                await self.write_line(self._chunk(name, ev.text, "", False))
            if ev.tool_calls and self.chat:
                tools = self._chunk(name, "", "", False)
                self._add_tools(tools, ev.tool_calls)
                await self.write_line(tools)
            last = self._chunk(name, "", "", True)
            last.update(_stats(acc, started))
            await self.write_line(last)

    async def load_only(self, model: str, keep_alive: Any) -> None:
        """A request without a prompt loads the model (keep_alive 0: unloads it), as Ollama's do."""
        service = self.service
        await service.ensure_engine()
        try:
            seconds = keep_alive_seconds(keep_alive)
        except ParamError as e:
            raise APIError(400, str(e), param="keep_alive") from None
        try:
            if seconds == 0:
                await service.engine.unload(model)
                reason = "unload"
            else:
                await service.engine.load(model, keep_alive=seconds, allow_paths=False)
                reason = "load"
        except EngineError as e:
            raise APIError.from_engine(e) from e
        out = self._chunk(model, "", "", True)
        out["done_reason"] = reason
        self.write_json(out)


class ChatHandler(_OllamaGeneration):
    @scope("inference")
    @generation_operation(
        "Ollama chat (NDJSON stream by default)",
        ChatRequest,
        s.ChatResponse,
        messages=[{"role": "user", "content": "Say hello in three words."}],
    )
    async def post(self) -> None:
        req: ChatRequest = self.parse_ollama(ChatRequest)
        model = model_id(req.model)
        if not req.messages:
            await self.load_only(model, req.keep_alive)
            return
        tools = [t.model_dump(exclude_none=True) for t in req.tools] if req.tools else None
        greq = engine_request(
            model,
            _messages(req.messages),
            options=req.options,
            fmt=req.format,
            think=req.think,
            tools=tools,
        )
        await self.keep_alive(model, req.keep_alive)
        await self.run_ollama(greq, model, req.stream, req.think is not False)


class GenerateHandler(_OllamaGeneration):
    chat = False

    @scope("inference")
    @generation_operation(
        "Ollama generate (NDJSON stream by default)",
        GenerateRequestIn,
        s.GenerateResponse,
        prompt="Once upon a time",
    )
    async def post(self) -> None:
        req: GenerateRequestIn = self.parse_ollama(GenerateRequestIn)
        model = model_id(req.model)
        if req.images:
            raise APIError(
                400, "impetus serves text models only; 'images' is not supported.", param="images"
            )
        if req.suffix:
            raise APIError(400, "'suffix' (fill in the middle) is not supported.", param="suffix")
        if not req.prompt:
            await self.load_only(model, req.keep_alive)
            return
        if req.raw:
            if req.system:
                raise APIError(
                    400, "'system' needs the chat template; it cannot go with raw.", param="system"
                )
            # the prompt as it is, no template: a completion
            greq = engine_request(
                model,
                [{"role": "user", "content": ""}],
                options=req.options,
                fmt=req.format,
                think=None,
            )
            greq.messages = None
            greq.prompt = req.prompt
        else:
            messages = [{"role": "system", "content": req.system}] if req.system else []
            messages.append({"role": "user", "content": req.prompt})
            greq = engine_request(
                model, messages, options=req.options, fmt=req.format, think=req.think
            )
        await self.keep_alive(model, req.keep_alive)
        await self.run_ollama(greq, model, req.stream, req.think is not False)


# ---------------------------------------------------------------- other endpoints


class EmbedHandler(OllamaHandler):
    @scope("inference")
    @ollama_operation(
        "Ollama embeddings", body=EmbedRequest, returns=s.EmbedResponse, errors=GENERATION_ERRORS
    )
    async def post(self) -> None:
        req: EmbedRequest = self.parse_ollama(EmbedRequest)
        model = model_id(req.model)
        texts = [req.input] if isinstance(req.input, str) else list(req.input)
        service = self.service
        started = time.perf_counter()
        with service.track():
            await service.ensure_engine()
            await self.keep_alive(model, req.keep_alive)
            try:
                async with asyncio.timeout(service.settings.request_timeout):
                    res = await service.engine.embed(model, texts)
            except EngineError as e:
                raise APIError.from_engine(e) from e
            except TimeoutError:
                raise APIError(
                    504, "The embedding request ran past the time limit.", code="timeout"
                ) from None
        vectors = res.vectors
        if req.dimensions is not None and vectors and req.dimensions != len(vectors[0]):
            raise APIError(
                400,
                f"{res.model} produces {len(vectors[0])}-dimensional embeddings, not {req.dimensions}.",
                param="dimensions",
            )
        self.write_json(
            {
                "model": tagged(res.model),
                "embeddings": vectors,
                "total_duration": _ns(time.perf_counter() - started),
                "prompt_eval_count": res.prompt_tokens,
            }
        )


def _details(entry: dict[str, Any]) -> dict[str, Any]:
    params = entry.get("parameters")
    arch = entry.get("architecture") or ""
    return {
        "parent_model": "",
        "format": "gguf" if entry.get("source") == "gguf" else "safetensors",
        "family": arch,
        "families": [arch] if arch else None,
        "parameter_size": f"{params / 1e6:.0f}M" if params else "",
        "quantization_level": entry.get("quantization") or entry.get("serving_dtype") or "",
    }


def _modified(entry: dict[str, Any]) -> str:
    path = entry.get("path")
    with contextlib.suppress(OSError, TypeError):
        from pathlib import Path

        if path:
            return datetime.fromtimestamp(Path(path).stat().st_mtime, UTC).isoformat()
    return now_iso()


class TagsHandler(OllamaHandler):
    @scope("inference")
    @ollama_operation("Ollama: models on disk", returns=s.OllamaModelList)
    async def get(self) -> None:
        entries = [e.model_dump(mode="json") for e in await self.service.registry_entries()]
        models = [
            {
                "name": tagged(e["id"]),
                "model": tagged(e["id"]),
                "modified_at": _modified(e),
                "size": e.get("size_bytes") or 0,
                "digest": "",
                "details": _details(e),
            }
            for e in entries
            if e.get("downloaded")
        ]
        self.write_json({"models": models})


class ShowHandler(OllamaHandler):
    @scope("inference")
    @ollama_operation(
        "Ollama: one model's details",
        body=ModelNameRequest,
        returns=s.ShowResponse,
        errors={404: "Unknown model"},
    )
    async def post(self) -> None:
        req: ModelNameRequest = self.parse_ollama(ModelNameRequest)
        model = req.id()
        service = self.service
        entries = [e.model_dump(mode="json") for e in await service.registry_entries()]
        entry = next((e for e in entries if e["id"] == model), None)
        state = None
        if service.engine.state == "ready":
            st = await service.status()
            state = next((m for m in st.models if m.id == model), None) if st else None
        if entry is None and state is None:
            raise APIError(
                404, f"model '{req.model or req.name}' not found", code="model_not_found"
            )
        entry = entry or {"id": model, "kind": state.kind if state else "chat", "source": "path"}
        kind = entry.get("kind") or "chat"
        capabilities = ["embedding"] if kind == "embedding" else ["completion"]
        if state is not None and state.supports_tools:
            capabilities.append("tools")
        if state is not None and state.supports_thinking:
            capabilities.append("thinking")
        context = (state.context_length if state else None) or entry.get("context_length")
        info: dict[str, Any] = {"general.architecture": entry.get("architecture") or ""}
        if entry.get("parameters"):
            info["general.parameter_count"] = entry["parameters"]
        if context:
            info["context_length"] = context
        self.write_json(
            {
                "modelfile": "",
                "parameters": "",
                "template": "",
                "details": _details(entry),
                "model_info": info,
                "capabilities": capabilities,
                "modified_at": _modified(entry),
            }
        )


class PsHandler(OllamaHandler):
    @scope("inference")
    @ollama_operation("Ollama: loaded models", returns=s.OllamaModelList)
    async def get(self) -> None:
        service = self.service
        st = await service.status() if service.engine.state == "ready" else None
        models = []
        for m in st.models if st else []:
            ka = m.keep_alive
            if ka is None or ka < 0:
                expires = datetime(9999, 12, 31, tzinfo=UTC)
            else:
                expires = datetime.fromtimestamp(m.last_used + ka, UTC)
            models.append(
                {
                    "name": tagged(m.id),
                    "model": tagged(m.id),
                    "size": m.memory_bytes,
                    "digest": "",
                    "details": {
                        "format": "safetensors",
                        "family": "",
                        "quantization_level": m.dtype,
                    },
                    "expires_at": expires.isoformat(),
                    "size_vram": m.memory_bytes if st and st.backend != "cpu" else 0,
                    "context_length": m.context_length,
                }
            )
        self.write_json({"models": models})


class VersionHandler(OllamaHandler):
    @scope("public")
    @operation("Ollama: the server's version", tag="Ollama", returns=s.OllamaVersion)
    async def get(self) -> None:
        self.write_json({"version": __version__})


def _progress(ev: PullProgress) -> dict[str, Any]:
    if ev.status == "downloading":
        return {
            "status": f"pulling {ev.file or ev.id}",
            "digest": ev.file or ev.id,
            "total": ev.bytes_total or 0,
            "completed": ev.bytes_done,
        }
    if ev.status == "converting":
        return {"status": ev.message or "converting"}
    if ev.status == "done":
        return {"status": "success"}
    return {"error": ev.message or ev.status}


class PullHandler(admin_models.PullFollower, OllamaHandler):
    """impetus's own pull (the Hugging Face hub, GGUF, built-in aliases) with Ollama's progress
    lines. Writing to the model directory is an admin action, as `admin/models/pull` is."""

    @scope("admin")
    @ollama_operation(
        "Ollama pull: impetus's own download, Ollama's progress lines",
        body=PullRequestIn,
        lines=s.PullLine,
        errors={
            400: "Not a model impetus can run",
            404: "Unknown model or hub repo",
            409: "The pull was cancelled",
            502: "Download failed",
        },
    )
    async def post(self) -> None:
        req: PullRequestIn = self.parse_ollama(PullRequestIn)
        model = req.id()
        job, queue = self.follow(model, load=False)
        try:
            # a pull that fails at once (an unknown repo: 404) is an HTTP error, streamed or not
            events = [await admin_models.first_event(job, queue)]
            error = admin_models.failed_at_once(events[0])
            if error is not None:
                raise error
            if req.stream:
                self.start_ndjson()
                await self.write_line({"status": "pulling manifest"})
            while True:
                for ev in events:
                    if not ev.id:  # the client left
                        return
                    if req.stream:
                        await self.write_line(_progress(ev))
                    if ev.status in admin_models.FINAL:
                        if not req.stream:
                            if ev.status != "done":
                                raise admin_models.pull_error(ev)
                            self.write_json(_progress(ev))
                        else:
                            await self.end_ndjson()
                        return
                events = [await queue.get()]
        except StreamClosedError:
            pass
        finally:
            admin_models.unfollow_pull(job, queue)


# Ollama's own paths; its clients take the server's URL (plus `/impetus` in Jupyter) as host
ROUTES: list[tuple[str, type[ImpetusHandler]]] = [
    (r"api/chat", ChatHandler),
    (r"api/generate", GenerateHandler),
    (r"api/embed", EmbedHandler),
    (r"api/tags", TagsHandler),
    (r"api/show", ShowHandler),
    (r"api/ps", PsHandler),
    (r"api/pull", PullHandler),
    (r"api/version", VersionHandler),
]
