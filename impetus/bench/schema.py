"""What a benchmark measures and stores: plain pydantic models, JSON in and out of the result store.

Times are seconds (float) on the client's monotonic clock; tables and charts show milliseconds.
Definitions follow vLLM's `benchmark_serving`:

* TTFT: request sent -> first chunk that carries generated text.
* ITL: the gaps between successive chunks that carry generated text (one chunk may hold several
  tokens; like vLLM, the gap is per chunk, pooled over all requests of a profile).
* TPOT: (e2e - TTFT) / (output tokens - 1), per request.
* e2e: request sent -> last data chunk of the stream.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, Field

RunKind = Literal["serve", "multiturn", "engine"]
ProfileKind = Literal["synchronous", "concurrent", "throughput", "rate"]
TokenSource = Literal["usage", "tokenizer", "none"]


class RequestResult(BaseModel):
    """One request as the client saw it. A failure keeps its reason and is never timed as fast."""

    index: int  # issue order within its profile
    success: bool
    error: str | None = None  # why it failed: "HTTP 500: ...", "ConnectError: ...", "no output"
    status_code: int | None = None
    scheduled: float = 0.0  # when the load profile wanted it sent, seconds after the profile start
    sent: float = 0.0  # when it was sent (sent - scheduled: client-side queueing)
    elapsed: float = 0.0  # sent -> success or failure, whatever happened
    ttft: float | None = None
    e2e: float | None = None  # None for failures: their time is in `elapsed`, not in latency stats
    itl: list[float] = Field(default_factory=list)
    prompt_tokens: int | None = None
    cached_tokens: int | None = None
    output_tokens: int | None = None
    tokens_source: TokenSource = "none"
    finish_reason: str | None = None
    chunks: int = 0  # chunks that carried text
    # multi-turn scenario: which conversation / turn, and whether the prefix was made unique (cold)
    conversation: int | None = None
    turn: int | None = None
    cold: bool = False

    @property
    def tpot(self) -> float | None:
        if not self.success or self.ttft is None or self.e2e is None:
            return None
        if self.output_tokens is None or self.output_tokens < 2:
            return None
        return (self.e2e - self.ttft) / (self.output_tokens - 1)


class Stats(BaseModel):
    """Distribution of one metric (seconds or tokens/s) over the requests that succeeded."""

    count: int = 0
    mean: float | None = None
    std: float | None = None
    min: float | None = None
    p50: float | None = None
    p90: float | None = None
    p99: float | None = None
    max: float | None = None


class ProfileSpec(BaseModel):
    """How requests are issued: a closed loop of `concurrency` clients, or open-loop arrivals."""

    kind: ProfileKind
    requests: int = Field(ge=1)
    concurrency: int | None = Field(None, ge=1)  # synchronous: 1; throughput: all requests at once
    rate: float | None = Field(None, gt=0)  # requests/s for kind == "rate"
    poisson: bool = False  # rate: exponential gaps instead of constant ones
    max_concurrency: int | None = Field(None, ge=1)  # rate: cap on requests in flight
    prompt_tokens: int = Field(ge=1)
    max_tokens: int = Field(ge=1)

    @property
    def name(self) -> str:
        if self.kind == "rate":
            load = f"rate {self.rate:.3g}/s" + (" poisson" if self.poisson else "")
        elif self.kind == "concurrent":
            load = f"c={self.concurrency}"
        else:
            load = self.kind
        return f"{load} p{self.prompt_tokens}/g{self.max_tokens}"


class ProfileSummary(BaseModel):
    spec: ProfileSpec
    requests: int  # issued
    completed: int
    failed: int
    failure_reasons: dict[str, int] = Field(default_factory=dict)
    duration: float  # first send -> last request finished (successful or not)
    request_throughput: float  # completed requests / duration
    output_throughput: float | None  # output tokens of completed requests / duration
    total_token_throughput: float | None  # (prompt + output tokens) / duration
    mean_concurrency: float  # sum of request times / duration: the load the endpoint really saw
    prompt_tokens: Stats = Field(default_factory=Stats)
    cached_tokens: Stats = Field(default_factory=Stats)  # prompt tokens the endpoint had cached
    output_tokens: Stats = Field(default_factory=Stats)
    ttft: Stats = Field(default_factory=Stats)
    tpot: Stats = Field(default_factory=Stats)
    itl: Stats = Field(default_factory=Stats)
    e2e: Stats = Field(default_factory=Stats)
    short_outputs: int = 0  # completed with fewer tokens than max_tokens (EOS not ignored?)
    tokens_source: dict[str, int] = Field(default_factory=dict)
    warnings: list[str] = Field(default_factory=list)


class TurnSummary(BaseModel):
    """One turn of the multi-turn scenario: warm (conversation prefix reusable) vs cold."""

    turn: int
    prompt_tokens: Stats = Field(default_factory=Stats)
    cached_tokens: Stats = Field(default_factory=Stats)
    ttft: Stats = Field(default_factory=Stats)
    cold_ttft: Stats = Field(default_factory=Stats)
    failed: int = 0
    speedup: float | None = None  # cold median TTFT / warm median TTFT


class EngineTrial(BaseModel):
    trial: int
    prompt_tokens: int
    generation_tokens: int
    cached_tokens: int = 0
    prompt_tps: float
    generation_tps: float
    peak_memory: int  # bytes
    wall: float  # seconds for the whole request


class EngineSide(BaseModel):
    """One way of running the model (the impetus engine, or mlx_lm in-process) over N trials."""

    name: str
    load_seconds: float
    dtype: str = ""
    trials: list[EngineTrial] = Field(default_factory=list)
    prompt_tps: Stats = Field(default_factory=Stats)
    generation_tps: Stats = Field(default_factory=Stats)
    peak_memory: int = 0


class EngineSummary(BaseModel):
    sides: list[EngineSide]
    # engine / raw for prompt_tps and generation_tps means, when both sides ran
    ratio: dict[str, float] = Field(default_factory=dict)
    warnings: list[str] = Field(default_factory=list)


class RunRecord(BaseModel):
    """A stored benchmark run: what was asked, where it ran, what came out."""

    id: str
    kind: RunKind
    created: datetime
    label: str  # the endpoint's name (or "engine")
    model: str
    params: dict[str, Any]
    machine: dict[str, Any]
    endpoint: dict[str, Any] = Field(default_factory=dict)  # what the endpoint said about itself
    profiles: list[ProfileSummary] = Field(default_factory=list)  # serve
    turns: list[TurnSummary] = Field(default_factory=list)  # multiturn
    engine: EngineSummary | None = None  # engine
    # per-request results, one list per profile (serve) or one list (multiturn); not in summaries
    results: list[list[RequestResult]] = Field(default_factory=list)
    warnings: list[str] = Field(default_factory=list)

    def summary(self) -> RunRecord:
        """The record without per-request results (what `--json` prints, what history loads)."""
        return self.model_copy(update={"results": []})
