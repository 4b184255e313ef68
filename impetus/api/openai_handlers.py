"""The OpenAI endpoints: v1/models, v1/chat/completions, v1/completions, v1/embeddings.

A generation request runs inside `service.track()` (counted for graceful shutdown) and a time
limit; its engine generations are cancelled when the client disconnects (Tornado's
`on_connection_close` fires at once, streaming or not), when the time limit passes, or when a
shutdown outlasts its grace period.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import struct
import time
from collections.abc import AsyncIterator, Awaitable, Callable

from tornado.iostream import StreamClosedError

from impetus.api import convert, sse
from impetus.api.auth import scope
from impetus.api.base import ImpetusHandler
from impetus.api.errors import APIError
from impetus.api.openapi import GENERATION_ERRORS, operation
from impetus.api.schemas import (
    ChatCompletion,
    ChatCompletionChunk,
    ChatCompletionRequest,
    Completion,
    CompletionRequest,
    Embedding,
    EmbeddingList,
    EmbeddingRequest,
    EmbeddingUsage,
    ModelCard,
    ModelList,
)
from impetus.api.streams import EventStream
from impetus.protocol import Delta, Done, EngineError, GenerateRequest, Start


class ModelsHandler(ImpetusHandler):
    @scope("inference")
    @operation("List the models a request may name", tag="OpenAI", returns=ModelList)
    async def get(self) -> None:
        self.write_json(ModelList(data=await self.service.model_cards()))


class ModelHandler(ImpetusHandler):
    @scope("inference")
    @operation("One model", tag="OpenAI", returns=ModelCard, errors={404: "Unknown model"})
    async def get(self, model_id: str) -> None:
        for card in await self.service.model_cards():
            if card.id == model_id:
                self.write_json(card)
                return
        raise APIError(
            404, f"The model '{model_id}' does not exist.", param="model", code="model_not_found"
        )


class GenerationHandler(ImpetusHandler):
    """Runs engine generations for one HTTP request and writes them whole or as SSE."""

    _stream: EventStream | None = None
    _disconnected = False
    _headers_sent = False

    def on_connection_close(self) -> None:
        # Tornado's own fails the pending body future of a client that left mid-upload; without
        # it the handler would wait for that body forever.
        super().on_connection_close()
        self._disconnected = True
        if self._stream is not None and self._stream.aborted is None:
            self._stream.abort("disconnect")
            self.service.metrics.aborted.labels("disconnect").inc()

    async def generate(
        self, requests: list[GenerateRequest], consume: Callable[[EventStream], Awaitable[None]]
    ) -> None:
        """Open the engine generations of this request and hand their events to `consume` (the
        protocol's writer), inside the in-flight count and the time limit; always release them."""
        service = self.service
        with service.track():
            await service.ensure_engine()
            if self._disconnected:
                return
            events = service.open(requests)
            self._stream = events
            try:
                async with asyncio.timeout(service.settings.request_timeout):
                    await consume(events)
            except TimeoutError:
                if events.aborted is None:
                    events.abort("timeout")
                service.metrics.aborted.labels("timeout").inc()
                await self._fail(
                    APIError(
                        504,
                        f"The request ran past the time limit of {service.settings.request_timeout:g} s.",
                        type="server_error",
                        code="timeout",
                    )
                )
            finally:
                await service.release(events)

    async def run(
        self,
        requests: list[GenerateRequest],
        *,
        stream: bool,
        chat: bool,
        include_usage: bool,
        want_logprobs: bool,
        echo: list[str] | None = None,
        continuous_usage: bool = False,
        include_reasoning: bool = True,
    ) -> None:
        n = requests[0].n
        model = requests[0].model
        rid = convert.new_id("chatcmpl" if chat else "cmpl")

        async def consume(events: EventStream) -> None:
            if stream:
                maker = convert.ChunkMaker(
                    rid, model, chat, include_usage, want_logprobs, n, echo,
                    continuous_usage=continuous_usage, include_reasoning=include_reasoning,
                )  # fmt: skip
                await self._stream_events(events, maker, len(requests))
            else:
                await self._whole(
                    events, rid, model, chat, want_logprobs, echo, n, include_reasoning
                )

        await self.generate(requests, consume)

    async def _fail(self, err: APIError) -> None:
        """An error before the response started is a status; after, an error event."""
        if self._disconnected:
            return
        if not self._headers_sent:
            raise err
        with contextlib.suppress(StreamClosedError):
            await self.send_stream_error(err)

    async def send_stream_error(self, err: APIError) -> None:
        """An error once the stream has started, in the protocol's shape (here: OpenAI's)."""
        await sse.send(self, err.body())
        await sse.finish(self)

    async def collect(self, events: EventStream, acc: convert.Accumulator) -> bool:
        """Feed every event into `acc`; False when there is nothing to answer (aborted, failed,
        disconnected), with the error already reported where there is someone to tell."""
        while (item := await self._next(events)) is not None:
            acc.add(*item)
        if await self._aborted(events):
            return False
        return not (self._disconnected or self._finished)

    async def started(
        self, events: EventStream, prompts: int = 1
    ) -> list[tuple[int, Start | Delta | Done]] | None:
        """Wait until every generation has started, returning the events seen so far; None when
        the request ended first (an error was raised or reported). Streams hold their headers
        until then: a bad model, a prompt over the context or a full queue still gets its proper
        status code instead of a 200 stream."""
        pending: list[tuple[int, Start | Delta | Done]] = []
        starts = 0
        while starts < prompts:
            item = await self._next(events)
            if item is None:
                break
            pending.append(item)
            if isinstance(item[1], Start):
                starts += 1
        if self._finished or self._disconnected:
            return None
        if await self._aborted(events):
            return None
        return pending

    async def end_of_stream(self, events: EventStream) -> bool:
        """After the last event: True if the stream ended normally and may be closed as such."""
        if self._finished:  # an engine error was sent as an event
            return False
        return not await self._aborted(events)

    async def _next(self, events: EventStream) -> tuple[int, Start | Delta | Done] | None:
        try:
            return await events.next()
        except EngineError as e:
            await self._fail(APIError.from_engine(e))
            return None

    async def _aborted(self, events: EventStream) -> bool:
        """True when the request's generations were aborted, a shutdown reported to the client
        (a disconnect has nobody to tell; a timeout is reported by run())."""
        if not events.aborted:
            return False
        if events.aborted == "shutdown":
            await self._fail(
                APIError(
                    503, "The server shut down before this request finished.", code="shutting_down"
                )
            )
        return True

    async def _whole(
        self,
        events: EventStream,
        rid: str,
        model: str,
        chat: bool,
        want_logprobs: bool,
        echo: list[str] | None,
        n: int,
        include_reasoning: bool,
    ) -> None:
        acc = convert.Accumulator(n=n)
        created = int(time.time())
        if not await self.collect(events, acc):
            return
        if chat:
            self.write_json(
                acc.chat_completion(rid, created, model, want_logprobs, include_reasoning)
            )
        else:
            self.write_json(acc.completion(rid, created, model, want_logprobs, echo))

    async def _stream_events(
        self, events: EventStream, maker: convert.ChunkMaker, prompts: int
    ) -> None:
        acc = convert.Accumulator(n=maker.n)
        pending = await self.started(events, prompts)
        if pending is None:
            return
        sse.start(self)
        self._headers_sent = True
        try:
            if maker.chat:
                for index in range(prompts * maker.n):
                    await sse.send(self, maker.role(index))
            async for index, ev in self.stream_items(events, pending):
                await self._send_event(maker, acc, index, ev)
            if not await self.end_of_stream(events):
                return
            if maker.include_usage:
                await sse.send(self, maker.usage(acc.usage()))
            await sse.send(self, sse.DONE)
            await sse.finish(self)
        except StreamClosedError:
            self.on_connection_close()

    async def stream_items(
        self, events: EventStream, pending: list[tuple[int, Start | Delta | Done]]
    ) -> AsyncIterator[tuple[int, Start | Delta | Done]]:
        """A started stream's events: those already received, then the rest as they come.

        Until the first token (waiting in the batch queue, prefilling a long prompt) nothing else
        would flow: `: keepalive` comments meanwhile keep proxies with idle timeouts from cutting
        in. Every protocol's SSE stream reads its events through this."""
        for received in pending:
            yield received
        first_token = any(isinstance(ev, Delta) for _, ev in pending)
        while not first_token:
            item = await self._next_or_keepalive(events)
            if item is None:
                return
            first_token = isinstance(item[1], Delta)
            yield item
        while (item := await self._next(events)) is not None:
            yield item

    async def _next_or_keepalive(
        self, events: EventStream
    ) -> tuple[int, Start | Delta | Done] | None:
        """The next event, sending `: keepalive` every `sse_keepalive` seconds meanwhile."""
        task = asyncio.ensure_future(self._next(events))
        try:
            while True:
                done, _ = await asyncio.wait({task}, timeout=self.service.settings.sse_keepalive)
                if done:
                    return task.result()
                await sse.comment(self, "keepalive")
        finally:
            if not task.done():  # the client left while we waited
                task.cancel()

    async def _send_event(
        self,
        maker: convert.ChunkMaker,
        acc: convert.Accumulator,
        index: int,
        ev: Start | Delta | Done,
    ) -> None:
        acc.add(index, ev)
        if isinstance(ev, Delta):
            chunk = maker.delta(index, ev)
            if chunk is not None:
                if maker.continuous_usage:
                    chunk = {**chunk, "usage": acc.usage_so_far().model_dump()}
                await sse.send(self, chunk)
        elif isinstance(ev, Done):
            for chunk in maker.done(index, ev):
                await sse.send(self, chunk)


class ChatCompletionsHandler(GenerationHandler):
    @scope("inference")
    @operation(
        "Chat completion (stream: true for SSE)",
        tag="OpenAI",
        body=ChatCompletionRequest,
        returns=ChatCompletion,
        stream=ChatCompletionChunk,
        errors=GENERATION_ERRORS,
        example={
            "model": "smollm2-135m",
            "messages": [{"role": "user", "content": "Say hello in three words."}],
            "max_tokens": 32,
            "stream": False,
        },
    )
    async def post(self) -> None:
        req = self.parse(ChatCompletionRequest)
        greq = convert.chat_request(req)
        await self.run(
            [greq],
            stream=bool(req.stream),
            chat=True,
            include_usage=bool(req.stream_options and req.stream_options.include_usage),
            continuous_usage=bool(req.stream_options and req.stream_options.continuous_usage_stats),
            want_logprobs=bool(req.logprobs),
            include_reasoning=req.include_reasoning is not False,
        )


class CompletionsHandler(GenerationHandler):
    @scope("inference")
    @operation(
        "Text completion (stream: true for SSE)",
        tag="OpenAI",
        body=CompletionRequest,
        returns=Completion,
        stream=Completion,
        errors=GENERATION_ERRORS,
        example={"model": "smollm2-135m", "prompt": "Once upon a time", "max_tokens": 32},
    )
    async def post(self) -> None:
        req = self.parse(CompletionRequest)
        greqs = convert.completion_requests(req)
        await self.run(
            greqs,
            stream=bool(req.stream),
            chat=False,
            include_usage=bool(req.stream_options and req.stream_options.include_usage),
            continuous_usage=bool(req.stream_options and req.stream_options.continuous_usage_stats),
            want_logprobs=req.logprobs is not None,
            echo=[p for p in req.prompts() if isinstance(p, str)] if req.echo else None,
        )


class EmbeddingsHandler(ImpetusHandler):
    @scope("inference")
    @operation(
        "Embeddings",
        tag="OpenAI",
        body=EmbeddingRequest,
        returns=EmbeddingList,
        errors=GENERATION_ERRORS,
        example={"model": "minilm", "input": ["a sentence", "another one"]},
    )
    async def post(self) -> None:
        req = self.parse(EmbeddingRequest)
        service = self.service
        with service.track():
            await service.ensure_engine()
            try:
                async with asyncio.timeout(service.settings.request_timeout):
                    res = await service.engine.embed(req.model, req.texts())
            except EngineError as e:
                raise APIError.from_engine(e) from e
            except TimeoutError:
                raise APIError(
                    504,
                    "The embedding request ran past the time limit.",
                    type="server_error",
                    code="timeout",
                ) from None
        dims = len(res.vectors[0]) if res.vectors else 0
        if req.dimensions is not None and req.dimensions != dims:
            raise APIError(
                400,
                f"{res.model} produces {dims}-dimensional embeddings; it cannot shorten them to {req.dimensions}.",
                param="dimensions",
            )
        data = []
        for i, vec in enumerate(res.vectors):
            value: list[float] | str = vec
            if req.encoding_format == "base64":
                value = base64.b64encode(struct.pack(f"<{len(vec)}f", *vec)).decode("ascii")
            data.append(Embedding(index=i, embedding=value))
        usage = EmbeddingUsage(prompt_tokens=res.prompt_tokens, total_tokens=res.prompt_tokens)
        self.write_json(EmbeddingList(data=data, model=res.model, usage=usage))
