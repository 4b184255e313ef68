"""`Chat`: a streaming chat panel (anywidget).

Tokens travel as custom messages (`{"type": "delta", "text": ...}`), one per engine step, and the
front end appends them; the `history` trait is written once per turn, so a long answer is never
re-sent as a growing string. The whole history is sent with every turn: the engine's prompt cache
then only prefills what is new (visible as `cached_tokens` in each answer's stats).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import math
import uuid
from pathlib import Path
from typing import Any

import anywidget
import traitlets as t

from impetus.client import DEFAULT_MODEL, AsyncChatStream, ChatResult, ImpetusError
from impetus.widgets import _loop
from impetus.widgets._base import ClientLike, Connection, short_error

_HERE = Path(__file__).parent


class Chat(anywidget.AnyWidget):
    """Chat with a model: `iw.Chat(model="smollm2-135m")`.

    `show_probabilities=True` colours each token by its probability (alternatives on hover);
    `response_format={...}` constrains answers to JSON, shown as formatted JSON.
    Python side: `submit(text)`, `ask(text) -> str` (blocks until answered), `await
    ask_async(text)` (the same without blocking the kernel), `stop()`,
    `regenerate()`, `clear()`, `messages` (the conversation as OpenAI messages), `to_json()`,
    `to_cell()` (a cell that recreates this chat), `last_result` (a ChatResult).
    """

    _esm = (_HERE / "chat.js").read_text()
    _css = (_HERE / "chat.css").read_text()

    model = t.Unicode("").tag(sync=True)
    models = t.List(t.Unicode()).tag(sync=True)
    system_prompt = t.Unicode("").tag(sync=True)
    temperature = t.Float(0.7, min=0.0, max=2.0).tag(sync=True)
    top_p = t.Float(0.95, min=0.01, max=1.0).tag(sync=True)
    max_tokens = t.Int(512, min=1).tag(sync=True)
    # colour each generated token by its probability, top alternatives on hover (logprobs)
    show_probabilities = t.Bool(False).tag(sync=True)
    # constrain answers (OpenAI `response_format`: json_object or json_schema); shown as JSON
    response_format = t.Dict(allow_none=True, default_value=None).tag(sync=True)
    # [{"role": "user"|"assistant"|"error", "content": str, "stats": {...}}]
    history = t.List(t.Dict()).tag(sync=True)
    busy = t.Bool(False).tag(sync=True)
    status = t.Unicode("connecting…").tag(sync=True)
    error = t.Unicode("").tag(sync=True)

    def __init__(
        self,
        model: str | None = None,
        *,
        system_prompt: str = "",
        messages: list[dict[str, Any]] | None = None,
        client: ClientLike = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(model=model or "", system_prompt=system_prompt, **kwargs)
        self._conn = Connection(client, model)
        self._future: concurrent.futures.Future[None] | None = None
        self._task: asyncio.Task[None] | None = None
        self._stream: AsyncChatStream | None = None
        self._cancel_requested = False
        self.last_result: ChatResult | None = None
        # the conversation's id, sent with each turn (X-Session-Id): behind a proxy over
        # several replicas, it stays on the one whose prompt cache holds it (docs/scale.md)
        self.session = uuid.uuid4().hex
        if messages:
            self.load_messages(messages)
        self.on_msg(self._on_frontend_msg)
        _loop.submit(self._connect())

    # ---------------------------------------------------------------- public API
    @property
    def messages(self) -> list[dict[str, Any]]:
        """The conversation as sent to the model: the system prompt, then user/assistant turns."""
        out: list[dict[str, Any]] = []
        if self.system_prompt.strip():
            out.append({"role": "system", "content": self.system_prompt})
        out += [
            {"role": m["role"], "content": m["content"]}
            for m in self.history
            if m.get("role") in ("user", "assistant")
        ]
        return out

    def load_messages(self, messages: list[dict[str, Any]]) -> None:
        """Replace the conversation (a system message sets the system prompt)."""
        self.session = uuid.uuid4().hex
        history = []
        for m in messages:
            if m.get("role") == "system":
                self.system_prompt = str(m.get("content") or "")
            elif m.get("role") in ("user", "assistant"):
                history.append({"role": m["role"], "content": str(m.get("content") or "")})
        self.history = history

    def submit(self, text: str) -> concurrent.futures.Future[None]:
        """Ask `text` as the next user turn; returns at once (see `wait` / `ask`)."""
        if self.busy:
            raise RuntimeError("an answer is being generated: stop() it or wait() first")
        text = text.strip()
        if not text:
            raise ValueError("empty message")
        self.history = [*self.history, {"role": "user", "content": text}]
        return self._start()

    def ask(self, text: str, timeout: float = 300.0) -> str:
        """Send `text` and block until the answer is complete; returns the answer's text.

        The answer still streams into the panel, but the kernel is busy meanwhile, so the panel's
        own buttons (Stop) act only afterwards; `submit` leaves the kernel free.
        """
        self.submit(text)
        self.wait(timeout)
        return self._last_answer()

    async def ask_async(self, text: str, timeout: float = 300.0) -> str:
        """`await chat.ask_async(text)`: the answer's text, without blocking the kernel.

        Usable at the top level of a notebook cell; other cells, the panel's Stop button and
        other widgets keep working while the answer streams.
        """
        future = self.submit(text)
        try:
            await asyncio.wait_for(asyncio.shield(asyncio.wrap_future(future)), timeout)
        except TimeoutError:
            self.stop()
            await asyncio.wrap_future(future)
            raise TimeoutError(f"no complete answer within {timeout} s (stopped)") from None
        except asyncio.CancelledError:  # the cell was interrupted: stop the answer too
            self.stop()
            raise
        return self._last_answer()

    def _last_answer(self) -> str:
        last = self.history[-1] if self.history else {}
        if last.get("role") == "error":
            raise ImpetusError(str(last.get("content")))
        return str(last.get("content", ""))

    def wait(self, timeout: float | None = 300.0) -> None:
        """Block until the current answer ends (or `timeout` seconds; then it is stopped)."""
        future = self._future
        if future is None:
            return
        try:
            future.result(timeout)
        except concurrent.futures.TimeoutError:
            self.stop()
            future.result(30.0)
            raise TimeoutError(f"no complete answer within {timeout} s (stopped)") from None

    def stop(self) -> None:
        """Stop the answer being generated: the stream is closed and the engine cancels it."""
        if not self.busy:
            return
        self._cancel_requested = True
        if self._stream is not None:
            self._stream.mark_cancelled()
        task = self._task
        if task is not None and not task.done():
            _loop.loop().call_soon_threadsafe(task.cancel)

    def regenerate(self) -> concurrent.futures.Future[None]:
        """Drop the last answer (or error) and answer the last user turn again."""
        if self.busy:
            raise RuntimeError("an answer is being generated: stop() it first")
        history = list(self.history)
        while history and history[-1].get("role") in ("assistant", "error"):
            history.pop()
        if not history:
            raise ValueError("nothing to regenerate")
        self.history = history
        return self._start()

    def clear(self) -> None:
        self.stop()
        self.wait(30.0)
        self.history = []
        self.last_result = None
        self.session = uuid.uuid4().hex

    def to_json(self, indent: int | None = 2) -> str:
        return json.dumps(
            {
                "model": self.model,
                "messages": self.messages,
                "params": {
                    "temperature": self.temperature,
                    "top_p": self.top_p,
                    "max_tokens": self.max_tokens,
                },
            },
            indent=indent,
            ensure_ascii=False,
        )

    def to_cell(self, insert: bool = True) -> str:
        """Python code that recreates this conversation; put in the next cell when in IPython."""
        lines = "".join(f"        {m!r},\n" for m in self.messages)
        code = (
            "import impetus.widgets as iw\n\n"
            "chat = iw.Chat(\n"
            f"    model={self.model!r},\n"
            f"    temperature={self.temperature!r},\n"
            f"    top_p={self.top_p!r},\n"
            f"    max_tokens={self.max_tokens!r},\n"
            f"    messages=[\n{lines}    ],\n"
            ")\n"
            "chat"
        )
        if insert:
            try:
                from IPython import get_ipython
            except ImportError:
                return code
            shell = get_ipython()
            if shell is not None:
                shell.set_next_input(code, replace=False)
        return code

    def close(self) -> None:
        self.stop()
        super().close()

    # ---------------------------------------------------------------- internals
    def _on_frontend_msg(
        self, _widget: Any, content: dict[str, Any], _buffers: list[bytes]
    ) -> None:
        kind = content.get("type")
        try:
            if kind == "send":
                self.submit(str(content.get("text", "")))
            elif kind == "stop":
                self.stop()
            elif kind == "regenerate":
                self.regenerate()
            elif kind == "clear":
                self.stop()
                self.history = []
            elif kind == "refresh":
                _loop.submit(self._connect())
        except (RuntimeError, ValueError) as e:
            self.error = str(e)

    def _emit(self, msg: dict[str, Any]) -> None:
        """A custom message to every front-end view (anywidget's `msg:custom`)."""
        self.send(msg)

    def _start(self) -> concurrent.futures.Future[None]:
        self.busy = True
        self.error = ""
        self._cancel_requested = False
        self._future = _loop.submit(self._generate())
        return self._future

    async def _connect(self) -> None:
        """Find the server, pick a model if none was given, list the models for the picker."""
        try:
            if self._cancel_requested:  # Stop pressed before this task ran
                raise asyncio.CancelledError
            client = await self._conn.get()
            if not self.model:
                status = await client.status()
                loaded = [m.id for m in status.models if m.kind != "embedding"]
                self.model = loaded[0] if loaded else DEFAULT_MODEL
            served = [m.id for m in await client.served_models()]
            self.models = sorted({*served, self.model})
            self.status = f"ready · {client.endpoint.base_url}"
            self.error = ""
        except Exception as e:  # shown in place; the next send tries again
            self.status = "not connected"
            self.error = short_error(e)

    async def _generate(self) -> None:
        self._task = asyncio.current_task()
        self._emit({"type": "start"})
        parts: list[str] = []
        result: ChatResult | None = None
        error: str | None = None
        try:
            if self._cancel_requested:  # Stop pressed before this task ran
                raise asyncio.CancelledError
            client = await self._conn.get()
            if not self.model:
                await self._connect()
            # usage on every chunk: a stopped answer still knows how many tokens it had
            extra: dict[str, Any] = {
                "stream_options": {"include_usage": True, "continuous_usage_stats": True}
            }
            probabilities = self.show_probabilities
            if probabilities:
                extra.update(logprobs=True, top_logprobs=TOP_ALTERNATIVES)
            if self.response_format:
                extra["response_format"] = self.response_format
            self._stream = await client.chat_stream(
                self.messages,
                model=self.model or None,
                session=self.session,
                temperature=self.temperature,
                top_p=self.top_p,
                max_tokens=self.max_tokens,
                **extra,
            )
            if self._cancel_requested:  # Stop pressed while the request was being sent
                self._stream.mark_cancelled()
                raise asyncio.CancelledError
            async for text in self._stream:
                parts.append(text)
                msg: dict[str, Any] = {"type": "delta", "text": text}
                if probabilities:
                    msg["tokens"] = compact_tokens(self._stream.step_tokens)
                self._emit(msg)
            result = self._stream.result
        except asyncio.CancelledError:
            # Stop: the response is closed (the api cancels the request in the engine)
            result = self._stream.result if self._stream is not None else None
            if result is None:
                result = ChatResult(text="".join(parts), finish_reason="cancelled")
            result.finish_reason = "cancelled"
        except Exception as e:
            error = short_error(e)
            if self._stream is not None:
                result = self._stream.result
        finally:
            self._stream = None
            self._task = None
        history = list(self.history)
        if result is not None and (result.text or error is None):
            answer: dict[str, Any] = {
                "role": "assistant",
                "content": result.text,
                "stats": _stats(result),
            }
            if result.logprobs:
                answer["tokens"] = compact_tokens(result.logprobs)
            if self.response_format and _is_json(result.text):
                answer["json"] = True
            history.append(answer)
            self.last_result = result
        if error is not None:
            history.append({"role": "error", "content": error})
            self.error = error
            self.status = "error"
            _loop.submit(self._watch_recovery())
        with self.hold_sync():  # one update: the views never see the answer twice
            self.history = history
            self.busy = False
        self._emit({"type": "end"})

    async def _watch_recovery(self) -> None:
        """After an error, poll until the engine answers /ready again, then say so."""
        for _ in range(600):
            await asyncio.sleep(1.0)
            if self.busy or not self.error:
                return
            try:
                client = await self._conn.get()
                await client.ready()
            except Exception:
                continue
            self.error = ""
            self.status = f"ready · {client.endpoint.base_url}"
            return


TOP_ALTERNATIVES = 5


def compact_tokens(entries: list[dict[str, Any]]) -> list[list[Any]]:
    """OpenAI logprobs entries -> [[token, probability, [[alternative, probability], ...]], ...]:
    what the panel needs to colour a token and list its alternatives, and no more."""
    out: list[list[Any]] = []
    for e in entries:
        alts = [
            [a.get("token", ""), round(math.exp(a["logprob"]), 4)]
            for a in e.get("top_logprobs") or []
            if a.get("logprob") is not None
        ]
        p = math.exp(e["logprob"]) if e.get("logprob") is not None else None
        out.append([e.get("token", ""), None if p is None else round(p, 4), alts])
    return out


def _is_json(text: str) -> bool:
    try:
        json.loads(text)
    except ValueError:
        return False
    return True


def _stats(r: ChatResult) -> dict[str, Any]:
    return {
        "ttft": r.ttft,
        "tokens_per_second": r.tokens_per_second,
        "prompt_tokens": r.prompt_tokens,
        "completion_tokens": r.completion_tokens,
        "cached_tokens": r.cached_tokens,
        "finish_reason": r.finish_reason,
        "elapsed": r.elapsed,
        "summary": r.summary(),
    }
