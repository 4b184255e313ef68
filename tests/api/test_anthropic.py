"""Anthropic's Messages API on a real `impetus serve`, driven by the official anthropic SDK.

The session's shared server serves the tiny model; the tool and reasoning variants load just in
time by path. The SDK no longer has sampling arguments, so they travel in `extra_body` (the
Messages API itself still takes them).
"""

from __future__ import annotations

from pathlib import Path

import anthropic
import httpx
import pytest

from tests.api.conftest import Server
from tests.api.tools import ANTHROPIC_TOOL as WEATHER

HELLO = [{"role": "user", "content": "Hello, how are you?"}]
GREEDY = {"temperature": 0}


def client(server: Server, key: str | None = "default", **kw: object) -> anthropic.Anthropic:
    return anthropic.Anthropic(
        base_url=server.base_url.rstrip("/"),
        api_key=server.key if key == "default" else key,
        max_retries=0,
        **kw,  # type: ignore[arg-type]
    )


def test_text_system_multi_turn_and_usage(server: Server, model: str) -> None:
    c = client(server)
    messages = [
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": [{"type": "text", "text": "Hello!"}]},
        {"role": "user", "content": [{"type": "text", "text": "How are you?"}]},
    ]
    r = c.messages.create(
        model=model, max_tokens=6, system="Be brief.", messages=messages, extra_body=GREEDY
    )  # type: ignore[arg-type]
    assert r.type == "message" and r.role == "assistant" and r.id.startswith("msg_")
    assert r.model == model and r.stop_reason == "max_tokens"
    assert [b.type for b in r.content] == ["text"] and r.content[0].text  # type: ignore[union-attr]
    assert r.usage.output_tokens == 6
    # the same prompt again: the prompt cache serves it, and Anthropic's usage says so
    again = c.messages.create(
        model=model, max_tokens=6, system="Be brief.", messages=messages, extra_body=GREEDY
    )  # type: ignore[arg-type]
    assert again.content[0].text == r.content[0].text  # type: ignore[union-attr]
    assert again.usage.cache_read_input_tokens and again.usage.cache_read_input_tokens > 0
    total = r.usage.input_tokens + (r.usage.cache_read_input_tokens or 0)
    assert again.usage.input_tokens + again.usage.cache_read_input_tokens == total
    count = c.messages.count_tokens(model=model, system="Be brief.", messages=messages)  # type: ignore[arg-type]
    assert count.input_tokens == total


def test_stop_sequences_and_sampling(server: Server, model: str) -> None:
    c = client(server)
    free = c.messages.create(model=model, max_tokens=12, messages=HELLO, extra_body=GREEDY)  # type: ignore[arg-type]
    text = free.content[0].text  # type: ignore[union-attr]
    stop = text.strip()[2:4] or text[1:3]
    assert stop
    r = c.messages.create(
        model=model, max_tokens=12, messages=HELLO, stop_sequences=[stop], extra_body=GREEDY
    )  # type: ignore[arg-type]
    assert r.stop_reason == "stop_sequence" and r.stop_sequence == stop
    assert r.content[0].text == text[: text.index(stop)]  # type: ignore[union-attr]
    # top_k 1 is greedy whatever the temperature
    k1 = c.messages.create(
        model=model, max_tokens=12, messages=HELLO, extra_body={"temperature": 1, "top_k": 1}
    )  # type: ignore[arg-type]
    assert k1.content[0].text == text  # type: ignore[union-attr]


def test_streaming_event_sequence(server: Server, model: str) -> None:
    c = client(server)
    with c.messages.stream(model=model, max_tokens=5, messages=HELLO, extra_body=GREEDY) as s:  # type: ignore[arg-type]
        kinds = [ev.type for ev in s]
        final = s.get_final_message()
    assert kinds[0] == "message_start"
    assert kinds[-2:] == ["message_delta", "message_stop"]
    assert "content_block_start" in kinds and "content_block_stop" in kinds
    assert final.usage.output_tokens == 5 and final.stop_reason == "max_tokens"
    whole = c.messages.create(model=model, max_tokens=5, messages=HELLO, extra_body=GREEDY)  # type: ignore[arg-type]
    assert final.content[0].text == whole.content[0].text  # type: ignore[union-attr]
    # on the wire: named events, a ping after message_start
    with httpx.stream(
        "POST",
        server.url("v1/messages"),
        json={"model": model, "max_tokens": 3, "messages": HELLO, "stream": True},
        headers={"x-api-key": server.key or "", "anthropic-version": "2023-06-01"},
        timeout=60,
    ) as r:
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
        events = [line[7:] for line in r.iter_lines() if line.startswith("event: ")]
    assert events[:3] == ["message_start", "ping", "content_block_start"]
    assert events[-3:] == ["content_block_stop", "message_delta", "message_stop"]


def test_tools_out_and_results_in(server: Server, tool_model_dir: Path) -> None:
    c = client(server)
    model = str(tool_model_dir)
    ask = [{"role": "user", "content": "Weather in Paris?"}]
    r = c.messages.create(
        model=model,
        max_tokens=80,
        messages=ask,  # type: ignore[arg-type]
        tools=[WEATHER],  # type: ignore[list-item]
        tool_choice={"type": "tool", "name": "get_weather"},
    )
    assert r.stop_reason == "tool_use"
    (use,) = [b for b in r.content if b.type == "tool_use"]
    assert use.name == "get_weather" and use.input["city"] in ("Paris", "Rome")  # type: ignore[index]
    # streamed: the call arrives as a tool_use block with its input as JSON deltas
    with c.messages.stream(
        model=model,
        max_tokens=80,
        messages=ask,
        tools=[WEATHER],
        tool_choice={"type": "any"},  # type: ignore[arg-type,list-item]
    ) as s:
        final = s.get_final_message()
    assert final.stop_reason == "tool_use" and final.content[-1].type == "tool_use"
    # the tool's answer goes back as a tool_result block
    follow = ask + [
        {"role": "assistant", "content": [use.model_dump()]},
        {
            "role": "user",
            "content": [{"type": "tool_result", "tool_use_id": use.id, "content": '{"temp": 21}'}],
        },
    ]
    r2 = c.messages.create(
        model=model,
        max_tokens=4,
        messages=follow,
        tools=[WEATHER],
        tool_choice={"type": "none"},  # type: ignore[arg-type,list-item]
    )
    assert r2.stop_reason == "max_tokens" and r2.content[0].type == "text"


def test_thinking_blocks(server: Server, think_model_dir: Path) -> None:
    c = client(server)
    model = str(think_model_dir)
    # a budget of 2 tokens: the engine ends the thinking there, the answer follows
    r = c.messages.create(
        model=model,
        max_tokens=6,
        messages=HELLO,  # type: ignore[arg-type]
        thinking={"type": "enabled", "budget_tokens": 2},
        extra_body=GREEDY,
    )
    assert [b.type for b in r.content] == ["thinking", "text"]
    assert r.usage.output_tokens == 6
    with c.messages.stream(
        model=model,
        max_tokens=6,
        messages=HELLO,  # type: ignore[arg-type]
        thinking={"type": "enabled", "budget_tokens": 2},
        extra_body=GREEDY,
    ) as s:
        kinds = [ev.delta.type for ev in s if ev.type == "content_block_delta"]
        streamed = s.get_final_message()
    assert "thinking_delta" in kinds and "text_delta" in kinds
    assert streamed.content[0].thinking == r.content[0].thinking  # type: ignore[union-attr]
    assert streamed.content[1].text == r.content[1].text  # type: ignore[union-attr]
    # display "omitted" leaves the thinking out; "disabled" turns it off in the template
    hidden = c.messages.create(
        model=model,
        max_tokens=6,
        messages=HELLO,  # type: ignore[arg-type]
        thinking={"type": "enabled", "budget_tokens": 2, "display": "omitted"},
        extra_body=GREEDY,
    )
    assert [b.type for b in hidden.content] == ["text"]
    assert hidden.content[0].text == r.content[1].text  # type: ignore[union-attr]
    off = c.messages.create(
        model=model,
        max_tokens=4,
        messages=HELLO,
        thinking={"type": "disabled"},
        extra_body=GREEDY,  # type: ignore[arg-type]
    )
    assert [b.type for b in off.content] == ["text"]


def test_errors_in_anthropic_shape(server: Server, model: str) -> None:
    c = client(server)
    with pytest.raises(anthropic.BadRequestError) as e:
        c.messages.create(model=model, max_tokens=0, messages=HELLO)  # type: ignore[arg-type]
    assert e.value.body["type"] == "error"  # type: ignore[index]
    assert e.value.body["error"]["type"] == "invalid_request_error"  # type: ignore[index]
    with pytest.raises(anthropic.NotFoundError) as nf:
        c.messages.create(model="no-such-model", max_tokens=5, messages=HELLO)  # type: ignore[arg-type]
    assert nf.value.body["error"]["type"] == "not_found_error"  # type: ignore[index]
    with pytest.raises(anthropic.AuthenticationError) as au:
        client(server, key="wrong-key").messages.create(model=model, max_tokens=5, messages=HELLO)  # type: ignore[arg-type]
    assert au.value.body["error"]["type"] == "authentication_error"  # type: ignore[index]
    # max_tokens is required, an image is refused by name, bad JSON is a 400: never a 5xx
    for body in (
        {"model": model, "messages": HELLO},
        {
            "model": model,
            "max_tokens": 5,
            "messages": [{"role": "user", "content": [{"type": "image"}]}],
        },
        {"model": model, "max_tokens": 5, "messages": HELLO, "thinking": {"type": "enabled"}},
    ):
        r = server.post("v1/messages", body)
        assert r.status_code == 400, r.text
        assert r.json()["type"] == "error" and r.json()["error"]["type"] == "invalid_request_error"
    r = httpx.post(
        server.url("v1/messages"),
        content=b"{nope",
        headers={"x-api-key": server.key or ""},
        timeout=30,
    )
    assert r.status_code == 400 and r.json()["error"]["type"] == "invalid_request_error"


def test_auth_by_x_api_key_or_bearer(server: Server, model: str) -> None:
    bearer = anthropic.Anthropic(
        base_url=server.base_url.rstrip("/"), auth_token=server.key, max_retries=0
    )
    r = bearer.messages.create(model=model, max_tokens=2, messages=HELLO)  # type: ignore[arg-type]
    assert r.usage.output_tokens == 2
    # an inference-only key works for the Messages API (it is under /v1)
    created = server.post("admin/keys", {"name": "anthropic"}).json()
    try:
        r = client(server, key=created["key"]).messages.create(
            model=model,
            max_tokens=2,
            messages=HELLO,  # type: ignore[arg-type]
        )
        assert r.usage.output_tokens == 2
    finally:
        httpx.delete(
            server.url(f"admin/keys/{created['id']}"), headers=server.headers(), timeout=30
        )
    metrics = server.get("metrics").text
    assert 'endpoint="/v1/messages"' in metrics
    assert "impetus:http_request_duration_seconds_bucket" in metrics
