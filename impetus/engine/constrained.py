"""Constrained decoding: `response_format` (JSON / JSON schema) and forced tool calls, via llguidance.

A request gets a logits processor that owns an `LLMatcher`: it feeds the matcher each token the
request generated and masks every token the grammar does not allow next.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import mlx.core as mx
import numpy as np

from impetus.protocol import EngineError

_TOKENIZERS: dict[int, Any] = {}


def ll_tokenizer(tokenizer: Any, vocab_size: int) -> Any:
    """llguidance's view of a tokenizer; building it takes ~1 s, so one per loaded model."""
    key = id(tokenizer)
    if key not in _TOKENIZERS:
        import llguidance.hf

        eos = sorted(tokenizer.eos_token_ids)
        _TOKENIZERS[key] = llguidance.hf.from_tokenizer(
            tokenizer._tokenizer, n_vocab=vocab_size, eos_token=eos
        )
    return _TOKENIZERS[key]


def forget_tokenizer(tokenizer: Any) -> None:
    _TOKENIZERS.pop(id(tokenizer), None)


def grammar_for_response_format(response_format: dict[str, Any] | None) -> str | None:
    if not response_format:
        return None
    kind = response_format.get("type", "text")
    if kind == "text":
        return None
    import llguidance  # only constrained requests need it

    if kind == "json_object":
        schema: dict[str, Any] = {"type": "object"}
    elif kind == "json_schema":
        spec = response_format.get("json_schema") or {}
        schema = spec.get("schema") if isinstance(spec, dict) else None  # type: ignore[assignment]
        if not isinstance(schema, dict):
            raise EngineError(
                "invalid_request",
                "response_format.json_schema.schema must be a JSON schema object",
                "response_format",
            )
    else:
        raise EngineError(
            "invalid_request",
            f"response_format type {kind!r} is not supported (text, json_object, json_schema)",
            "response_format",
        )
    try:
        return str(
            llguidance.LLMatcher.grammar_from_json_schema(
                schema, defaults={"whitespace_flexible": False}
            )
        )
    except ValueError as e:
        raise EngineError("invalid_request", f"invalid JSON schema: {e}", "response_format") from e


def grammar_for_tool_call(
    tools: list[dict[str, Any]], tool_choice: Any, start: str, end: str
) -> str | None:
    """A grammar that forces one call in the model's `<tool_call>{json}</tool_call>` format.

    Used for tool_choice "required" or a named function; "auto" leaves the model free.
    """
    if tool_choice in (None, "auto", "none"):
        return None
    funcs = [t.get("function", t) for t in tools]
    if isinstance(tool_choice, dict):
        name = (tool_choice.get("function") or {}).get("name")
        funcs = [f for f in funcs if f.get("name") == name]
        if not funcs:
            raise EngineError(
                "invalid_request", f"tool_choice names an unknown function {name!r}", "tool_choice"
            )
    elif tool_choice != "required":
        raise EngineError(
            "invalid_request",
            f"tool_choice {tool_choice!r} is not one of none, auto, required or a function",
            "tool_choice",
        )
    alternatives = [
        {
            "type": "object",
            "properties": {
                "name": {"const": f["name"]},
                "arguments": f.get("parameters") or {"type": "object"},
            },
            "required": ["name", "arguments"],
            "additionalProperties": False,
        }
        for f in funcs
    ]
    schema: dict[str, Any] = alternatives[0] if len(alternatives) == 1 else {"anyOf": alternatives}
    # compact JSON: a small model wanders off into whitespace when the grammar lets it
    schema = {**schema, "x-guidance": {"whitespace_flexible": False}}
    return (
        "start: START %json " + json.dumps(schema, separators=(",", ":")) + " END\n"
        f"START: {json.dumps(start + chr(10))}\n"
        f"END: {json.dumps(chr(10) + end)}\n"
    )


def make_grammar_processor(
    tokenizer: Any, vocab_size: int, grammar: str
) -> Callable[[mx.array, mx.array], mx.array]:
    import llguidance

    lltok = ll_tokenizer(tokenizer, vocab_size)
    matcher = llguidance.LLMatcher(lltok, grammar, log_level=0)
    if matcher.is_error():
        raise EngineError(
            "invalid_request",
            f"could not compile the output constraint: {matcher.get_error()}",
            "response_format",
        )
    calls = 0
    eos = sorted(tokenizer.eos_token_ids)

    def processor(tokens: mx.array, logits: mx.array) -> mx.array:
        nonlocal calls
        # The first call sees the prompt; every later one sees the token sampled last step.
        if calls > 0 and not matcher.is_stopped():
            matcher.consume_token(int(tokens[-1].item()))  # type: ignore[arg-type]
        calls += 1
        if matcher.is_stopped() or matcher.is_error():
            allowed = np.zeros(logits.shape[-1], dtype=bool)
            allowed[eos] = True
        else:
            bits = np.frombuffer(matcher.compute_bitmask(), dtype=np.uint8)
            allowed = np.unpackbits(bits, bitorder="little")[: logits.shape[-1]].astype(bool)
            if len(allowed) < logits.shape[-1]:
                allowed = np.pad(allowed, (0, logits.shape[-1] - len(allowed)))
        return mx.where(mx.array(allowed)[None, :], logits, -mx.inf)

    return processor
