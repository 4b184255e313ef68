"""What the tests offer a model, written once: one tool (put in each API's own format) and one
JSON schema for constrained answers."""

from __future__ import annotations

from typing import Any

CITY: dict[str, Any] = {
    "type": "object",
    "properties": {"city": {"enum": ["Paris", "Rome"]}},
    "required": ["city"],
    "additionalProperties": False,
}
WEATHER_FUNCTION: dict[str, Any] = {
    "name": "get_weather",
    "description": "Weather in a city",
    "parameters": CITY,
}
# OpenAI chat completions and Ollama: the function inside {"type": "function", "function": ...}
CHAT_TOOL: dict[str, Any] = {"type": "function", "function": WEATHER_FUNCTION}
# OpenAI Responses: the function's fields beside "type"
RESPONSES_TOOL: dict[str, Any] = {"type": "function", **WEATHER_FUNCTION}
# Anthropic Messages: the parameters are the tool's "input_schema"
ANTHROPIC_TOOL: dict[str, Any] = {
    "name": WEATHER_FUNCTION["name"],
    "description": WEATHER_FUNCTION["description"],
    "input_schema": CITY,
}

# a constrained answer: a colour from a list and a boolean, nothing else
ANSWER_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {"color": {"enum": ["red", "green"]}, "ok": {"type": "boolean"}},
    "required": ["color", "ok"],
    "additionalProperties": False,
}
