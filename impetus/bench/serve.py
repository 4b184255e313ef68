"""The serving benchmark: load profiles against an OpenAI-compatible endpoint, and the multi-turn
scenario that shows what prompt-cache reuse is worth.

Progress API (for widgets and notebooks): every runner takes
  on_result(RequestResult)       each request as it ends, failed or not
  on_progress(done, total)       requests finished so far, of all the run will send
  on_profile(ProfileSummary)     each load profile as it ends (serve only)
called on the event loop's thread; an exception in a callback is logged and never stops a run.
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import threading
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal, Self, TypeVar

import httpx
import numpy as np
from pydantic import BaseModel, Field, model_validator

from impetus.bench import load
from impetus.bench.machine import machine_info
from impetus.bench.prompts import PromptSource, RandomTokenPrompts, SyntheticPrompts
from impetus.bench.schema import ProfileKind, ProfileSpec, ProfileSummary, RequestResult, RunRecord
from impetus.bench.stats import summarize_profile, summarize_turns
from impetus.bench.store import ResultStore, new_run_id
from impetus.bench.streaming import (
    Endpoint,
    GenerationOptions,
    error_message,
    exception_message,
    stream_chat,
)
from impetus.bench.tokens import Tokenizer, load_tokenizer
from impetus.client.chat import SESSION_HEADER  # the conversation header deploy/nginx hashes on

log = logging.getLogger("impetus.bench")

ProgressCallback = Callable[[int, int], None]
ProfileCallback = Callable[[ProfileSummary], None]
T = TypeVar("T")


class _CommonConfig(BaseModel):
    base_url: str
    model: str
    label: str = ""
    api_key: str | None = Field(None, exclude=True, repr=False)  # never stored
    headers: dict[str, str] = Field(default_factory=dict, exclude=True, repr=False)  # nor these
    max_tokens: int = Field(128, ge=1)
    tokenizer: str | None = None  # local folder: random-token prompts, counts when no usage
    prompt_source: Literal["auto", "random", "synthetic"] = "auto"
    ignore_eos: bool = True
    temperature: float = Field(0.0, ge=0.0)
    extra_body: dict[str, Any] = Field(default_factory=dict)
    timeout: float = Field(600.0, gt=0)
    warmup: int = Field(1, ge=0)
    # Prompts come from this seed. None: a fresh seed per run (stored with the run), so that an
    # endpoint's prompt cache never sees the same prompt in two runs and flatters the second.
    seed: int | None = None

    @model_validator(mode="after")
    def _fresh_seed(self) -> Self:
        if self.seed is None:
            self.seed = secrets.randbits(31)
        return self

    def endpoint(self) -> Endpoint:
        key = self.api_key or os.environ.get("IMPETUS_API_KEY") or os.environ.get("OPENAI_API_KEY")
        return Endpoint(self.base_url, self.model, key, self.label, dict(self.headers))

    def options(self, max_tokens: int | None = None) -> GenerationOptions:
        return GenerationOptions(
            max_tokens=max_tokens or self.max_tokens,
            temperature=self.temperature,
            ignore_eos=self.ignore_eos,
            extra_body=dict(self.extra_body),
        )


class ServeConfig(_CommonConfig):
    """Profiles run for each prompt length: the concurrency levels, the fixed rates, then the
    sweep (synchronous, max throughput, then `sweep` rates evenly between them)."""

    concurrency: list[int] = Field(default_factory=list)
    rates: list[float] = Field(default_factory=list)
    sweep: int = Field(0, ge=0)
    poisson: bool = False
    max_concurrency: int | None = Field(None, ge=1)
    requests: int = Field(32, ge=1)
    prompt_tokens: list[int] = Field(default_factory=lambda: [256])

    @model_validator(mode="after")
    def _some_load(self) -> ServeConfig:
        if not (self.concurrency or self.rates or self.sweep):
            self.concurrency = [1, 4]
        if any(c < 1 for c in self.concurrency) or any(r <= 0 for r in self.rates):
            raise ValueError("concurrency levels must be >= 1 and rates > 0")
        if not self.prompt_tokens or any(p < 1 for p in self.prompt_tokens):
            raise ValueError("prompt_tokens must be one or more lengths >= 1")
        return self

    def spec(self, kind: ProfileKind, prompt_tokens: int, **load: Any) -> ProfileSpec:
        return ProfileSpec(
            kind=kind,
            requests=self.requests,
            prompt_tokens=prompt_tokens,
            max_tokens=self.max_tokens,
            **load,
        )

    def fixed_profiles(self, prompt_tokens: int) -> list[ProfileSpec]:
        specs = [self.spec("concurrent", prompt_tokens, concurrency=c) for c in self.concurrency]
        specs += [self.rate_spec(prompt_tokens, r) for r in self.rates]
        return specs

    def rate_spec(self, prompt_tokens: int, rate: float) -> ProfileSpec:
        """An open-loop profile at `rate` requests/s (from --rate, or a step of the sweep)."""
        return self.spec(
            "rate",
            prompt_tokens,
            rate=rate,
            poisson=self.poisson,
            max_concurrency=self.max_concurrency,
        )

    @property
    def profile_count(self) -> int:
        per_length = len(self.concurrency) + len(self.rates) + (self.sweep + 2 if self.sweep else 0)
        return per_length * len(self.prompt_tokens)


class MultiTurnConfig(_CommonConfig):
    """Conversations that grow by one answer and one user message a turn. Each warm turn can reuse
    the endpoint's cached prefix; its cold twin has the same length but a fresh first message."""

    conversations: int = Field(3, ge=1)
    turns: int = Field(4, ge=1)
    concurrency: int = Field(1, ge=1)  # conversations in flight at once
    first_prompt_tokens: int = Field(512, ge=1)
    turn_prompt_tokens: int = Field(64, ge=1)
    max_tokens: int = Field(64, ge=1)
    cold: bool = True
    # Each conversation sends its own id in this header (None: no header), as a chat client
    # behind a proxy that keeps conversations on one replica must (docs/scale.md): without it,
    # the proxy spreads the turns and the run measures cache misses the client would not have.
    session_header: str | None = Field(SESSION_HEADER, pattern=r"^[A-Za-z0-9!#$%&'*+.^_`|~-]+$")


@dataclass
class _Plan:
    """The prompts of one conversation, made before it starts."""

    first: tuple[str, int | None]
    cold_firsts: list[tuple[str, int | None]]
    turns: list[tuple[str, int | None]]


class _Progress:
    """Counts finished requests and forwards them to the caller's callbacks, safely."""

    def __init__(
        self,
        total: int,
        on_result: load.ResultCallback | None,
        on_progress: ProgressCallback | None,
    ) -> None:
        self.total = total
        self.done = 0
        self.on_result = on_result
        self.on_progress = on_progress

    def __call__(self, result: RequestResult) -> None:
        self.done += 1
        _safe(self.on_result, result)
        _safe(self.on_progress, self.done, self.total)


def _safe(fn: Callable[..., Any] | None, *args: Any) -> None:
    if fn is None:
        return
    try:
        fn(*args)
    except Exception:
        log.exception("benchmark callback %r failed", fn)


def _client(timeout: float, concurrency: int) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        timeout=httpx.Timeout(timeout, connect=min(10.0, timeout), pool=None),
        limits=httpx.Limits(max_connections=None, max_keepalive_connections=max(concurrency, 10)),
    )


async def describe_endpoint(
    client: httpx.AsyncClient, endpoint: Endpoint
) -> tuple[dict[str, Any], list[str]]:
    """What the endpoint says about itself: its model list, and impetus' engine status if it is one."""
    info: dict[str, Any] = {"base_url": endpoint.base_url}
    warnings: list[str] = []
    try:
        resp = await client.get(endpoint.base_url + "/models", headers=endpoint.headers, timeout=10)
        if resp.status_code == 200:
            ids = [m.get("id") for m in resp.json().get("data", []) if isinstance(m, dict)]
            info["models"] = ids[:50]
            if ids and endpoint.model not in ids:
                warnings.append(f"model {endpoint.model!r} is not in the endpoint's model list")
        else:
            info["models_error"] = error_message(resp.status_code, resp.content)
    except (httpx.HTTPError, OSError, ValueError) as exc:
        info["models_error"] = exception_message(exc)
        if isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout):
            warnings.append(f"endpoint unreachable: {exception_message(exc)}")
            return info, warnings
    try:
        resp = await client.get(
            endpoint.root + "/admin/status", headers=endpoint.headers, timeout=10
        )
        status = resp.json() if resp.status_code == 200 else None
        if isinstance(status, dict) and "state" in status and "backend" in status:
            keep = ("state", "backend", "device", "blas", "memory_budget", "models")
            info["impetus"] = {k: status[k] for k in keep if k in status}
    except (httpx.HTTPError, OSError, ValueError):
        pass  # not impetus: nothing more to learn
    return info, warnings


def _prompt_source(config: _CommonConfig, tokenizer: Tokenizer | None) -> PromptSource:
    kind = config.prompt_source
    if kind == "auto":
        kind = "random" if tokenizer is not None else "synthetic"
    if kind == "random":
        if tokenizer is None:
            raise ValueError("random-token prompts need the model's tokenizer (--tokenizer PATH)")
        return RandomTokenPrompts(tokenizer)
    return SyntheticPrompts()


async def _calibrate(
    client: httpx.AsyncClient,
    endpoint: Endpoint,
    source: SyntheticPrompts,
    rng: np.random.Generator,
) -> str | None:
    """Measure the endpoint's tokens per word with two short prompts; a warning if it can't."""
    counts = []
    for words in (32, 96):
        messages = [{"role": "user", "content": source.words(words, rng)}]
        options = GenerationOptions(max_tokens=1, ignore_eos=False)
        result, _ = await stream_chat(client, endpoint, messages, options)
        if not result.success or result.tokens_source != "usage" or result.prompt_tokens is None:
            why = result.error or "the endpoint reports no usage"
            return f"synthetic prompt lengths are estimates ({source.tokens_per_word} tokens/word): {why}"
        counts.append((words, result.prompt_tokens))
    source.calibrate(counts[0][0], counts[0][1], counts[1][0], counts[1][1])
    return None if source.calibrated else "synthetic prompt calibration gave no usable slope"


async def _prepare(
    config: _CommonConfig, client: httpx.AsyncClient, endpoint: Endpoint, prompt_tokens: int
) -> tuple[Tokenizer | None, PromptSource, np.random.Generator, dict[str, Any], list[str]]:
    tokenizer = load_tokenizer(config.tokenizer) if config.tokenizer else None
    source = _prompt_source(config, tokenizer)
    rng = np.random.default_rng(config.seed)
    info, warnings = await describe_endpoint(client, endpoint)
    if any(w.startswith("endpoint unreachable") for w in warnings):
        return tokenizer, source, rng, info, warnings
    found: list[str] = []
    if isinstance(source, SyntheticPrompts) and (
        warning := await _calibrate(client, endpoint, source, rng)
    ):
        found.append(warning)
    # Warm-up: first-call kernel compilation and lazy loading stay out of the figures.
    for _ in range(config.warmup):
        text, n = source.make(prompt_tokens, rng)
        result, _ = await stream_chat(
            client,
            endpoint,
            [{"role": "user", "content": text}],
            config.options(min(config.max_tokens, 16)),
            tokenizer=tokenizer,
            prompt_tokens=n,
        )
        if not result.success:
            found.append(f"warm-up request failed: {result.error}")
            break
    # Asked again now that the warm-up made the endpoint load the model: model lists and
    # impetus' status only then show it.
    info, warnings = await describe_endpoint(client, endpoint)
    if isinstance(source, SyntheticPrompts):
        info["tokens_per_word"] = source.tokens_per_word
    return tokenizer, source, rng, info, warnings + found


def _record(
    kind: Literal["serve", "multiturn"], config: _CommonConfig, endpoint: Endpoint
) -> RunRecord:
    params = config.model_dump(mode="json")
    params["base_url"] = endpoint.base_url
    params["api_key_set"] = endpoint.api_key is not None
    now = datetime.now(UTC)
    return RunRecord(
        id=new_run_id(now),
        kind=kind,
        created=now,
        label=endpoint.label,
        model=config.model,
        params=params,
        machine=machine_info(),
    )


async def run_serve(
    config: ServeConfig,
    *,
    on_result: load.ResultCallback | None = None,
    on_progress: ProgressCallback | None = None,
    on_profile: ProfileCallback | None = None,
    store: ResultStore | None = None,
) -> RunRecord:
    endpoint = config.endpoint()
    record = _record("serve", config, endpoint)
    progress = _Progress(config.profile_count * config.requests, on_result, on_progress)
    most = max(
        [*config.concurrency, config.max_concurrency or 0, config.requests if config.sweep else 0]
    )
    async with _client(config.timeout, most) as client:
        tokenizer, source, rng, record.endpoint, record.warnings = await _prepare(
            config, client, endpoint, config.prompt_tokens[0]
        )
        record.params["prompt_source"] = source.name
        options = config.options()

        async def run_one(spec: ProfileSpec) -> ProfileSummary:
            # Prompts are made before the clock starts: their cost is not the endpoint's.
            prompts = [source.make(spec.prompt_tokens, rng) for _ in range(spec.requests)]

            async def send(index: int) -> RequestResult:
                text, n = prompts[index]
                messages = [{"role": "user", "content": text}]
                result, _ = await stream_chat(
                    client,
                    endpoint,
                    messages,
                    options,
                    index=index,
                    tokenizer=tokenizer,
                    prompt_tokens=n,
                )
                return result

            seed = int(rng.integers(1 << 31))
            results = await load.execute(spec, send, seed=seed, on_result=progress)
            summary = summarize_profile(spec, results)
            record.profiles.append(summary)
            record.results.append(results)
            _safe(on_profile, summary)
            return summary

        for prompt_tokens in config.prompt_tokens:
            for spec in config.fixed_profiles(prompt_tokens):
                await run_one(spec)
            if config.sweep:
                sync = await run_one(config.spec("synchronous", prompt_tokens, concurrency=1))
                peak = await run_one(
                    config.spec("throughput", prompt_tokens, max_concurrency=config.max_concurrency)
                )
                rates = load.sweep_rates(
                    sync.request_throughput, peak.request_throughput, config.sweep
                )
                if len(rates) < config.sweep:
                    record.warnings.append(
                        f"sweep at prompt {prompt_tokens}: no rates between synchronous "
                        f"({sync.request_throughput:.3g}/s) and max throughput "
                        f"({peak.request_throughput:.3g}/s); rate profiles skipped"
                    )
                    progress.total -= config.sweep * config.requests
                    _safe(progress.on_progress, progress.done, progress.total)
                for rate in rates:
                    await run_one(config.rate_spec(prompt_tokens, rate))
    if store is not None:
        store.save(record)
    return record


async def run_multiturn(
    config: MultiTurnConfig,
    *,
    on_result: load.ResultCallback | None = None,
    on_progress: ProgressCallback | None = None,
    store: ResultStore | None = None,
) -> RunRecord:
    endpoint = config.endpoint()
    record = _record("multiturn", config, endpoint)
    per_turn = 2 if config.cold else 1
    progress = _Progress(config.conversations * config.turns * per_turn, on_result, on_progress)
    results: list[RequestResult] = []
    async with _client(config.timeout, config.concurrency) as client:
        tokenizer, source, rng, record.endpoint, record.warnings = await _prepare(
            config, client, endpoint, config.first_prompt_tokens
        )
        record.params["prompt_source"] = source.name
        options = config.options()
        limit = asyncio.Semaphore(config.concurrency)
        t0 = time.perf_counter()  # stream_chat stamps `sent` on the same clock
        # Every prompt of every conversation made up front, in a fixed order: same seed, same run.
        plans = [
            _Plan(
                first=source.make(config.first_prompt_tokens, rng),
                cold_firsts=[
                    source.make(config.first_prompt_tokens, rng) for _ in range(config.turns)
                ],
                turns=[
                    source.make(config.turn_prompt_tokens, rng) for _ in range(config.turns - 1)
                ],
            )
            for _ in range(config.conversations)
        ]

        def keep(result: RequestResult, conversation: int, turn: int, cold: bool) -> None:
            result.conversation, result.turn, result.cold = conversation, turn, cold
            result.index = len(results)
            result.sent -= t0
            results.append(result)
            progress(result)

        async def ask(
            messages: list[dict[str, Any]], known: int | None, session: str
        ) -> tuple[RequestResult, str]:
            # `known`: the prompt tokens as counted here, for endpoints that send no usage
            headers = {config.session_header: session} if config.session_header else None
            return await stream_chat(
                client,
                endpoint,
                messages,
                options,
                tokenizer=tokenizer,
                prompt_tokens=known,
                headers=headers,
            )

        async def conversation(c: int) -> None:
            plan = plans[c]
            session = f"{record.id}-{c}"  # unique to this run: no earlier run's cache helps
            first_text, first_n = plan.first
            messages: list[dict[str, Any]] = [{"role": "user", "content": first_text}]
            known = first_n  # prompt tokens as far as we can count them (content only)
            async with limit:
                for turn in range(config.turns):
                    result, answer = await ask(messages, known, session)
                    keep(result, c, turn, False)
                    if config.cold:
                        cold_text, _ = plan.cold_firsts[turn]
                        cold_messages = [{"role": "user", "content": cold_text}, *messages[1:]]
                        # a fresh first message makes a new conversation: its own session
                        cold, _ = await ask(cold_messages, known, f"{session}-cold{turn}")
                        keep(cold, c, turn, True)
                    if not result.success:
                        # The conversation can't go on without its answer: the turns it would
                        # have had are failures with that reason, not silently missing.
                        for later in range(turn + 1, config.turns):
                            for is_cold in (False, True)[:per_turn]:
                                lost = RequestResult(
                                    index=0,
                                    success=False,
                                    error=f"conversation stopped: turn {turn} failed ({result.error})",
                                    sent=time.perf_counter(),
                                )
                                keep(lost, c, later, is_cold)
                        return
                    if turn + 1 < config.turns:
                        user_text, user_n = plan.turns[turn]
                        messages += [
                            {"role": "assistant", "content": answer},
                            {"role": "user", "content": user_text},
                        ]
                        if (
                            known is not None
                            and user_n is not None
                            and result.output_tokens is not None
                        ):
                            known += result.output_tokens + user_n
                        else:
                            known = None

        await asyncio.gather(*(conversation(c) for c in range(config.conversations)))
    results.sort(key=lambda r: (r.conversation or 0, r.turn or 0, r.cold))
    for i, r in enumerate(results):
        r.index = i
    record.results = [results]
    record.turns = summarize_turns(results)
    failed = sum(1 for r in results if not r.success)
    if failed:
        record.warnings.append(f"{failed} of {len(results)} requests failed")
    if store is not None:
        store.save(record)
    return record


def run_sync(coro: Coroutine[Any, Any, T]) -> T:
    """Run a benchmark coroutine from blocking code, even inside a notebook's running loop
    (there it runs on a private loop in a worker thread; callbacks come from that thread)."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["value"] = asyncio.run(coro)
        except BaseException as exc:  # re-raised in the caller's thread
            box["error"] = exc

    thread = threading.Thread(target=target, name="impetus-bench")
    thread.start()
    thread.join()
    if "error" in box:
        raise box["error"]
    value: T = box["value"]
    return value
