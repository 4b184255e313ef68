"""Reasoning output in chat completions: a reasoning model's thinking comes apart from the answer.

The tiny reasoning model's template opens the think block; a logit bias makes the output exact:
"Q" (+100) then "</think>" (+80) then "Z" (+60), and a huge repetition penalty takes each biased
token out of the running once it is used.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.api.conftest import Server


@pytest.fixture(scope="module")
def forced(think_model_dir: Path) -> dict[str, object]:
    from mlx_lm.tokenizer_utils import load as load_tokenizer

    tok = load_tokenizer(think_model_dir)
    (q,) = tok.encode("Q", add_special_tokens=False)
    (z,) = tok.encode("Z", add_special_tokens=False)
    return {
        "model": str(think_model_dir),
        "messages": [{"role": "user", "content": "Hi"}],
        "max_tokens": 3,
        "temperature": 0,
        "logit_bias": {str(q): 100, str(tok.think_end_id): 80, str(z): 60},
    }


PENALTY = {"repetition_penalty": 1000.0}  # an impetus extension: not an SDK argument


def test_reasoning_content_apart_from_content(server: Server, forced: dict[str, object]) -> None:
    c = server.openai()
    r = c.chat.completions.create(**forced, extra_body=PENALTY)  # type: ignore[call-overload]
    msg = r.choices[0].message
    assert msg.content == "Z"
    assert msg.model_extra and msg.model_extra["reasoning_content"] == "Q"
    assert r.usage.completion_tokens == 3  # the markers are tokens too
    # streamed: reasoning_content deltas, then content
    chunks = list(c.chat.completions.create(**forced, stream=True, extra_body=PENALTY))  # type: ignore[call-overload]
    deltas = [ch.choices[0].delta for ch in chunks if ch.choices]
    reasoning = "".join((d.model_extra or {}).get("reasoning_content") or "" for d in deltas)
    content = "".join(d.content or "" for d in deltas)
    assert (reasoning, content) == ("Q", "Z")


def test_reasoning_can_be_left_out(server: Server, forced: dict[str, object]) -> None:
    c = server.openai()
    r = c.chat.completions.create(**forced, extra_body={**PENALTY, "include_reasoning": False})  # type: ignore[call-overload]
    assert r.choices[0].message.content == "Z"
    assert "reasoning_content" not in (r.choices[0].message.model_extra or {})
    chunks = list(
        c.chat.completions.create(
            **forced, stream=True, extra_body={**PENALTY, "include_reasoning": False}
        )  # type: ignore[call-overload]
    )
    assert not any(
        (ch.choices[0].delta.model_extra or {}).get("reasoning_content")
        for ch in chunks
        if ch.choices
    )
    # thinking turned off in the template: the model answers at once, all content
    off = c.chat.completions.create(
        **{**forced, "max_tokens": 1},
        extra_body={**PENALTY, "chat_template_kwargs": {"enable_thinking": False}},  # type: ignore[arg-type]
    )
    assert off.choices[0].message.content == "Q"
    assert "reasoning_content" not in (off.choices[0].message.model_extra or {})


def test_completions_are_raw_text(server: Server, forced: dict[str, object]) -> None:
    """The legacy endpoint returns the model's text as it is, markers included."""
    r = server.post(
        "v1/completions",
        {
            "model": forced["model"],
            "prompt": "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n<think>\n",
            **{k: forced[k] for k in ("max_tokens", "temperature", "logit_bias")},
            **PENALTY,
        },
    )
    assert r.status_code == 200 and r.json()["choices"][0]["text"] == "Q</think>Z"
