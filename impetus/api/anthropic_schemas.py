"""Pydantic schemas of Anthropic's Messages API (`/v1/messages`), as impetus serves it.

Requests ignore unknown fields like the rest of the api; every field declared here is honoured.
Ranges follow Anthropic's documentation (temperature 0..1, max_tokens required).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from impetus.api.schemas import ParamError


class _Request(BaseModel):
    model_config = ConfigDict(extra="ignore", populate_by_name=True)


class _Response(BaseModel):
    model_config = ConfigDict(extra="allow")


# ---------------------------------------------------------------- content blocks (requests)


class TextBlock(_Request):
    type: Literal["text"]
    text: str


class ImageBlock(_Request):
    """Accepted by the schema so that the error can say what is unsupported, not 'invalid'."""

    type: Literal["image", "document"]


class ToolUseBlock(_Request):
    type: Literal["tool_use"]
    id: str
    name: str
    input: dict[str, Any] = Field(default_factory=dict)


class ToolResultBlock(_Request):
    type: Literal["tool_result"]
    tool_use_id: str
    content: str | list[TextBlock] = ""
    is_error: bool | None = None

    def text(self) -> str:
        if isinstance(self.content, str):
            return self.content
        return "".join(b.text for b in self.content)


class ThinkingBlock(_Request):
    """Earlier thinking sent back with the conversation (kept out of the prompt: chat templates
    of reasoning models drop the thinking of earlier turns)."""

    type: Literal["thinking", "redacted_thinking"]
    thinking: str = ""
    signature: str = ""


InputBlock = Annotated[
    TextBlock | ImageBlock | ToolUseBlock | ToolResultBlock | ThinkingBlock,
    Field(discriminator="type"),
]


class MessageParam(_Request):
    role: Literal["user", "assistant"]
    content: str | list[InputBlock]


class ToolParam(_Request):
    name: str = Field(..., min_length=1, max_length=64)
    description: str | None = None
    input_schema: dict[str, Any]


class ToolChoice(_Request):
    type: Literal["auto", "any", "tool", "none"]
    name: str | None = None

    @model_validator(mode="after")
    def _named(self) -> ToolChoice:
        if self.type == "tool" and not self.name:
            raise ParamError("name", "tool_choice of type 'tool' needs a 'name'")
        return self


class ThinkingConfig(_Request):
    """enabled: think, within `budget_tokens`; adaptive: the model decides (its template's
    default); disabled: no thinking (`enable_thinking=false` to the chat template).
    `display: omitted` leaves the thinking out of the response."""

    type: Literal["enabled", "adaptive", "disabled"]
    budget_tokens: int | None = Field(
        None, ge=1, description="end the thinking after this many tokens (enabled only)"
    )
    display: Literal["summarized", "omitted"] | None = None

    @model_validator(mode="after")
    def _budget(self) -> ThinkingConfig:
        if self.type == "enabled" and self.budget_tokens is None:
            raise ParamError("budget_tokens", "thinking of type 'enabled' needs 'budget_tokens'")
        if self.type != "enabled" and self.budget_tokens is not None:
            raise ParamError("budget_tokens", "budget_tokens goes with thinking of type 'enabled'")
        return self

    @property
    def shown(self) -> bool:
        return self.type != "disabled" and self.display != "omitted"


class JSONOutputFormat(_Request):
    type: Literal["json_schema"]
    schema_: dict[str, Any] = Field(..., alias="schema")


class OutputConfig(_Request):
    format: JSONOutputFormat | None = Field(
        None, description="constrain the answer to this JSON schema"
    )


class MessagesRequest(_Request):
    model: str = Field(..., min_length=1)
    messages: list[MessageParam] = Field(..., min_length=1)
    max_tokens: int = Field(..., ge=1)
    system: str | list[TextBlock] | None = None
    temperature: float | None = Field(None, ge=0.0, le=1.0)
    top_p: float | None = Field(None, gt=0.0, le=1.0)
    top_k: int | None = Field(None, ge=0)
    stop_sequences: list[str] | None = None
    stream: bool | None = False
    tools: list[ToolParam] | None = None
    tool_choice: ToolChoice | None = None
    thinking: ThinkingConfig | None = None
    output_config: OutputConfig | None = None

    @field_validator("stop_sequences")
    @classmethod
    def _stops(cls, v: list[str] | None) -> list[str] | None:
        if v and any(not s for s in v):
            raise ValueError("stop sequences must not be empty")
        if v and len(v) > 16:
            raise ValueError("at most 16 stop sequences")
        return v

    @model_validator(mode="after")
    def _consistent(self) -> MessagesRequest:
        if self.tool_choice is not None and self.tool_choice.type == "tool":
            names = {t.name for t in self.tools or []}
            if self.tool_choice.name not in names:
                raise ParamError(
                    "tool_choice", f"tool_choice names an unknown tool: {self.tool_choice.name!r}"
                )
        elif self.tool_choice is not None and self.tool_choice.type == "any" and not self.tools:
            raise ParamError("tool_choice", "tool_choice 'any' needs 'tools'")
        budget = self.thinking.budget_tokens if self.thinking is not None else None
        if budget is not None and budget >= self.max_tokens:
            raise ParamError("thinking.budget_tokens", "budget_tokens must be below max_tokens")
        return self


class CountTokensRequest(_Request):
    model: str = Field(..., min_length=1)
    messages: list[MessageParam] = Field(..., min_length=1)
    system: str | list[TextBlock] | None = None
    tools: list[ToolParam] | None = None
    tool_choice: ToolChoice | None = None
    thinking: ThinkingConfig | None = None


# ---------------------------------------------------------------- responses


class TextOut(_Response):
    type: Literal["text"] = "text"
    text: str


class ThinkingOut(_Response):
    type: Literal["thinking"] = "thinking"
    thinking: str
    # Anthropic signs thinking so that it can be sent back verbatim; impetus does not check it
    signature: str = ""


class ToolUseOut(_Response):
    type: Literal["tool_use"] = "tool_use"
    id: str
    name: str
    input: dict[str, Any]


class MessageUsage(_Response):
    input_tokens: int = Field(..., description="prompt tokens not read from the prompt cache")
    output_tokens: int
    cache_read_input_tokens: int = Field(0, description="prompt tokens read from the prompt cache")
    cache_creation_input_tokens: int = 0


class Message(_Response):
    id: str
    type: Literal["message"] = "message"
    role: Literal["assistant"] = "assistant"
    model: str
    content: list[ThinkingOut | TextOut | ToolUseOut]
    stop_reason: Literal["end_turn", "max_tokens", "stop_sequence", "tool_use"] | None = None
    stop_sequence: str | None = None
    usage: MessageUsage


class TokenCount(_Response):
    input_tokens: int


class AnthropicErrorDetail(_Response):
    type: str
    message: str


class AnthropicError(_Response):
    type: Literal["error"] = "error"
    error: AnthropicErrorDetail


class MessageStreamEvent(_Response):
    """One server-sent event (`event: <type>`): message_start, ping, content_block_start,
    content_block_delta, content_block_stop, message_delta, message_stop, or error."""

    type: str
