"""Continuous batching for one loaded chat model, on mlx-lm's BatchGenerator.

`ModelRunner.admit` tokenizes a request, looks up the prompt cache and inserts one sequence per
choice; `ModelRunner.step` runs one BatchGenerator step and turns the step's tokens into wire
events (detokenized text, stop strings checked on text, tool calls, logprobs). Nothing here waits
on a client: the engine loop calls `step` as long as there is work.
"""

from __future__ import annotations

import contextlib
import copy
import json
import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, cast

import mlx.core as mx
import msgspec
from mlx_lm.generate import BatchGenerator, StopSequences
from mlx_lm.models.cache import (
    BatchKVCache,
    LRUPromptCache,
    can_trim_prompt_cache,
    trim_prompt_cache,
)

from impetus.config import Settings
from impetus.engine import constrained
from impetus.engine.loader import KV_STEP, LoadedChatModel, kv_bytes_per_token
from impetus.engine.sampling import build_logits_processors, build_sampler
from impetus.protocol import (
    Delta,
    Done,
    EngineError,
    ErrorInfo,
    Event,
    Failed,
    FinishReason,
    GenerateRequest,
    Start,
    Timings,
    TokenLogprob,
    ToolCall,
    Usage,
)

log = logging.getLogger("impetus.engine")


_batch_mask = BatchKVCache.make_mask


def _lone_sequence_mask(
    self: BatchKVCache, N: int, return_array: bool = False, **kwargs: Any
) -> Any:
    """A decode step of a batch of one needs no attention mask.

    mlx-lm's batched KV cache always builds a mask array, and with a mask array MLX's CUDA
    backend leaves its fused single-query attention kernel for the unfused path (7.7 instead of
    6.4 ms a token for the Llama-3-8B shape on an H100: a single stream 20% slower than
    `stream_generate`). A batch of one has no padding (the cache shifts the common left padding
    away when sequences leave, and a lone prompt is never padded), and its keys are sliced to the
    tokens written, so a single query may attend to all of them: exactly what no mask means.
    The batch size is a shape, known without waiting for the device.
    """
    lone = self.left_padding.shape[0] == 1
    if N == 1 and lone and not return_array and kwargs.get("window_size") is None:
        return None
    return _batch_mask(self, N, return_array=return_array, **kwargs)


BatchKVCache.make_mask = _lone_sequence_mask  # type: ignore[method-assign]

ITL_KEEP = 2048  # inter-token gaps kept per choice for the timings


class TextGate:
    """Holds back text that may be the start of a stop string or of a marker (tool call, think).

    `feed` returns (text safe to emit, the marker found or None). A stop string never reaches the
    client, and text is never cut inside a character: the detokenizer only hands over whole ones.
    After a marker, the rest of the text stays buffered: `feed("")` goes on scanning it, with the
    markers of the new state (`reasoning` switches between looking for the think end and for the
    think start / tool-call start).
    """

    def __init__(
        self,
        stops: list[str],
        tool_start: str | None,
        think: tuple[str, str] | None = None,
        reasoning: bool = False,
    ) -> None:
        self.stops = [s for s in stops if s]
        self.tool_start = tool_start
        self.think = think
        self.buf = ""
        self.set_reasoning(reasoning)

    def set_reasoning(self, reasoning: bool) -> None:
        self.reasoning = reasoning
        self.markers = list(self.stops)
        if reasoning and self.think:
            self.markers.append(self.think[1])
        elif not reasoning:
            if self.tool_start:
                self.markers.append(self.tool_start)
            if self.think:
                self.markers.append(self.think[0])

    def feed(self, text: str) -> tuple[str, str | None]:
        if not self.markers:
            buf, self.buf = self.buf + text, ""
            return buf, None
        buf = self.buf + text
        best, found = -1, None
        for m in self.markers:
            i = buf.find(m)
            if i >= 0 and (best < 0 or i < best):
                best, found = i, m
        if found is not None:
            self.buf = buf[best + len(found) :]
            return buf[:best], found
        hold = 0
        for m in self.markers:
            for k in range(min(len(m) - 1, len(buf)), hold, -1):
                if buf.endswith(m[:k]):
                    hold = k
                    break
        self.buf = buf[len(buf) - hold :] if hold else ""
        return buf[: len(buf) - hold], None

    def flush(self) -> str:
        out, self.buf = self.buf, ""
        return out


@dataclass
class Choice:
    rid: str
    index: int
    uid: int
    detok: Any
    gate: TextGate
    cached: int
    want_logprobs: bool
    top_logprobs: int
    t_prefill: float = 0.0
    t_first: float = 0.0
    t_last: float = 0.0
    generated: int = 0
    itl: list[float] = field(default_factory=list)
    tool_mode: bool = False
    tool_text: str = ""
    stop_hit: str | None = None  # the stop string that ended the choice
    reasoning_tokens: int = 0
    done: bool = False


@dataclass
class Active:
    rid: str
    req: GenerateRequest
    arrival: float
    prompt: list[int]
    choices: list[Choice]
    kv_bytes: int = 0  # KV cache reserved for it (prompt + max_tokens, every choice)


class ModelRunner:
    def __init__(
        self, loaded: LoadedChatModel, settings: Settings, prompt_cache: LRUPromptCache, stats: Any
    ) -> None:
        self.loaded = loaded
        self.settings = settings
        self.prompt_cache = prompt_cache
        self.stats = stats
        tok = loaded.tokenizer
        self.eos_stops = StopSequences([(t,) for t in tok.eos_token_ids])
        self.no_stops = StopSequences(None)
        self.gen = BatchGenerator(
            loaded.model,
            max_tokens=settings.max_tokens_default,
            completion_batch_size=settings.max_batch,
            prefill_batch_size=settings.prefill_batch,
            prefill_step_size=settings.prefill_step,
        )
        self.requests: dict[str, Active] = {}
        self.by_uid: dict[int, Choice] = {}
        self.last_used = time.time()
        self.kv_per_token = kv_bytes_per_token(loaded.model, loaded.dtype, loaded.ranks)
        # (KV bytes the budget leaves after every loaded model's weights, bytes reserved by the
        # requests running on every model); set by the engine core, None: no KV accounting
        self.kv_room: Callable[[], tuple[int, int]] | None = None

    @property
    def kv_reserved(self) -> int:
        return sum(a.kv_bytes for a in self.requests.values())

    def _reserve_kv(self, req: GenerateRequest, prompt: list[int], max_tokens: int) -> int:
        """Refuse a request whose worst-case KV cache cannot fit the memory budget, instead of
        letting MLX run the engine out of memory (an OOM kill takes every request with it)."""
        if not self.kv_per_token or self.kv_room is None:
            return 0
        tokens = -(-(len(prompt) + max_tokens) // KV_STEP) * KV_STEP
        need = req.n * tokens * self.kv_per_token
        room, reserved = self.kv_room()
        param = "n" if req.n > 1 else "max_tokens"
        if need > room:
            raise EngineError(
                "kv_cache_too_large",
                f"this request needs about {need / 2**20:.0f} MiB of KV cache (n={req.n} x "
                f"{len(prompt) + max_tokens} tokens), more than the {max(room, 0) / 2**20:.0f} MiB "
                "the memory budget leaves after the model weights; lower n or max_tokens",
                param,
            )
        if need > room - reserved:
            raise EngineError(
                "out_of_memory",
                f"this request needs about {need / 2**20:.0f} MiB of KV cache and the requests "
                f"running now hold {reserved / 2**20:.0f} of {room / 2**20:.0f} MiB; retry shortly",
                param,
            )
        return need

    # ---- admission -------------------------------------------------------------------------

    @property
    def busy(self) -> bool:
        return bool(self.by_uid)

    def tokenize(self, req: GenerateRequest) -> list[int]:
        tok = self.loaded.tokenizer
        if req.messages is not None:
            if not req.messages:
                raise EngineError("invalid_request", "messages must not be empty", "messages")
            messages = [_template_message(m) for m in req.messages]
            kwargs: dict[str, Any] = dict(req.chat_template_kwargs)
            if req.tools:
                kwargs["tools"] = req.tools
            try:
                if tok.has_chat_template:
                    ids = tok.apply_chat_template(messages, add_generation_prompt=True, **kwargs)
                else:
                    from mlx_lm.server import convert_chat

                    ids = tok.encode(convert_chat(messages))
            except EngineError:
                raise
            except Exception as e:
                raise EngineError(
                    "invalid_request", f"the chat template rejected these messages: {e}", "messages"
                ) from e
            return [int(t) for t in ids]
        if req.prompt is None:
            raise EngineError("invalid_request", "either messages or prompt is required", "prompt")
        if isinstance(req.prompt, list):
            bad = [t for t in req.prompt if not 0 <= t < self.loaded.vocab_size]
            if bad:
                raise EngineError(
                    "invalid_request",
                    f"prompt has token ids outside the vocabulary: {bad[:5]}",
                    "prompt",
                )
            return list(req.prompt)
        return [int(t) for t in tok.encode(req.prompt)]

    def admit(self, rid: str, req: GenerateRequest, arrival: float) -> list[Event]:
        prompt = self.tokenize(req)
        ctx = self.loaded.context_length
        if req.context_length is not None:
            ctx = min(ctx, req.context_length)
        if not prompt:
            raise EngineError("invalid_request", "the prompt is empty", "prompt")
        if len(prompt) >= ctx:
            raise EngineError(
                "context_length_exceeded",
                f"the context of this request is {ctx} tokens; the prompt has {len(prompt)}",
                "messages" if req.messages is not None else "prompt",
            )
        max_tokens = req.max_tokens
        if max_tokens is None:
            max_tokens = min(self.settings.max_tokens_default, ctx - len(prompt))
        elif max_tokens <= 0:
            raise EngineError("invalid_request", "max_tokens must be at least 1", "max_tokens")
        elif len(prompt) + max_tokens > ctx:
            raise EngineError(
                "context_length_exceeded",
                f"the context of this request is {ctx} tokens; the prompt has {len(prompt)} and max_tokens asks for {max_tokens} more",
                "max_tokens",
            )
        kv_bytes = self._reserve_kv(req, prompt, max_tokens)
        tok = self.loaded.tokenizer
        grammar = constrained.grammar_for_response_format(req.response_format)
        tool_start = None
        if req.tools and req.tool_choice != "none" and tok.has_tool_calling:
            tool_start = tok.tool_call_start
            forced = constrained.grammar_for_tool_call(
                req.tools, req.tool_choice, tok.tool_call_start, tok.tool_call_end or ""
            )
            grammar = forced or grammar
        elif req.tools and req.tool_choice not in (None, "auto", "none"):
            raise EngineError(
                "invalid_request",
                f"{self.loaded.id} has no tool-calling chat template",
                "tool_choice",
            )

        # Reasoning models: text between the think markers is reasoning, not content. A chat
        # template that opens the think block itself (`<think>` in the generation prompt) starts
        # the answer inside it. A grammar that constrains the output from its first token leaves
        # no room for thinking, so the output is all content then.
        think = (tok.think_start, tok.think_end) if tok.has_thinking else None
        if req.messages is None or grammar is not None:
            think = None
        in_think = bool(think) and tok.rfind_think_start(prompt) > tok.rfind_think_end(prompt)
        budget = req.reasoning_budget
        if budget is not None and think is not None and len(tok.think_end_tokens) != 1:
            raise EngineError(
                "invalid_request",
                f"{self.loaded.id} ends its thinking with several tokens; a thinking budget needs one",
                "reasoning_budget",
            )

        choices: list[Choice] = []
        caches: list[Any] = []
        samplers: list[Any] = []
        segments: list[list[list[int]]] = []
        all_tokens: list[list[int]] = []
        processors: list[list[Any]] = []
        for index in range(req.n):
            cache, rest = self._fetch_cache(prompt)
            cached = len(prompt) - len(rest)
            self.stats.prompt_cache_queries += 1
            self.stats.prompt_cache_query_tokens += len(prompt)
            if cached:
                self.stats.prompt_cache_hits += 1
                self.stats.prompt_cache_hit_tokens += cached
            sampling = req.sampling
            if sampling.seed is not None and index:
                # n seeded choices: distinct but reproducible streams
                sampling = msgspec.structs.replace(sampling, seed=sampling.seed + index)
            procs = build_logits_processors(sampling, self.loaded.vocab_size)
            if grammar:
                procs.append(
                    constrained.make_grammar_processor(tok, self.loaded.vocab_size, grammar)
                )
            if budget is not None and think is not None:
                procs.append(_budget_processor(choices, index, budget, tok.think_end_tokens[0]))
            caches.append(cache)
            segments.append([rest])
            all_tokens.append(prompt[:cached])
            samplers.append(build_sampler(sampling))
            processors.append(procs)
            choices.append(
                Choice(
                    rid=rid,
                    index=index,
                    uid=-1,
                    detok=tok.detokenizer,
                    gate=TextGate(req.stop, tool_start, think, in_think),
                    cached=cached,
                    want_logprobs=req.logprobs,
                    top_logprobs=req.top_logprobs,
                )
            )
        uids = self.gen.insert_segments(
            segments=segments,
            max_tokens=[max_tokens] * req.n,
            caches=caches,
            all_tokens=all_tokens,
            samplers=samplers,
            logits_processors=processors,
            stop_sequences=[self.no_stops if req.ignore_eos else self.eos_stops] * req.n,
        )
        for c, uid in zip(choices, uids, strict=True):
            c.uid = uid
            self.by_uid[uid] = c
        self.requests[rid] = Active(rid, req, arrival, prompt, choices, kv_bytes)
        self.stats.requests_total += 1
        self.stats.prompt_tokens_total += len(prompt)
        self.last_used = time.time()
        self._trim_prompt_cache()
        return [
            Start(
                rid=rid,
                model=self.loaded.id,
                prompt_tokens=len(prompt),
                cached_tokens=choices[0].cached,
                max_tokens=max_tokens,
            )
        ]

    def _fetch_cache(self, prompt: list[int]) -> tuple[list[Any] | None, list[int]]:
        cache, rest = self.prompt_cache.fetch_nearest_cache(self.loaded.id, prompt)
        if cache is not None and not rest:
            # An exact hit: the last prompt token must still run through the model to give logits.
            if can_trim_prompt_cache(cache):
                trim_prompt_cache(cache, 1)
                return cache, prompt[-1:]
            return None, prompt
        return cache, rest

    def _trim_prompt_cache(self) -> None:
        active = self.gen.prompt_cache_nbytes
        self.prompt_cache.trim_to(n_bytes=max(self.settings.prompt_cache_bytes - active, 0))

    # ---- cancellation ----------------------------------------------------------------------

    def cancel(self, rid: str) -> list[Event]:
        active = self.requests.get(rid)
        if active is None:
            return []
        open_choices = [c for c in active.choices if not c.done]
        caches = self.gen.remove([c.uid for c in open_choices], return_prompt_caches=True)
        self._store_caches(caches)
        now = time.perf_counter()
        return [self._finish(c, "cancelled", now) for c in open_choices]

    def cancel_all(self, code: str, message: str) -> list[Event]:
        events: list[Event] = []
        for rid in list(self.requests):
            self.gen.remove([c.uid for c in self.requests[rid].choices if not c.done])
            events.append(Failed(rid=rid, error=ErrorInfo(code=code, message=message)))
            self._drop(rid)
        return events

    # ---- the step --------------------------------------------------------------------------

    def step(self) -> list[Event]:
        t_step = time.perf_counter()
        prompt_responses, gen_responses = self.gen.next()
        now = time.perf_counter()
        events: list[Event] = []
        for pr in prompt_responses:
            c = self.by_uid.get(pr.uid)
            if c is not None and not c.t_prefill:
                c.t_prefill = t_step
        to_remove: list[int] = []
        for r in gen_responses:
            c = self.by_uid.get(r.uid)
            if c is None or c.done:
                continue
            ev, stopped = self._on_token(c, r, now)
            events.append(ev)
            if r.finish_reason is not None:
                self._store_caches({r.uid: (r.prompt_cache, r.all_tokens)})
                events.append(self._finish(c, r.finish_reason, now))
            elif stopped:
                to_remove.append(r.uid)
                events.append(self._finish(c, "stop", now))
        if to_remove:
            self._store_caches(self.gen.remove(to_remove, return_prompt_caches=True))
        self.stats.generation_tokens_total += len(gen_responses)
        if gen_responses:
            self.last_used = time.time()
        return events

    def _on_token(self, c: Choice, r: Any, now: float) -> tuple[Delta, bool]:
        c.generated += 1
        if c.t_first:
            if len(c.itl) < ITL_KEEP:
                c.itl.append(now - c.t_last)
        else:
            c.t_first = now
        c.t_last = now
        if r.finish_reason == "stop":
            # the EOS token itself is not text
            c.detok.finalize()
            piece = c.detok.last_segment
        else:
            c.detok.add_token(r.token)
            if r.finish_reason == "length":
                c.detok.finalize()
            piece = c.detok.last_segment
        stopped = False
        text = reasoning = ""
        if c.gate.reasoning:
            c.reasoning_tokens += 1
        if c.tool_mode:
            c.tool_text += piece
        else:
            gate = c.gate
            while True:
                out, marker = gate.feed(piece)
                piece = ""
                if gate.reasoning:
                    reasoning += out
                else:
                    text += out
                if marker is None:
                    break
                if gate.think and marker == gate.think[1] and gate.reasoning:
                    gate.set_reasoning(False)  # the answer starts: scan the rest for its markers
                elif gate.think and marker == gate.think[0] and not gate.reasoning:
                    gate.set_reasoning(True)
                elif marker == gate.tool_start and not gate.reasoning:
                    c.tool_mode = True
                    c.tool_text = marker + gate.flush()
                    break
                else:
                    stopped = True
                    c.stop_hit = marker
                    break
            if r.finish_reason is not None and not c.tool_mode:
                if gate.reasoning:
                    reasoning += gate.flush()
                else:
                    text += gate.flush()
        # every token gets a delta, text or not (held back, a stop, an EOS): clients count tokens
        logprobs = [self._logprob(r.token, r.logprobs, c.top_logprobs)] if c.want_logprobs else None
        ev = Delta(
            rid=c.rid,
            index=c.index,
            text=text,
            token_ids=[r.token],
            logprobs=logprobs,
            reasoning=reasoning,
        )
        return ev, stopped

    def _logprob(self, token: int, logprobs: mx.array, top: int) -> TokenLogprob:
        tok = self.loaded.tokenizer
        entry = TokenLogprob(
            token=_token_text(tok, token),
            token_id=token,
            logprob=finite_logprob(cast(float, logprobs[token].item())),
            bytes=token_bytes(tok, token),
        )
        if top:
            idx = mx.argpartition(-logprobs, kth=top - 1)[:top]
            vals = logprobs[idx]
            order = mx.argsort(-vals)
            idx_l: list[int] = idx[order].tolist()  # type: ignore[assignment]
            val_l: list[float] = vals[order].tolist()  # type: ignore[assignment]
            entry.top_logprobs = [
                TokenLogprob(
                    token=_token_text(tok, int(i)),
                    token_id=int(i),
                    logprob=finite_logprob(float(v)),
                    bytes=token_bytes(tok, int(i)),
                )
                for i, v in zip(idx_l, val_l, strict=True)
            ]
        return entry

    def _finish(self, c: Choice, reason: FinishReason, now: float) -> Done:
        c.done = True
        self.by_uid.pop(c.uid, None)
        active = self.requests[c.rid]
        tool_calls = None
        text = ""
        if c.tool_mode:
            tool_calls = self._parse_tool_calls(c.tool_text, active.req.tools or [])
            if tool_calls:
                reason = "tool_calls"
            else:
                text = c.tool_text  # not a valid call after all: hand the text over as content
        arrival = active.arrival
        start = c.t_prefill or arrival
        first = c.t_first or now
        decode_time = max(now - first, 1e-9)
        prompt_len = len(active.prompt) - c.cached
        done = Done(
            rid=c.rid,
            index=c.index,
            finish_reason=reason,
            text=text,
            tool_calls=tool_calls,
            stop_sequence=c.stop_hit,
            usage=Usage(
                prompt_tokens=len(active.prompt),
                completion_tokens=c.generated,
                cached_tokens=c.cached,
                reasoning_tokens=c.reasoning_tokens,
            ),
            timings=Timings(
                queue=max(start - arrival, 0.0),
                prefill=max(first - start, 0.0) if c.t_first else 0.0,
                ttft=(first - arrival) if c.t_first else 0.0,
                e2e=now - arrival,
                decode_tps=(c.generated - 1) / decode_time if c.generated > 1 else 0.0,
                prefill_tps=prompt_len / max(first - start, 1e-9) if c.t_first else 0.0,
                itl=c.itl,
            ),
        )
        if all(x.done for x in active.choices):
            self._drop(c.rid)
        return done

    def _drop(self, rid: str) -> None:
        active = self.requests.pop(rid, None)
        if active:
            for c in active.choices:
                self.by_uid.pop(c.uid, None)

    def _parse_tool_calls(self, text: str, tools: list[dict[str, Any]]) -> list[ToolCall] | None:
        tok = self.loaded.tokenizer
        start, end, parser = tok.tool_call_start, tok.tool_call_end, tok.tool_parser
        calls: list[ToolCall] = []
        for block in text.split(start)[1:]:
            body = block.split(end)[0] if end else block
            try:
                parsed = parser(body.strip(), tools)
            except Exception as e:
                log.info("tool call not parseable (%s): %r", e, body[:200])
                return None
            for call in parsed if isinstance(parsed, list) else [parsed]:
                if not isinstance(call, dict) or "name" not in call:
                    return None
                args = call.get("arguments", {})
                calls.append(
                    ToolCall(
                        id=f"call_{uuid.uuid4().hex[:24]}",
                        name=str(call["name"]),
                        arguments=args
                        if isinstance(args, str)
                        else json.dumps(args, ensure_ascii=False),
                    )
                )
        return calls or None

    def _store_caches(self, caches: dict[int, tuple[Any, list[int]]]) -> None:
        for cache, tokens in caches.values():
            if cache is not None and tokens:
                _detach(cache)
                self.prompt_cache.insert_cache(self.loaded.id, list(tokens), cache)

    def close(self) -> None:
        self.gen.close()


def _budget_processor(
    choices: list[Choice], index: int, budget: int, think_end: int
) -> Callable[[mx.array, mx.array], mx.array]:
    """Force the end of thinking once a choice has thought for `budget` tokens. The choice is
    looked up at call time: it is created after its processors."""

    def processor(tokens: mx.array, logits: mx.array) -> mx.array:
        c = choices[index]
        if c.gate.reasoning and c.reasoning_tokens >= budget:
            keep = mx.arange(logits.shape[-1]) == think_end
            return mx.where(keep[None, :], logits, -mx.inf)
        return logits

    return processor


def _detach(cache: list[Any]) -> None:
    """Give an extracted cache its own memory.

    A sequence's cache taken out of the batch is a slice, and an MLX slice keeps the whole batch
    buffer alive: kept in the prompt cache, a few of them would pin gigabytes that its byte count
    never sees. A contiguous copy holds only the sequence's own keys and values.
    """
    for c in cache:
        state = c.state
        if (
            isinstance(state, (tuple, list))
            and state
            and all(isinstance(x, mx.array) for x in state)
        ):
            c.state = tuple(mx.contiguous(x) for x in state)
    # Queued, not waited for: a wait here would stall the decode step already in flight and
    # leave the GPU idle while this step's tokens are turned into events.
    mx.async_eval([c.state for c in cache])


def _template_message(m: dict[str, Any]) -> dict[str, Any]:
    """OpenAI messages as chat templates expect them: text parts joined, tool arguments as dicts."""
    m = dict(m)
    content = m.get("content")
    if isinstance(content, list):
        m["content"] = "".join(
            p.get("text", "")
            for p in content
            if isinstance(p, dict) and p.get("type") in ("text", "input_text")
        )
    elif content is None:
        m["content"] = ""
    if m.get("tool_calls"):
        calls = []
        for tc in m["tool_calls"]:
            tc = copy.deepcopy(tc)
            fn = tc.get("function", {})
            if isinstance(fn.get("arguments"), str):
                with contextlib.suppress(json.JSONDecodeError):
                    fn["arguments"] = json.loads(fn["arguments"])
            tc["function"] = fn
            tc.setdefault("name", fn.get("name"))
            tc.setdefault("arguments", fn.get("arguments"))
            calls.append(tc)
        m["tool_calls"] = calls
    return m


# OpenAI's logprob for a token that cannot be sampled (masked by a grammar or a logit bias).
IMPOSSIBLE_LOGPROB = -9999.0


def finite_logprob(value: float) -> float:
    """A masked token's log-probability is -inf, which JSON cannot carry (json.dumps writes the
    invalid `-Infinity`, other encoders null): send OpenAI's -9999.0 instead."""
    return value if value > IMPOSSIBLE_LOGPROB else IMPOSSIBLE_LOGPROB


def _token_text(tok: Any, token: int) -> str:
    return str(tok.decode([token]))


def token_bytes(tok: Any, token: int) -> list[int]:
    """The token's own bytes (a byte-level BPE token can be half of a UTF-8 character)."""
    from mlx_lm.tokenizer_utils import BPEStreamingDetokenizer, _byte_decoder

    raw = tok.convert_ids_to_tokens(token)
    if not isinstance(raw, str):
        return list(_token_text(tok, token).encode())
    if isinstance(tok._detokenizer, BPEStreamingDetokenizer):
        table = _byte_decoder()
        if all(c in table for c in raw):
            return [table[c] for c in raw]
    if len(raw) == 6 and raw.startswith("<0x") and raw.endswith(">"):  # SentencePiece byte fallback
        return [int(raw[3:5], 16)]
    return list(raw.replace("\u2581", " ").encode())
