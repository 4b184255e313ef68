"""Pydantic schemas of the OpenAI-compatible API: what requests may hold, what responses hold.

Requests ignore unknown fields (`extra="ignore"`), like OpenAI's API does for parameters it
does not know; every field declared here is honoured. impetus extensions beyond OpenAI's set
(`top_k`, `min_p`, `repetition_penalty`, `chat_template_kwargs`, `ignore_eos`) follow vLLM's names.
The same classes generate `/openapi.json`.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from impetus.config import DType
from impetus.models.types import RegistryEntry
from impetus.protocol import EngineStatus


class ParamError(ValueError):
    """A validation failure about one parameter, raised where pydantic cannot say which
    (model-level validators); `APIError.from_validation` reports `param`."""

    def __init__(self, param: str, message: str) -> None:
        super().__init__(message)
        self.param = param


class _Request(BaseModel):
    model_config = ConfigDict(extra="ignore", populate_by_name=True)


class _Response(BaseModel):
    model_config = ConfigDict(extra="allow")


# ---------------------------------------------------------------- shared request parts


class StreamOptions(_Request):
    include_usage: bool = Field(
        False, description="send a last chunk with the usage of the whole request"
    )
    continuous_usage_stats: bool = Field(
        False,
        description="also send the usage so far with every chunk (vLLM's option): a client that "
        "stops reading early still knows how many tokens it got",
    )


class JSONSchemaFormat(_Request):
    name: str = "response"
    description: str | None = None
    schema_: dict[str, Any] = Field(default_factory=dict, alias="schema")
    strict: bool | None = None


class ResponseFormat(_Request):
    type: Literal["text", "json_object", "json_schema"]
    json_schema: JSONSchemaFormat | None = None

    @model_validator(mode="after")
    def _schema_given(self) -> ResponseFormat:
        if self.type == "json_schema" and self.json_schema is None:
            raise ValueError("'json_schema' is required when type is 'json_schema'")
        return self


class FunctionDefinition(_Request):
    name: str = Field(..., min_length=1, max_length=64)
    description: str | None = None
    parameters: dict[str, Any] | None = None
    strict: bool | None = None


class Tool(_Request):
    type: Literal["function"] = "function"
    function: FunctionDefinition


class NamedFunction(_Request):
    name: str


class NamedToolChoice(_Request):
    type: Literal["function"] = "function"
    function: NamedFunction


ToolChoice = Literal["none", "auto", "required"] | NamedToolChoice


class _SamplingFields(_Request):
    """Sampling parameters common to chat and legacy completions."""

    model: str = Field(..., min_length=1)
    temperature: float | None = Field(None, ge=0.0, le=2.0)
    top_p: float | None = Field(None, gt=0.0, le=1.0)
    n: int | None = Field(None, ge=1, le=128)
    stream: bool | None = False
    stream_options: StreamOptions | None = None
    stop: str | list[str] | None = None
    presence_penalty: float | None = Field(None, ge=-2.0, le=2.0)
    frequency_penalty: float | None = Field(None, ge=-2.0, le=2.0)
    logit_bias: dict[str, float] | None = None
    seed: int | None = None
    # extensions (vLLM's names)
    top_k: int | None = Field(
        None, ge=0, description="impetus extension: keep the k most likely tokens (0: off)"
    )
    min_p: float | None = Field(None, ge=0.0, le=1.0, description="impetus extension")
    repetition_penalty: float | None = Field(None, gt=0.0, description="impetus extension")
    ignore_eos: bool | None = Field(
        None, description="impetus extension: generate exactly max_tokens"
    )

    @field_validator("stop")
    @classmethod
    def _stop_strings(cls, v: str | list[str] | None) -> str | list[str] | None:
        items = [v] if isinstance(v, str) else (v or [])
        if len(items) > 16:
            raise ValueError("at most 16 stop sequences")
        if any(s == "" for s in items):
            raise ValueError("stop sequences must not be empty")
        return v

    @field_validator("logit_bias")
    @classmethod
    def _bias_keys(cls, v: dict[str, float] | None) -> dict[str, float] | None:
        for key, bias in (v or {}).items():
            if not key.lstrip("-").isdigit() or int(key) < 0:
                raise ValueError(f"keys must be token ids, got {key!r}")
            if not -100.0 <= bias <= 100.0:
                raise ValueError(f"bias for token {key} must be within [-100, 100]")
        return v


# ---------------------------------------------------------------- chat completions


class ChatMessage(_Request):
    """A message as OpenAI sends it; extra keys (name, tool_call_id, ...) reach the chat template."""

    model_config = ConfigDict(extra="allow")
    role: Literal["system", "developer", "user", "assistant", "tool", "function"]
    content: str | list[dict[str, Any]] | None = None
    name: str | None = None
    tool_calls: list[dict[str, Any]] | None = None
    tool_call_id: str | None = None


class ChatCompletionRequest(_SamplingFields):
    messages: list[ChatMessage] = Field(..., min_length=1)
    max_tokens: int | None = Field(
        None, ge=1, description="deprecated by OpenAI; max_completion_tokens wins"
    )
    max_completion_tokens: int | None = Field(None, ge=1)
    logprobs: bool | None = False
    top_logprobs: int | None = Field(None, ge=0, le=20)
    tools: list[Tool] | None = None
    tool_choice: ToolChoice | None = None
    response_format: ResponseFormat | None = None
    chat_template_kwargs: dict[str, Any] | None = Field(
        None, description="impetus extension: extra variables for the chat template"
    )
    include_reasoning: bool | None = Field(
        True,
        description="vLLM's extension: false leaves a reasoning model's thinking "
        "(reasoning_content) out of the response",
    )

    @model_validator(mode="after")
    def _consistent(self) -> ChatCompletionRequest:
        if self.top_logprobs and not self.logprobs:
            raise ParamError("top_logprobs", "'top_logprobs' requires 'logprobs' to be true")
        if isinstance(self.tool_choice, NamedToolChoice):
            names = {t.function.name for t in self.tools or []}
            if self.tool_choice.function.name not in names:
                raise ParamError(
                    "tool_choice",
                    f"tool_choice names an unknown tool: {self.tool_choice.function.name!r}",
                )
        elif self.tool_choice == "required" and not self.tools:
            raise ParamError("tool_choice", "tool_choice 'required' needs 'tools'")
        return self


class TopLogprob(_Response):
    token: str
    logprob: float
    bytes: list[int] | None = None


class ChatLogprobToken(TopLogprob):
    top_logprobs: list[TopLogprob] = Field(default_factory=list)


class ChoiceLogprobs(_Response):
    content: list[ChatLogprobToken] | None = None


class FunctionCall(_Response):
    name: str
    arguments: str


class ToolCallOut(_Response):
    id: str
    type: Literal["function"] = "function"
    function: FunctionCall


class AssistantMessage(_Response):
    role: Literal["assistant"] = "assistant"
    content: str | None = None
    reasoning_content: str | None = Field(
        None, description="a reasoning model's thinking, apart from the answer"
    )
    tool_calls: list[ToolCallOut] | None = None


class ChatChoice(_Response):
    index: int
    message: AssistantMessage
    logprobs: ChoiceLogprobs | None = None
    finish_reason: str | None = None


class PromptTokensDetails(_Response):
    cached_tokens: int = 0


class UsageOut(_Response):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    prompt_tokens_details: PromptTokensDetails = Field(default_factory=PromptTokensDetails)


class ChatCompletion(_Response):
    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int
    model: str
    system_fingerprint: str | None = None
    choices: list[ChatChoice]
    usage: UsageOut


class ToolCallDelta(_Response):
    index: int
    id: str | None = None
    type: Literal["function"] | None = None
    function: FunctionCall | None = None


class ChatDelta(_Response):
    role: Literal["assistant"] | None = None
    content: str | None = None
    reasoning_content: str | None = None
    tool_calls: list[ToolCallDelta] | None = None


class ChatChunkChoice(_Response):
    index: int
    delta: ChatDelta
    logprobs: ChoiceLogprobs | None = None
    finish_reason: str | None = None


class ChatCompletionChunk(_Response):
    id: str
    object: Literal["chat.completion.chunk"] = "chat.completion.chunk"
    created: int
    model: str
    system_fingerprint: str | None = None
    choices: list[ChatChunkChoice]
    usage: UsageOut | None = None


# ---------------------------------------------------------------- legacy completions

PromptInput = str | list[str] | list[int] | list[list[int]]


class CompletionRequest(_SamplingFields):
    prompt: PromptInput
    max_tokens: int | None = Field(16, ge=1, description="OpenAI's default for completions is 16")
    logprobs: int | None = Field(
        None, ge=0, le=20, description="alternatives per position (0: sampled token only)"
    )
    echo: bool | None = False
    suffix: str | None = None
    best_of: int | None = Field(None, ge=1)

    @field_validator("prompt")
    @classmethod
    def _non_empty(cls, v: PromptInput) -> PromptInput:
        if isinstance(v, list) and (not v or any(isinstance(p, list) and not p for p in v)):
            raise ValueError("prompt must not be empty")
        return v

    @model_validator(mode="after")
    def _unsupported(self) -> CompletionRequest:
        if self.suffix:
            raise ParamError("suffix", "'suffix' (fill in the middle) is not supported")
        if self.best_of is not None and self.best_of != (self.n or 1):
            raise ParamError("best_of", "'best_of' other than n is not supported")
        return self

    def prompts(self) -> list[str | list[int]]:
        """The prompts as a list: one string, one token-id list, or a batch of either."""
        p = self.prompt
        if isinstance(p, str):
            return [p]
        if p and all(isinstance(x, int) for x in p):
            return [list(p)]  # type: ignore[arg-type]
        return list(p)  # type: ignore[arg-type]


class CompletionLogprobs(_Response):
    tokens: list[str] = Field(default_factory=list)
    token_logprobs: list[float | None] = Field(default_factory=list)
    top_logprobs: list[dict[str, float] | None] = Field(default_factory=list)
    text_offset: list[int] = Field(default_factory=list)


class CompletionChoice(_Response):
    index: int
    text: str
    logprobs: CompletionLogprobs | None = None
    finish_reason: str | None = None


class Completion(_Response):
    id: str
    object: Literal["text_completion"] = "text_completion"
    created: int
    model: str
    system_fingerprint: str | None = None
    choices: list[CompletionChoice]
    usage: UsageOut | None = None


# ---------------------------------------------------------------- embeddings


class EmbeddingRequest(_Request):
    model: str = Field(..., min_length=1)
    input: str | list[str] | list[int] | list[list[int]]
    encoding_format: Literal["float", "base64"] | None = "float"
    dimensions: int | None = Field(None, ge=1)

    @field_validator("input")
    @classmethod
    def _texts_only(cls, v: Any) -> Any:
        items = [v] if isinstance(v, str) else v
        if not items:
            raise ValueError("input must not be empty")
        if not all(isinstance(x, str) for x in items):
            raise ValueError("token-id input is not supported; send text")
        if any(x == "" for x in items):
            raise ValueError("input strings must not be empty")
        return v

    def texts(self) -> list[str]:
        return [self.input] if isinstance(self.input, str) else list(self.input)  # type: ignore[arg-type]


class Embedding(_Response):
    object: Literal["embedding"] = "embedding"
    index: int
    embedding: list[float] | str


class EmbeddingUsage(_Response):
    prompt_tokens: int
    total_tokens: int


class EmbeddingList(_Response):
    object: Literal["list"] = "list"
    data: list[Embedding]
    model: str
    usage: EmbeddingUsage


# ---------------------------------------------------------------- models, errors, ops


class ModelCard(_Response):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str = "impetus"
    loaded: bool = False
    kind: str | None = None
    context_length: int | None = None
    ranks: int | None = None  # a loaded model: the engine processes it is sharded over


class ModelList(_Response):
    object: Literal["list"] = "list"
    data: list[ModelCard]


class ErrorDetail(_Response):
    message: str
    type: str
    param: str | None = None
    code: str | None = None


class ErrorResponse(_Response):
    error: ErrorDetail


class Health(_Response):
    status: Literal["ok"] = "ok"
    engine: str


class Ready(_Response):
    status: Literal["ready"] = "ready"
    models: list[str]
    ranks: int = 1  # engine processes serving each model together (impetus serve --ranks)
    distributed_backend: str | None = None  # MLX's backend between them (ring, nccl), if several


# ---------------------------------------------------------------- admin


class ModelIdRequest(_Request):
    id: str = Field(..., min_length=1)


class PullRequest(ModelIdRequest):
    load: bool = Field(False, description="load the model into the engine once it is ready")


class LoadRequest(ModelIdRequest):
    dtype: DType | None = None
    keep_alive: float | None = Field(None, description="seconds idle before unloading (<0: never)")


class CreateKeyRequest(_Request):
    name: str = Field("", max_length=100, description="a label to recognise the key by")


class APIKeyInfo(_Response):
    id: str
    name: str
    prefix: str = Field(..., description="the first characters of the key, to recognise it")
    scope: Literal["inference"] = "inference"
    created: int


class CreatedKey(APIKeyInfo):
    key: str = Field(..., description="the secret: shown once, stored only as a hash")


class KeyList(_Response):
    data: list[APIKeyInfo]


# ---------------------------------------------------------------- admin responses


class AdminStatus(EngineStatus, kw_only=True):
    """`GET admin/status`: the engine's status (state, restarts and last_error only while it is
    not up) and the api layer's own: `endpoint`, the OpenAI base URL as this client reached the
    server; `in_flight`, HTTP requests being served; `draining`, shutting down (new requests get
    503)."""

    endpoint: str
    in_flight: int = 0
    draining: bool = False


class ModelRegistry(_Response):
    """`GET admin/models`: registry entries, loaded or not, and the ids being downloaded."""

    data: list[RegistryEntry]
    pulling: list[str] = Field(default_factory=list)


class Unloaded(_Response):
    id: str
    unloaded: bool = Field(..., description="false: the model was not loaded")


class PullCancelled(_Response):
    id: str
    cancelled: bool = True
