"""The Chat widget, headless, against a real `impetus serve` (tiny model)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from impetus.client import Endpoint, ImpetusClient, PrivateServer
from impetus.widgets import Chat
from tests.widgets.helpers import Recorder, wait_for


@pytest.fixture()
def chat(endpoint: Endpoint, tiny_model: str, client: ImpetusClient) -> Iterator[Chat]:
    c = Chat(model=tiny_model, client=endpoint, temperature=0.0, max_tokens=24)
    wait_for(lambda: c.status.startswith("ready"), timeout=30)
    yield c
    c.close()


def frontend(widget: Any, content: dict[str, Any]) -> None:
    """Deliver a custom message as the front end would (through the comm's message handler)."""
    widget._handle_msg(
        {"content": {"data": {"method": "custom", "content": content}}, "buffers": []}
    )


def test_streamed_answer_state(chat: Chat) -> None:
    rec = Recorder(chat)
    answer = chat.ask("Hello, world! How are you today?", timeout=60)

    assert [m["role"] for m in chat.history] == ["user", "assistant"]
    assert chat.history[1]["content"] == answer
    assert not chat.busy and not chat.error
    # tokens went out as deltas, in order, and add up to the answer
    deltas = rec.custom("delta")
    assert len(deltas) > 1
    assert "".join(d["text"] for d in deltas) == answer
    kinds = [m["type"] for m in rec.custom()]
    assert kinds[0] == "start" and kinds[-1] == "end"
    # ... while the history trait was sent only a handful of times, not once per token
    assert len(rec.updates("history")) <= 3
    stats = chat.history[1]["stats"]
    assert stats["completion_tokens"] and stats["ttft"] > 0
    assert stats["finish_reason"] in ("stop", "length")
    assert chat.last_result is not None and chat.last_result.text == answer


def test_history_is_resent_and_reuses_the_prompt_cache(chat: Chat) -> None:
    chat.system_prompt = "You are terse."
    chat.ask("What is the capital of France?", timeout=60)
    chat.ask("And the quick brown fox?", timeout=60)
    assert [m["role"] for m in chat.messages] == [
        "system",
        "user",
        "assistant",
        "user",
        "assistant",
    ]
    first, second = chat.history[1]["stats"], chat.history[3]["stats"]
    # turn 2 sends turn 1 again; the engine finds it in its prompt cache
    assert second["prompt_tokens"] > first["prompt_tokens"]
    assert second["cached_tokens"] >= first["prompt_tokens"] - 1, second


def test_stop_cancels_the_generation(chat: Chat, client: ImpetusClient) -> None:
    rec = Recorder(chat)
    chat.max_tokens = 400
    before = client.status().stats.generation_tokens_total
    chat.submit("Tell me a long story about a fox.")
    wait_for(lambda: len(rec.custom("delta")) >= 2, timeout=60)
    frontend(chat, {"type": "stop"})  # the Stop button
    chat.wait(30)
    last = chat.history[-1]
    assert last["role"] == "assistant"
    assert last["stats"]["finish_reason"] == "cancelled"
    # the stopped answer says how many tokens it had (usage on every chunk, counted by the engine)
    assert last["stats"]["completion_tokens"] >= 1
    assert f"{last['stats']['completion_tokens']} tokens" in last["stats"]["summary"]
    assert not chat.busy
    wait_for(lambda: client.status().stats.running == 0, timeout=10)
    assert client.status().stats.generation_tokens_total - before < 400


def test_frontend_send_regenerate_clear(chat: Chat) -> None:
    frontend(chat, {"type": "send", "text": "Hello"})
    chat.wait(60)
    assert [m["role"] for m in chat.history] == ["user", "assistant"]
    frontend(chat, {"type": "regenerate"})
    chat.wait(60)
    assert [m["role"] for m in chat.history] == ["user", "assistant"]
    frontend(chat, {"type": "clear"})
    assert chat.history == [] and chat.messages == []


def test_export(chat: Chat, tiny_model: str) -> None:
    chat.system_prompt = "Be brief."
    chat.ask("Hello", timeout=60)
    data = json.loads(chat.to_json())
    assert data["model"] == tiny_model
    assert data["messages"] == chat.messages
    code = chat.to_cell(insert=False)
    namespace: dict[str, Any] = {}
    exec(
        code.replace("iw.Chat(", "dict("), {"iw": None}, namespace
    )  # the cell's arguments are valid Python
    assert namespace["chat"]["messages"] == chat.messages
    again = Chat(model=tiny_model, client=chat._conn.endpoint, messages=chat.messages)
    assert again.messages == chat.messages and again.system_prompt == "Be brief."
    again.close()


def test_errors_show_in_place_and_recover(
    endpoint: Endpoint, tiny_model: str, client: ImpetusClient
) -> None:
    chat = Chat(model="no-such-model", client=endpoint, max_tokens=24)
    try:
        with pytest.raises(Exception, match="no-such-model|not found"):
            chat.ask("Hello", timeout=60)
        assert chat.history[-1]["role"] == "error"
        assert chat.error
        assert [m["role"] for m in chat.messages] == ["user"], "errors are not sent to the model"
        chat.model = tiny_model
        chat.regenerate().result(60)
        assert chat.history[-1]["role"] == "assistant" and not chat.error
    finally:
        chat.close()


def test_server_gone_then_back(impetus_home: object, tiny_model: str) -> None:
    srv = PrivateServer(tiny_model)
    srv.start(timeout=180)
    chat = Chat(model=tiny_model, client=Endpoint(srv.base_url), max_tokens=8)
    try:
        chat.ask("Hello", timeout=120)
        srv.stop()
        with pytest.raises(Exception):  # noqa: B017 - what matters is that it returns, with the error shown
            chat.ask("Are you there?", timeout=30)
        assert chat.history[-1]["role"] == "error" and chat.error
        srv.start(timeout=180)  # same port
        wait_for(lambda: not chat.error, timeout=60)  # the panel notices the engine is back
        chat.regenerate().result(120)
        assert chat.history[-1]["role"] == "assistant"
    finally:
        chat.close()
        srv.stop()


def test_probabilities_colour_every_token(chat: Chat) -> None:
    chat.show_probabilities = True
    rec = Recorder(chat)
    chat.ask("Hello there", timeout=60)
    answer = chat.history[-1]
    tokens = answer["tokens"]
    # one entry per generated token, each with its probability and its alternatives
    assert len(tokens) == answer["stats"]["completion_tokens"]
    for text, p, alts in tokens:
        assert isinstance(text, str) and 0.0 <= p <= 1.0
        assert 1 <= len(alts) <= 5 and all(0.0 <= q <= 1.0 for _, q in alts)
    # they streamed with the deltas too (all but those after the last text, if any)
    streamed = [t for d in rec.custom("delta") for t in d.get("tokens", [])]
    assert streamed and [t[0] for t in streamed] == [t[0] for t in tokens[: len(streamed)]]
    assert chat.last_result is not None and chat.last_result.logprobs


def test_constrained_answers_are_marked_json(chat: Chat) -> None:
    chat.response_format = {
        "type": "json_schema",
        "json_schema": {
            "name": "answer",
            "schema": {
                "type": "object",
                "properties": {"ok": {"type": "boolean"}},
                "required": ["ok"],
                "additionalProperties": False,
            },
        },
    }
    chat.max_tokens = 40
    text = chat.ask("Answer.", timeout=60)
    assert isinstance(json.loads(text)["ok"], bool)
    assert chat.history[-1]["json"] is True and "tokens" not in chat.history[-1]
