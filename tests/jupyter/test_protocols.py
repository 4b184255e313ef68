"""Anthropic Messages, OpenAI Responses and Ollama inside Jupyter, with Jupyter's token, through
the official clients. One test: each one starts a Jupyter server and an engine."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import anthropic
import httpx
import ollama
import openai
import pytest

from tests.jupyter.test_extension import base, token

HELLO = [{"role": "user", "content": "Hello"}]


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
