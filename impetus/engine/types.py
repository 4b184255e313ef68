"""The vocabulary shared by the engine process and its clients.

Plain pydantic models: they cross the process boundary as msgpack'd dicts (`model_dump`) and are
rebuilt on the other side, so nothing here may hold an MLX object.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field

FinishReason = Literal["stop", "length", "tool_calls", "cancelled", "error"]


class SamplingParams(BaseModel):
    temperature: float = Field(1.0, ge=0.0, le=2.0)
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    top_k: int = Field(0, ge=0)
    min_p: float = Field(0.0, ge=0.0, le=1.0)
    repetition_penalty: float | None = Field(None, gt=0.0)
    presence_penalty: float = Field(0.0, ge=-2.0, le=2.0)
    frequency_penalty: float = Field(0.0, ge=-2.0, le=2.0)
    # How many recent tokens the penalties look at; OpenAI's apply to the whole output.
    penalty_context: int = Field(256, ge=1)
    logit_bias: dict[int, float] = Field(default_factory=dict)
    seed: int | None = None


class GenerateRequest(BaseModel):
    """One generation: a chat (messages through the model's chat template) or a raw prompt."""

    model: str
    messages: list[dict[str, Any]] | None = None
    prompt: str | list[int] | None = None
    tools: list[dict[str, Any]] | None = None
    tool_choice: Any = None
    chat_template_kwargs: dict[str, Any] = Field(default_factory=dict)
    sampling: SamplingParams = Field(default_factory=SamplingParams)
    max_tokens: int | None = Field(
        None, description="None: up to the context length / server default"
    )
    stop: list[str] = Field(default_factory=list)
    n: int = Field(1, ge=1, le=128)
    logprobs: bool = False
    top_logprobs: int = Field(0, ge=0, le=20)
    # {"type": "json_object"} or {"type": "json_schema", "json_schema": {"schema": {...}}}
    response_format: dict[str, Any] | None = None
    ignore_eos: bool = False  # benchmarks: generate exactly max_tokens


class TokenLogprob(BaseModel):
    token: str
    token_id: int
    logprob: float
    bytes: list[int] | None = None
    top_logprobs: list[TokenLogprob] = Field(default_factory=list)


class ToolCall(BaseModel):
    id: str
    name: str
    arguments: str  # JSON text, as OpenAI sends it


class Usage(BaseModel):
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int = 0

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


class Timings(BaseModel):
    """Seconds, on the engine's monotonic clock, relative to the request's arrival in the engine."""

    queue: float = 0.0  # arrival -> admitted to the batch
    prefill: float = 0.0  # admitted -> prompt processed
    ttft: float = 0.0  # arrival -> first generated token
    e2e: float = 0.0  # arrival -> done
    decode_tps: float = 0.0  # generated tokens / decode time
    prefill_tps: float = 0.0
    itl: list[float] = Field(
        default_factory=list, description="gaps between successive token deltas"
    )


class Event(BaseModel):
    """What a generation yields. `delta` carries text; `done` ends one choice; `error` ends all."""

    type: Literal["start", "delta", "done", "error"]
    index: int = 0  # which of the n choices
    text: str = ""
    token_ids: list[int] = Field(default_factory=list)
    logprobs: list[TokenLogprob] | None = None
    tool_calls: list[ToolCall] | None = None
    finish_reason: FinishReason | None = None
    usage: Usage | None = None  # on start: prompt / cached tokens; on done: the choice's totals
    timings: Timings | None = None
    error: EngineErrorInfo | None = None


class EngineErrorInfo(BaseModel):
    code: (
        str  # model_not_found | invalid_request | context_length_exceeded | engine_restarted | ...
    )
    message: str
    param: str | None = None


class EngineError(Exception):
    """A failure the engine reports about one request; `code` maps to an HTTP status in the api."""

    def __init__(self, code: str, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.param = param

    @property
    def info(self) -> EngineErrorInfo:
        return EngineErrorInfo(code=self.code, message=self.message, param=self.param)

    @classmethod
    def from_info(cls, info: EngineErrorInfo) -> EngineError:
        return cls(info.code, info.message, info.param)


class EmbedResult(BaseModel):
    model: str
    vectors: list[list[float]]
    prompt_tokens: int


class ModelState(BaseModel):
    id: str
    kind: Literal["chat", "embedding"]
    path: str
    dtype: str
    source_dtype: str
    memory_bytes: int
    context_length: int
    loaded_at: float
    last_used: float
    pinned: bool = False
    keep_alive: float | None = None
    active_requests: int = 0
    load_seconds: float = 0.0
    supports_tools: bool = False


class EngineStats(BaseModel):
    running: int = 0
    waiting: int = 0
    prompt_tokens_total: int = 0
    generation_tokens_total: int = 0
    requests_total: int = 0
    prompt_cache_queries: int = 0  # requests that looked in the prompt cache
    prompt_cache_hits: int = 0  # ... and found a usable prefix
    prompt_cache_hit_tokens: int = 0
    prompt_cache_query_tokens: int = 0
    prompt_cache_bytes: int = 0
    decode_tps_recent: float = 0.0  # tokens/s generated over the last few seconds, all requests


class EngineStatus(BaseModel):
    state: Literal["starting", "ready", "restarting", "stopped", "failed"]
    pid: int | None = None
    backend: str = "cpu"  # cpu | metal | cuda
    device: str = ""
    blas: str = ""  # the BLAS library loaded, or "" for MLX's reference BLAS
    memory_budget: int = 0
    memory_used: int = 0  # MLX active memory
    peak_memory: int = 0
    process_rss: int = 0
    restarts: int = 0
    last_error: str | None = None
    models: list[ModelState] = Field(default_factory=list)
    stats: EngineStats = Field(default_factory=EngineStats)


Event.model_rebuild()
TokenLogprob.model_rebuild()
