"""Anthropic Messages, OpenAI Responses and Ollama inside Jupyter, with Jupyter's token, through
the official clients: text, streaming, tools, errors, wrong keys. Two tests: each one starts a
Jupyter server and an engine."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import anthropic
import httpx
import ollama
import openai
import pytest

from tests.api.conftest import tool_model_dir  # noqa: F401  (a fixture: the tool-calling model)
from tests.api.tools import ANTHROPIC_TOOL, CHAT_TOOL, RESPONSES_TOOL
from tests.jupyter.test_extension import base, token

HELLO = [{"role": "user", "content": "Hello"}]
WEATHER = [{"role": "user", "content": "Weather in Paris?"}]


@pytest.fixture
def jp_server_config(jp_server_config: dict[str, Any], tool_model_dir: Path) -> dict[str, Any]:  # noqa: F811
    """The folder's config, with the tool-calling model served too."""
    ext = jp_server_config["ImpetusExtension"]
    return {
        **jp_server_config,
        "ImpetusExtension": {**ext, "models": [*ext["models"], str(tool_model_dir)]},
    }


async def test_every_protocol_with_the_jupyter_token(
    jp_fetch: Any, jp_serverapp: Any, tiny_model_dir: Path
) -> None:
    """(jp_fetch starts the server listening.)"""
    model = str(tiny_model_dir)
    root = base(jp_serverapp).rstrip("/")  # http://localhost:PORT/a%40b/impetus
    tok = token(jp_serverapp)

    # Anthropic: the SDK sends the token as x-api-key
    async with anthropic.AsyncAnthropic(base_url=root, api_key=tok, max_retries=0) as a:
        msg = await a.messages.create(model=model, max_tokens=3, messages=HELLO)  # type: ignore[arg-type]
        assert msg.usage.output_tokens == 3 and msg.content[0].type == "text"
        async with a.messages.stream(model=model, max_tokens=3, messages=HELLO) as s:  # type: ignore[arg-type]
            kinds = [ev.type async for ev in s]
        assert kinds[0] == "message_start" and kinds[-1] == "message_stop"
    async with anthropic.AsyncAnthropic(base_url=root, api_key="wrong", max_retries=0) as bad:
        with pytest.raises(anthropic.AuthenticationError) as e:
            await bad.messages.create(model=model, max_tokens=3, messages=HELLO)  # type: ignore[arg-type]
        assert e.value.body["type"] == "error"  # type: ignore[index]

    # OpenAI Responses
    async with openai.AsyncOpenAI(base_url=root + "/v1", api_key=tok, max_retries=0) as o:
        r = await o.responses.create(model=model, input="Hello", max_output_tokens=3)
        assert r.usage and r.usage.output_tokens == 3
        again = await o.responses.create(
            model=model, input="More", previous_response_id=r.id, max_output_tokens=3
        )
        assert (
            again.usage and again.usage.input_tokens_details.cached_tokens >= r.usage.input_tokens
        )
        events = [
            e.type
            async for e in await o.responses.create(
                model=model, input="Hi", max_output_tokens=3, stream=True
            )
        ]
        assert events[0] == "response.created" and events[-1] in (
            "response.completed",
            "response.incomplete",
        )

    # Ollama: the host is the impetus prefix, under Jupyter's base_url (never Jupyter's own /api)
    headers = {"Authorization": f"Bearer {tok}"}
    o2 = ollama.AsyncClient(host=root, headers=headers)
    chat = await o2.chat(model=model, messages=HELLO, stream=False, options={"num_predict": 3})
    assert chat.done and chat.eval_count == 3
    parts = [
        p
        async for p in await o2.chat(
            model=model, messages=HELLO, options={"num_predict": 3}, stream=True
        )
    ]
    assert parts[-1].done and parts[-1].eval_count == 3
    assert model + ":latest" in [m.model for m in (await o2.ps()).models]
    with pytest.raises(ollama.ResponseError) as oe:
        await ollama.AsyncClient(host=root, headers={"Authorization": "Bearer wrong"}).chat(
            model=model, messages=HELLO, stream=False
        )
    assert oe.value.status_code in (401, 403)
    # Jupyter's own /api is untouched
    async with httpx.AsyncClient() as h:
        status = await h.get(
            f"http://localhost:{jp_serverapp.port}{jp_serverapp.base_url}api/status",
            headers=headers,
        )
    assert status.status_code == 200 and "started" in status.json()


async def test_tools_and_errors_of_every_protocol(
    jp_fetch: Any,
    jp_serverapp: Any,
    tiny_model_dir: Path,
    tool_model_dir: Path,  # noqa: F811
) -> None:
    """Each protocol's tool calls out and tool results in, and bad input answered in the
    protocol's own error shape (a 4xx, never a 5xx)."""
    model, tools = str(tiny_model_dir), str(tool_model_dir)
    root = base(jp_serverapp).rstrip("/")
    tok = token(jp_serverapp)

    # Anthropic: a forced tool_use block out, its tool_result block in
    async with anthropic.AsyncAnthropic(base_url=root, api_key=tok, max_retries=0) as a:
        r = await a.messages.create(
            model=tools,
            max_tokens=80,
            messages=WEATHER,  # type: ignore[arg-type]
            tools=[ANTHROPIC_TOOL],  # type: ignore[list-item]
            tool_choice={"type": "tool", "name": "get_weather"},
        )
        assert r.stop_reason == "tool_use"
        (use,) = [b for b in r.content if b.type == "tool_use"]
        assert use.name == "get_weather" and use.input["city"] in ("Paris", "Rome")  # type: ignore[index]
        result = {"type": "tool_result", "tool_use_id": use.id, "content": '{"temp": 21}'}
        after = await a.messages.create(
            model=tools,
            max_tokens=3,
            messages=[  # type: ignore[list-item]
                *WEATHER,
                {"role": "assistant", "content": [use.model_dump()]},
                {"role": "user", "content": [result]},
            ],
            tools=[ANTHROPIC_TOOL],  # type: ignore[list-item]
        )
        assert after.usage.output_tokens == 3
        with pytest.raises(anthropic.BadRequestError) as ae:
            await a.messages.create(model=model, max_tokens=0, messages=HELLO)  # type: ignore[arg-type]
        assert ae.value.body["type"] == "error"  # type: ignore[index]
        assert ae.value.body["error"]["type"] == "invalid_request_error"  # type: ignore[index]

    # OpenAI Responses: a required function_call out, its function_call_output in
    async with openai.AsyncOpenAI(base_url=root + "/v1", api_key=tok, max_retries=0) as o:
        resp = await o.responses.create(
            model=tools,
            input="Weather in Paris?",
            tools=[RESPONSES_TOOL],  # type: ignore[list-item]
            tool_choice="required",
            max_output_tokens=80,
        )
        (call,) = [item for item in resp.output if item.type == "function_call"]
        assert call.name == "get_weather"
        assert json.loads(call.arguments)["city"] in ("Paris", "Rome")
        output = {"type": "function_call_output", "call_id": call.call_id, "output": '{"temp": 21}'}
        follow = await o.responses.create(
            model=tools,
            previous_response_id=resp.id,
            input=[output],  # type: ignore[list-item]
            tools=[RESPONSES_TOOL],  # type: ignore[list-item]
            tool_choice="none",
            max_output_tokens=3,
        )
        assert follow.output[0].type == "message" and follow.usage
        assert follow.usage.output_tokens == 3
        with pytest.raises(openai.BadRequestError) as oe:
            await o.responses.create(model=model, input=[], max_output_tokens=2)
        assert set(oe.value.body) == {"message", "type", "param", "code"}  # type: ignore[arg-type]
        assert oe.value.body["param"] == "input"  # type: ignore[index]
    async with openai.AsyncOpenAI(base_url=root + "/v1", api_key="wrong", max_retries=0) as bad:
        with pytest.raises(openai.AuthenticationError) as au:
            await bad.responses.create(model=model, input="Hi", max_output_tokens=2)
        assert set(au.value.body) == {"message", "type", "param", "code"}  # type: ignore[arg-type]

    # Ollama: tools offered (no tool_choice in Ollama's API: a random model may or may not call
    # one, so the shape is checked whichever way it went), a tool message in
    headers = {"Authorization": f"Bearer {tok}"}
    ol = ollama.AsyncClient(host=root, headers=headers)
    chat = await ol.chat(
        model=tools, messages=WEATHER, tools=[CHAT_TOOL], stream=False, options={"num_predict": 80}
    )
    for tool_call in chat.message.tool_calls or []:
        assert tool_call.function.name == "get_weather"
        assert isinstance(tool_call.function.arguments, dict)
    answered = await ol.chat(
        model=tools,
        messages=[
            *WEATHER,
            {
                "role": "assistant",
                "content": "",
                "tool_calls": [
                    {"function": {"name": "get_weather", "arguments": {"city": "Paris"}}}
                ],
            },
            {"role": "tool", "content": '{"temp": 21}', "tool_name": "get_weather"},
        ],
        stream=False,
        options={"num_predict": 3},
    )
    assert answered.done and answered.eval_count == 3
    assert "tools" in ((await ol.show(tools)).capabilities or [])
    with pytest.raises(ollama.ResponseError) as le:
        await ol.chat(model=model, messages=HELLO, stream=False, options={"temperature": 9})
    # the client found Ollama's {"error": "..."} and took the message out of it
    assert le.value.status_code == 400 and le.value.error and not le.value.error.startswith("{")
    async with httpx.AsyncClient() as h:
        raw = await h.post(
            root + "/api/chat",
            json={"model": model, "messages": HELLO, "options": {"temperature": 9}},
            headers=headers,
        )
    assert raw.status_code == 400 and list(raw.json()) == ["error"]
