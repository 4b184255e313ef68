"""The vocabulary of the engine boundary: requests, events, status, model states and error codes.

Every shape that crosses between the engine process and the api (and that the Python clients read
back) is declared here once, as msgspec `Struct`s, and travels as MessagePack:

    api ──Command──> engine        Generate, Cancel, and the calls Load / Unload / Embed /
                                   Tokenize / GetStatus / Ping / Shutdown (each answered by a Reply)
    api <──[Message, ...]── engine one frame per engine step: Start, Delta, Done, Failed of every
                                   request that produced something, plus Reply and Hello

This module imports nothing of impetus and nothing but msgspec, so the model package, the engine,
the api and the clients can all share it without pulling in ZMQ, MLX or HTTP. Structs are typed
at the edges of the process boundary by the decoder itself (no second validation pass): the api
validates a request once against its HTTP schema, builds a `GenerateRequest`, and the engine
process decodes that same typed value from the wire. msgspec was chosen over pydantic by
measurement (`benchmarks/wire_codec.py`, figures in docs/benchmarks.md): a step's events are
encoded and decoded several times faster than pydantic models or hand-read dicts.
"""

from __future__ import annotations

from typing import Annotated, Any, ClassVar, Literal, TypeVar, cast, get_args

import msgspec
from msgspec import Meta, Raw, Struct

__all__ = [
    "ERROR_CODES",
    "AcceleratorInfo",
    "Cancel",
    "Command",
    "Done",
    "Delta",
    "EmbedResult",
    "Embed",
    "EngineError",
    "EngineState",
    "EngineStats",
    "EngineStatus",
    "ErrorCode",
    "ErrorInfo",
    "Event",
    "Failed",
    "FinishReason",
    "Generate",
    "GenerateRequest",
    "GetStatus",
    "Hello",
    "Load",
    "Message",
    "ModelState",
    "RanksInfo",
    "Ping",
    "Reply",
    "SamplingParams",
    "Shutdown",
    "Start",
    "Timings",
    "TokenLogprob",
    "Tokenize",
    "ToolCall",
    "Unload",
    "Usage",
    "convert",
    "decode_command",
    "decode_messages",
    "decode_result",
    "encode",
    "to_builtins",
]

FinishReason = Literal["stop", "length", "tool_calls", "cancelled", "error"]
EngineState = Literal["starting", "ready", "restarting", "stopped", "failed"]
ModelKind = Literal["chat", "embedding"]

# Every code an EngineError (and so a ModelError) may carry. The api maps each to an HTTP status
# and an OpenAI error type (impetus.api.errors.ENGINE_CODES, checked complete by a test).
ErrorCode = Literal[
    "invalid_request",  # a malformed or refused request (the param says which field)
    "context_length_exceeded",  # prompt (+ max_tokens) longer than the model's context
    "model_not_found",  # unknown id, repo or file
    "queue_full",  # too many open requests: retry shortly
    "out_of_memory",  # the model (or a request's KV cache beside those running) does not fit
    "kv_cache_too_large",  # a request's KV cache exceeds what the budget leaves after the weights
    "model_load_failed",  # corrupted / unparseable / unsupported files
    "download_failed",  # network or hub failure while downloading
    "cancelled",  # a download or conversion stopped at the caller's request
    "engine_restarted",  # the engine process died during the request
    "model_unloaded",  # unloaded (admin, eviction) while the request ran
    "engine_unavailable",  # not started, stopped, or failed to start
    "timeout",  # ran past a time limit
    "internal",  # a bug: see the engine's log
]
ERROR_CODES: tuple[str, ...] = get_args(ErrorCode)


class _Struct(Struct, kw_only=True, omit_defaults=True):
    """Wire messages: keyword construction; fields left at their default are not sent."""


class _Frame(_Struct, array_like=True):
    """Tagged messages (commands, events, replies): sent as compact arrays, the tag first."""


class _Record(Struct, kw_only=True):
    """Records the api also shows as JSON (status, model states): every field always present."""


# ---------------------------------------------------------------- requests (api -> engine)


class SamplingParams(_Struct):
    temperature: Annotated[float, Meta(ge=0.0, le=2.0)] = 1.0
    top_p: Annotated[float, Meta(gt=0.0, le=1.0)] = 1.0
    top_k: Annotated[int, Meta(ge=0)] = 0
    min_p: Annotated[float, Meta(ge=0.0, le=1.0)] = 0.0
    repetition_penalty: Annotated[float, Meta(gt=0.0)] | None = None
    presence_penalty: Annotated[float, Meta(ge=-2.0, le=2.0)] = 0.0
    frequency_penalty: Annotated[float, Meta(ge=-2.0, le=2.0)] = 0.0
    # How many recent tokens the penalties look at; OpenAI's apply to the whole output.
    penalty_context: Annotated[int, Meta(ge=1)] = 256
    logit_bias: dict[int, float] = {}
    seed: int | None = None


class GenerateRequest(_Struct):
    """One generation: a chat (messages through the model's chat template) or a raw prompt."""

    model: str
    messages: list[dict[str, Any]] | None = None
    prompt: str | list[int] | None = None
    tools: list[dict[str, Any]] | None = None
    tool_choice: Any = None  # "auto" | "none" | "required" | {"type": "function", ...}
    chat_template_kwargs: dict[str, Any] = {}
    sampling: SamplingParams = msgspec.field(default_factory=SamplingParams)
    max_tokens: int | None = None  # None: up to the context length / server default
    stop: list[str] = []
    n: Annotated[int, Meta(ge=1, le=128)] = 1
    logprobs: bool = False
    top_logprobs: Annotated[int, Meta(ge=0, le=20)] = 0
    # {"type": "json_object"} or {"type": "json_schema", "json_schema": {"schema": {...}}}
    response_format: dict[str, Any] | None = None
    ignore_eos: bool = False  # benchmarks: generate exactly max_tokens
    # reasoning models: end the thinking after this many tokens (None: let the model decide)
    reasoning_budget: Annotated[int, Meta(ge=0)] | None = None
    # a smaller context than the model's for this request (Ollama's num_ctx): prompt + output
    context_length: Annotated[int, Meta(ge=1)] | None = None


class Generate(_Frame, tag="generate"):
    rid: str
    request: GenerateRequest


class Cancel(_Frame, tag="cancel"):
    rid: str


class Load(_Frame, tag="load"):
    """Load a model (answered with its ModelState); `allow_paths=False` for untrusted ids."""

    id: int
    model: str
    dtype: str | None = None
    keep_alive: float | None = None  # seconds; < 0 pins it
    allow_paths: bool = True


class Unload(_Frame, tag="unload"):
    id: int
    model: str  # answered with a bool: whether it was loaded


class Embed(_Frame, tag="embed"):
    id: int
    model: str
    texts: list[str]  # answered with an EmbedResult


class Tokenize(_Frame, tag="tokenize"):
    id: int
    request: GenerateRequest  # answered with the prompt's token ids


class GetStatus(_Frame, tag="status"):
    id: int  # answered with an EngineStatus


class Ping(_Frame, tag="ping"):
    id: int  # answered with the engine's pid


class Shutdown(_Frame, tag="shutdown"):
    id: int


Call = Load | Unload | Embed | Tokenize | GetStatus | Ping | Shutdown
Command = Generate | Cancel | Call


# ---------------------------------------------------------------- events (engine -> api)


class TokenLogprob(_Struct):
    token: str
    token_id: int
    logprob: float
    bytes: list[int] | None = None
    top_logprobs: list[TokenLogprob] = []


class ToolCall(_Struct):
    id: str
    name: str
    arguments: str  # JSON text, as OpenAI sends it


class Usage(_Struct):
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int = 0
    reasoning_tokens: int = 0  # of completion_tokens, those generated while thinking

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


class Timings(_Struct):
    """Seconds, on the engine's monotonic clock, relative to the request's arrival in the engine."""

    queue: float = 0.0  # arrival -> admitted to the batch
    prefill: float = 0.0  # admitted -> prompt processed
    ttft: float = 0.0  # arrival -> first generated token
    e2e: float = 0.0  # arrival -> done
    decode_tps: float = 0.0  # generated tokens / decode time
    prefill_tps: float = 0.0
    itl: list[float] = []  # gaps between successive token deltas


class ErrorInfo(_Struct):
    code: str  # an ErrorCode; a plain str on the wire so that one odd code cannot spoil a frame
    message: str
    param: str | None = None


# The events of one generation, in order: one Start, then Deltas, then one Done per choice; or a
# Failed that ends all of its choices. `type` (a class constant, not a field) names the kind.


class Start(_Frame, tag="start"):
    """The request was admitted: its prompt is tokenized and in the batch."""

    type: ClassVar[Literal["start"]] = "start"
    rid: str
    model: str  # the canonical id the request was served by
    prompt_tokens: int
    cached_tokens: int = 0  # prompt tokens found in the prompt cache
    max_tokens: int = 0


class Delta(_Frame, tag="delta"):
    """One generated token of one choice (its text may be empty: held back, EOS, a stop)."""

    type: ClassVar[Literal["delta"]] = "delta"
    rid: str
    index: int  # which of the n choices
    text: str
    token_ids: list[int]
    logprobs: list[TokenLogprob] | None = None
    # a reasoning model's thinking (between its think markers), apart from the answer's text
    reasoning: str = ""


class Done(_Frame, tag="done"):
    """One choice ended; `text` is what the stop-string gate still held, if anything."""

    type: ClassVar[Literal["done"]] = "done"
    rid: str
    index: int
    finish_reason: FinishReason
    usage: Usage
    timings: Timings
    text: str = ""
    tool_calls: list[ToolCall] | None = None
    stop_sequence: str | None = None  # the stop string that ended the choice, if one did


class Failed(_Frame, tag="error"):
    """The request failed as a whole (every open choice ends)."""

    type: ClassVar[Literal["error"]] = "error"
    rid: str
    error: ErrorInfo


Event = Start | Delta | Done | Failed


class Reply(_Frame, tag="reply"):
    """The answer to a call: `result` is the encoded value (typed by the call), or an error."""

    id: int
    result: Raw = Raw(b"\xc0")  # MessagePack nil
    error: ErrorInfo | None = None


class Hello(_Frame, tag="hello"):
    """The engine process's first message: it is up and listening. `ranks`: the group of
    processes it leads when a model runs across several (impetus.engine.distributed)."""

    pid: int
    blas: str = ""
    ranks: RanksInfo | None = None


Message = Event | Reply | Hello


# ---------------------------------------------------------------- status


class RanksInfo(_Record):
    """The processes (ranks) of MLX's distributed layer that run every model together; rank 0 is
    the engine the api talks to."""

    size: int
    backend: str  # the mx.distributed backend: ring | nccl | mpi | jaccl
    pids: list[int]  # by rank
    launcher: str  # impetus (`--ranks N`, local) | external (mlx.launch ran impetus serve)


class ModelState(_Record):
    id: str
    kind: ModelKind
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
    supports_thinking: bool = False  # a reasoning model: its output has think markers
    ranks: int = 1  # processes its weights are sharded over (tensor parallel)


class EngineStats(_Record):
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


class AcceleratorInfo(_Record):
    """What the engine's accelerator is doing (impetus.engine.telemetry); None where a backend
    cannot read a field. `what` says what `utilization_percent` measures."""

    kind: str  # cuda | metal | cpu
    source: str  # nvml | ioreg+mlx | mlx | psutil
    name: str
    what: str
    utilization_percent: float | None = None
    memory_used_bytes: int | None = None  # the whole device, all processes
    memory_total_bytes: int | None = None
    process_memory_bytes: int | None = None  # the engine process's own share
    power_watts: float | None = None
    temperature_celsius: float | None = None
    time: float = 0.0


class EngineStatus(_Record):
    state: EngineState
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
    models: list[ModelState] = []
    stats: EngineStats = msgspec.field(default_factory=EngineStats)
    accelerator: AcceleratorInfo | None = None
    ranks: RanksInfo | None = None  # None: one process


class EmbedResult(_Record):
    model: str
    vectors: list[list[float]]
    prompt_tokens: int


# ---------------------------------------------------------------- errors


class EngineError(Exception):
    """A failure the engine reports about one request; `code` maps to an HTTP status in the api."""

    def __init__(self, code: ErrorCode, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.code: ErrorCode = code
        self.message = message
        self.param = param

    @property
    def info(self) -> ErrorInfo:
        return ErrorInfo(code=self.code, message=self.message, param=self.param)

    @classmethod
    def from_info(cls, info: ErrorInfo) -> EngineError:
        code = info.code if info.code in ERROR_CODES else "internal"
        return cls(cast(ErrorCode, code), info.message, info.param)


# ---------------------------------------------------------------- encoding

T = TypeVar("T")

_encoder = msgspec.msgpack.Encoder()
_messages = msgspec.msgpack.Decoder(list[Message])
_commands = msgspec.msgpack.Decoder(Command)


def encode(obj: Any) -> bytes:
    """MessagePack of a Struct, a list of them (one engine frame), or a call's result."""
    return _encoder.encode(obj)


def decode_messages(raw: bytes) -> list[Message]:
    """One frame from the engine: typed while decoding (a frame that is not one raises)."""
    return _messages.decode(raw)


def decode_command(raw: bytes) -> Command:
    return _commands.decode(raw)


def decode_result(reply: Reply, type: type[T]) -> T:
    """The typed result of a call, or its EngineError raised."""
    if reply.error is not None:
        raise EngineError.from_info(reply.error)
    return msgspec.msgpack.decode(reply.result, type=type)


def convert(data: Any, type: type[T]) -> T:
    """Plain Python data (a dict from JSON, keyword arguments) checked into a vocabulary type;
    raises `msgspec.ValidationError` naming the field at fault."""
    return msgspec.convert(data, type, strict=False)


def to_builtins(obj: Any) -> Any:
    """A Struct as JSON-ready dicts and lists (fields left at their default included)."""
    return msgspec.to_builtins(obj)
