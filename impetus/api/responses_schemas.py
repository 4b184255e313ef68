"""Pydantic schemas of OpenAI's Responses API (`/v1/responses`), as impetus serves it.

Requests ignore unknown fields like the rest of the api; every field declared here is honoured.
Responses are built as plain dicts in `impetus.api.responses` (their shape is OpenAI's, with many
optional members); the request side is what needs validating.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from impetus.api.schemas import ParamError


class _Request(BaseModel):
    model_config = ConfigDict(extra="ignore", populate_by_name=True)


class InputText(_Request):
    type: Literal["input_text", "output_text", "text"]
    text: str


class MessageItem(_Request):
    type: Literal["message"] = "message"
    role: Literal["user", "assistant", "system", "developer"]
    content: str | list[InputText]

    def text(self) -> str:
        return (
            self.content if isinstance(self.content, str) else "".join(p.text for p in self.content)
        )


class FunctionCallItem(_Request):
    type: Literal["function_call"]
    call_id: str
    name: str
    arguments: str
    id: str | None = None


class FunctionCallOutputItem(_Request):
    type: Literal["function_call_output"]
    call_id: str
    output: str


class ReasoningItem(_Request):
    """Earlier reasoning sent back with the conversation: kept out of the prompt, as reasoning
    models' own chat templates leave the thinking of earlier turns out."""

    type: Literal["reasoning"]
    id: str | None = None


InputItem = Annotated[
    MessageItem | FunctionCallItem | FunctionCallOutputItem | ReasoningItem,
    Field(discriminator="type"),
]


def _item_type(value: Any) -> Any:
    # a message item may leave out its type, as OpenAI's easy input message does
    if isinstance(value, dict) and "type" not in value and "role" in value:
        return {**value, "type": "message"}
    return value


class FunctionTool(_Request):
    type: Literal["function"]
    name: str = Field(..., min_length=1, max_length=64)
    description: str | None = None
    parameters: dict[str, Any] | None = None
    strict: bool | None = None


class NamedFunctionChoice(_Request):
    type: Literal["function"]
    name: str


class TextFormat(_Request):
    type: Literal["text", "json_object", "json_schema"]
    name: str | None = None
    schema_: dict[str, Any] | None = Field(None, alias="schema")
    description: str | None = None
    strict: bool | None = None

    @model_validator(mode="after")
    def _schema(self) -> TextFormat:
        if self.type == "json_schema" and self.schema_ is None:
            raise ParamError("schema", "a json_schema format needs 'schema'")
        return self


class TextConfig(_Request):
    format: TextFormat | None = None


class ResponseRequest(_Request):
    model: str = Field(..., min_length=1)
    input: str | list[InputItem]
    instructions: str | None = None
    max_output_tokens: int | None = Field(None, ge=1)
    temperature: float | None = Field(None, ge=0.0, le=2.0)
    top_p: float | None = Field(None, gt=0.0, le=1.0)
    tools: list[FunctionTool] | None = None
    tool_choice: Literal["none", "auto", "required"] | NamedFunctionChoice | None = None
    text: TextConfig | None = None
    stream: bool | None = False
    store: bool | None = Field(
        True, description="keep the response for GET and previous_response_id"
    )
    previous_response_id: str | None = None
    include_reasoning: bool | None = Field(
        True,
        description="impetus extension (as chat completions' include_reasoning): false leaves "
        "a reasoning model's thinking (the reasoning output item) out of the response",
    )

    @model_validator(mode="before")
    @classmethod
    def _message_types(cls, data: Any) -> Any:
        if isinstance(data, dict) and isinstance(data.get("input"), list):
            data = {**data, "input": [_item_type(x) for x in data["input"]]}
        return data

    @model_validator(mode="after")
    def _consistent(self) -> ResponseRequest:
        if isinstance(self.input, list) and not self.input:
            raise ParamError("input", "input must not be empty")
        if isinstance(self.tool_choice, NamedFunctionChoice):
            if self.tool_choice.name not in {t.name for t in self.tools or []}:
                raise ParamError(
                    "tool_choice",
                    f"tool_choice names an unknown function: {self.tool_choice.name!r}",
                )
        elif self.tool_choice == "required" and not self.tools:
            raise ParamError("tool_choice", "tool_choice 'required' needs 'tools'")
        return self


class ResponseObject(BaseModel):
    """The documented shape of a response object (what GET /v1/responses/{id} and a finished
    POST return), for the OpenAPI document."""

    model_config = ConfigDict(extra="allow")
    id: str
    object: Literal["response"] = "response"
    created_at: int
    status: Literal["completed", "incomplete", "in_progress", "failed"]
    model: str
    output: list[dict[str, Any]]
    usage: dict[str, Any] | None = None
    previous_response_id: str | None = None
    store: bool = True


class DeletedResponse(BaseModel):
    id: str
    object: Literal["response.deleted"] = "response.deleted"
    deleted: bool = True


class ResponseStreamEvent(BaseModel):
    """One server-sent event: response.created, response.in_progress, response.output_item.added,
    response.content_part.added, response.output_text.delta, response.reasoning_text.delta,
    response.function_call_arguments.delta / .done, ... .done, response.completed (or
    response.incomplete), or error."""

    model_config = ConfigDict(extra="allow")
    type: str
    sequence_number: int
