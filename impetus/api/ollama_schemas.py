"""Pydantic schemas of Ollama's API (`/api/chat`, `/api/generate`, `/api/embed`, ...).

Requests ignore unknown fields (Ollama's many runner options among them: num_gpu, num_thread,
mirostat...); every field declared here is honoured. Model names may carry Ollama's `:latest` tag.
"""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from impetus.api.schemas import ParamError


class _Request(BaseModel):
    model_config = ConfigDict(extra="ignore", populate_by_name=True)


def model_id(name: str) -> str:
    """An Ollama model name as an impetus id: `:latest` is Ollama's default tag, not part of the
    id (other tags stay: they may name a real model)."""
    return name[: -len(":latest")] if name.endswith(":latest") else name


def tagged(model: str) -> str:
    return model if ":" in model.rsplit("/", 1)[-1] else f"{model}:latest"


_UNIT = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}
_PART = r"(\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h)"


def keep_alive_seconds(value: str | float | None) -> float | None:
    """Ollama's keep_alive as seconds: a number of seconds or a Go duration ("5m", "1h30m",
    "-1s"); negative keeps the model loaded until it is unloaded."""
    if value is None:
        return None
    if isinstance(value, (int, float)):
        return float(value)
    text = value.strip()
    if re.fullmatch(r"-?\d+(?:\.\d+)?", text):
        return float(text)
    m = re.fullmatch(rf"(-?)((?:{_PART})+)", text)
    if not m:
        raise ParamError("keep_alive", f"keep_alive {value!r} is not a duration (e.g. 5m, 30s, -1)")
    total = sum(float(n) * _UNIT[u] for n, u in re.findall(_PART, m.group(2)))
    return -total if m.group(1) else total


class Options(_Request):
    """The generation options impetus maps onto its sampling and limits."""

    num_predict: int | None = Field(None, description="tokens to generate (-1: until done)")
    temperature: float | None = Field(None, ge=0.0, le=2.0)
    top_k: int | None = Field(None, ge=0)
    top_p: float | None = Field(None, gt=0.0, le=1.0)
    min_p: float | None = Field(None, ge=0.0, le=1.0)
    seed: int | None = None
    stop: list[str] | None = None
    repeat_penalty: float | None = Field(None, gt=0.0)
    repeat_last_n: int | None = Field(None, ge=1, description="tokens the penalties look back on")
    presence_penalty: float | None = Field(None, ge=-2.0, le=2.0)
    frequency_penalty: float | None = Field(None, ge=-2.0, le=2.0)
    num_ctx: int | None = Field(
        None, ge=1, description="a bound on prompt + generated tokens for this request"
    )

    @field_validator("stop")
    @classmethod
    def _stops(cls, v: list[str] | None) -> list[str] | None:
        if v and any(not s for s in v):
            raise ValueError("stop sequences must not be empty")
        return v


class ToolCallFunction(_Request):
    name: str
    arguments: dict[str, Any] = Field(default_factory=dict)


class ToolCallIn(_Request):
    function: ToolCallFunction


class ChatMessageIn(_Request):
    role: Literal["system", "user", "assistant", "tool"]
    content: str = ""
    thinking: str | None = Field(
        None, description="earlier thinking: kept out of the prompt, as reasoning templates do"
    )
    images: list[str] | None = None
    tool_calls: list[ToolCallIn] | None = None
    tool_name: str | None = None


class ToolFunction(_Request):
    name: str = Field(..., min_length=1, max_length=64)
    description: str | None = None
    parameters: dict[str, Any] | None = None


class ToolIn(_Request):
    type: Literal["function"] = "function"
    function: ToolFunction


KeepAlive = str | float | None


class _Generation(_Request):
    model: str = Field(..., min_length=1)
    format: Literal["json", ""] | dict[str, Any] | None = None
    options: Options | None = None
    stream: bool = True
    keep_alive: KeepAlive = None
    think: bool | None = None


class ChatRequest(_Generation):
    messages: list[ChatMessageIn] = Field(default_factory=list)
    tools: list[ToolIn] | None = None


class GenerateRequestIn(_Generation):
    prompt: str = ""
    system: str | None = None
    raw: bool = False
    images: list[str] | None = None
    suffix: str | None = None


class EmbedRequest(_Request):
    model: str = Field(..., min_length=1)
    input: str | list[str]
    keep_alive: KeepAlive = None
    dimensions: int | None = Field(None, ge=1)

    @field_validator("input")
    @classmethod
    def _texts(cls, v: str | list[str]) -> str | list[str]:
        items = [v] if isinstance(v, str) else v
        if not items or any(x == "" for x in items):
            raise ValueError("input must hold non-empty text")
        return v


class ModelNameRequest(_Request):
    model: str = Field("", description="the model's name")
    name: str = Field("", description="Ollama's older spelling of `model`")

    @model_validator(mode="after")
    def _named(self) -> ModelNameRequest:
        if not (self.model or self.name):
            raise ParamError("model", "model is required")
        return self

    def id(self) -> str:
        return model_id(self.model or self.name)


class PullRequestIn(ModelNameRequest):
    stream: bool = True


class OllamaError(BaseModel):
    error: str


# ---------------------------------------------------------------- responses (documentation)


class _Response(BaseModel):
    model_config = ConfigDict(extra="allow")


class ChatMessageOut(_Response):
    role: Literal["assistant"] = "assistant"
    content: str
    thinking: str | None = None
    tool_calls: list[dict[str, Any]] | None = None


class GenerationStats(_Response):
    """On the last line: counts and durations (nanoseconds) from the engine's timings."""

    done_reason: str | None = None
    total_duration: int | None = None
    load_duration: int | None = Field(None, description="time before joining the batch")
    prompt_eval_count: int | None = None
    prompt_eval_duration: int | None = None
    eval_count: int | None = None
    eval_duration: int | None = None


class ChatResponse(GenerationStats):
    model: str
    created_at: str
    message: ChatMessageOut
    done: bool


class GenerateResponse(GenerationStats):
    model: str
    created_at: str
    response: str
    thinking: str | None = None
    done: bool


class EmbedResponse(_Response):
    model: str
    embeddings: list[list[float]]
    total_duration: int | None = None
    prompt_eval_count: int | None = None


class ModelEntry(_Response):
    name: str
    model: str
    size: int
    digest: str = ""
    details: dict[str, Any] = Field(default_factory=dict)
    modified_at: str | None = None
    expires_at: str | None = None
    size_vram: int | None = None
    context_length: int | None = None


class OllamaModelList(_Response):
    models: list[ModelEntry]


class ShowResponse(_Response):
    details: dict[str, Any]
    model_info: dict[str, Any]
    capabilities: list[str]
    modelfile: str = ""
    parameters: str = ""
    template: str = ""


class OllamaVersion(_Response):
    version: str


class PullLine(_Response):
    status: str | None = None
    digest: str | None = None
    total: int | None = None
    completed: int | None = None
    error: str | None = None
