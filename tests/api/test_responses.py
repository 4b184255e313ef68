"""OpenAI's Responses API on a real `impetus serve`, driven by the official openai SDK."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import openai
import pytest

from tests.api.conftest import Server
from tests.api.tools import ANSWER_SCHEMA
from tests.api.tools import RESPONSES_TOOL as WEATHER


def test_text_store_get_delete(server: Server, model: str) -> None:
    c = server.openai()
    r = c.responses.create(
        model=model,
        input="Hello there",
        instructions="Be brief.",
        max_output_tokens=6,
        temperature=0,
    )
    assert r.object == "response" and r.id.startswith("resp_") and r.model == model
    assert (
        r.status == "incomplete"
        and r.incomplete_details
        and r.incomplete_details.reason == "max_output_tokens"
    )
    assert r.output[0].type == "message" and r.output_text
    assert r.usage and r.usage.output_tokens == 6 and r.usage.input_tokens > 0
    got = c.responses.retrieve(r.id)
    assert got.output_text == r.output_text and got.usage == r.usage
    c.responses.delete(r.id)
    with pytest.raises(openai.NotFoundError):
        c.responses.retrieve(r.id)
    # input as items gives the same prompt as the string form
    items = c.responses.create(
        model=model,
        input=[{"role": "user", "content": [{"type": "input_text", "text": "Hello there"}]}],
        instructions="Be brief.",
        max_output_tokens=6,
        temperature=0,
    )
    assert items.output_text == r.output_text


def test_previous_response_id_reuses_the_prompt_cache(server: Server, model: str) -> None:
    c = server.openai()
    first = c.responses.create(
        model=model, input="Tell me about the sea.", max_output_tokens=5, temperature=0
    )
    second = c.responses.create(
        model=model,
        input="And the sky?",
        previous_response_id=first.id,
        max_output_tokens=5,
        temperature=0,
    )
    assert first.usage and second.usage
    # the continued prompt holds the first prompt and answer, read from the prompt cache
    assert second.usage.input_tokens > first.usage.input_tokens + first.usage.output_tokens
    assert second.usage.input_tokens_details.cached_tokens >= first.usage.input_tokens
    assert second.previous_response_id == first.id
    # store: false is not kept
    gone = c.responses.create(model=model, input="Hi", max_output_tokens=2, store=False)
    with pytest.raises(openai.NotFoundError):
        c.responses.retrieve(gone.id)
    with pytest.raises(openai.NotFoundError):
        c.responses.create(
            model=model, input="Hi", previous_response_id=gone.id, max_output_tokens=2
        )


def test_streaming_event_sequence(server: Server, model: str) -> None:
    c = server.openai()
    events = list(
        c.responses.create(
            model=model, input="Hello there", max_output_tokens=5, temperature=0, stream=True
        )
    )
    kinds = [e.type for e in events]
    assert kinds[:4] == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
    ]
    assert "response.output_text.delta" in kinds
    assert kinds[-4:] == [
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.incomplete",
    ]
    assert [e.sequence_number for e in events] == list(range(len(events)))
    text = "".join(e.delta for e in events if e.type == "response.output_text.delta")  # type: ignore[union-attr]
    final = events[-1].response  # type: ignore[union-attr]
    assert final.output_text == text and final.usage and final.usage.output_tokens == 5
    whole = c.responses.create(model=model, input="Hello there", max_output_tokens=5, temperature=0)
    assert whole.output_text == text


def test_function_tools_and_outputs(server: Server, tool_model_dir: Path) -> None:
    c = server.openai()
    model = str(tool_model_dir)
    r = c.responses.create(
        model=model,
        input="Weather in Paris?",
        tools=[WEATHER],
        tool_choice="required",
        max_output_tokens=80,  # type: ignore[list-item]
    )
    (call,) = [o for o in r.output if o.type == "function_call"]
    assert call.name == "get_weather" and json.loads(call.arguments)["city"] in ("Paris", "Rome")
    assert r.status == "completed"
    # streamed, with a named function
    events = list(
        c.responses.create(
            model=model,
            input="Weather in Rome?",
            tools=[WEATHER],  # type: ignore[list-item]
            tool_choice={"type": "function", "name": "get_weather"},
            max_output_tokens=80,
            stream=True,
        )
    )
    kinds = [e.type for e in events]
    assert "response.function_call_arguments.done" in kinds and kinds[-1] == "response.completed"
    # the tool's output continues the stored conversation
    r2 = c.responses.create(
        model=model,
        previous_response_id=r.id,
        input=[{"type": "function_call_output", "call_id": call.call_id, "output": '{"temp": 21}'}],
        tools=[WEATHER],  # type: ignore[list-item]
        tool_choice="none",
        max_output_tokens=4,
    )
    assert r2.output[0].type == "message" and r2.usage and r2.usage.output_tokens == 4


def test_json_schema_format_is_constrained(server: Server, model: str) -> None:
    r = server.openai().responses.create(
        model=model,
        input="Give me a number.",
        max_output_tokens=60,
        text={
            "format": {
                "type": "json_schema",
                "name": "answer",
                "schema": ANSWER_SCHEMA,
                "strict": True,
            }
        },
    )
    data = json.loads(r.output_text)
    assert data["color"] in ("red", "green") and isinstance(data["ok"], bool)
    assert r.status == "completed"


def test_reasoning_items(server: Server, think_model_dir: Path) -> None:
    c = server.openai()
    model = str(think_model_dir)
    r = c.responses.create(model=model, input="Hello", max_output_tokens=4, temperature=0)
    # the template opens the think block: the output starts as reasoning
    assert r.output[0].type == "reasoning"
    reasoning = "".join(p.text for p in r.output[0].content or [])  # type: ignore[union-attr]
    assert r.usage and r.usage.output_tokens_details.reasoning_tokens > 0
    events = list(
        c.responses.create(
            model=model, input="Hello", max_output_tokens=4, temperature=0, stream=True
        )
    )
    streamed = "".join(e.delta for e in events if e.type == "response.reasoning_text.delta")  # type: ignore[union-attr]
    assert streamed == reasoning
    # include_reasoning: false (impetus's extension, as in chat completions) leaves the reasoning
    # item out, stored and streamed; the rest of the output and the token counts stay as they were
    # (the tiny model thinks through all 4 tokens here, so the rest is empty)
    answer = [i.model_dump(exclude={"id"}) for i in r.output if i.type != "reasoning"]
    off = c.responses.create(
        model=model,
        input=[{"role": "user", "content": "Hello"}],
        max_output_tokens=4,
        temperature=0,
        extra_body={"include_reasoning": False},
    )
    assert [i.model_dump(exclude={"id"}) for i in off.output] == answer
    assert off.usage and off.usage.output_tokens_details.reasoning_tokens > 0
    assert c.responses.retrieve(off.id).output == off.output
    events = list(
        c.responses.create(
            model=model,
            input="Hello",
            max_output_tokens=4,
            temperature=0,
            stream=True,
            extra_body={"include_reasoning": False},
        )
    )
    assert not [e.type for e in events if "reasoning" in e.type]
    assert "reasoning" not in [
        e.item.type for e in events if e.type == "response.output_item.added"
    ]  # type: ignore[union-attr]
    assert [i.model_dump(exclude={"id"}) for i in events[-1].response.output] == answer  # type: ignore[union-attr]


def test_errors(server: Server, model: str) -> None:
    c = server.openai()
    with pytest.raises(openai.BadRequestError) as e:
        c.responses.create(model=model, input=[], max_output_tokens=2)
    assert e.value.body["param"] == "input"  # type: ignore[index]
    with pytest.raises(openai.NotFoundError):
        c.responses.create(model="no-such-model", input="Hi", max_output_tokens=2)
    with pytest.raises(openai.AuthenticationError):
        server.openai(key="wrong").responses.create(model=model, input="Hi", max_output_tokens=2)
    with pytest.raises(openai.BadRequestError):
        c.responses.create(model=model, input="Hi", tool_choice="required", max_output_tokens=2)
    r = server.post("v1/responses", {"model": model, "input": [{"type": "image", "url": "x"}]})
    assert r.status_code == 400 and set(r.json()["error"]) == {"message", "type", "param", "code"}


def test_stored_responses_belong_to_their_key(server: Server, model: str) -> None:
    created = server.post("admin/keys", {"name": "responses"}).json()
    try:
        mine = server.openai(key=created["key"])
        r = mine.responses.create(model=model, input="Hi", max_output_tokens=2)
        assert mine.responses.retrieve(r.id).id == r.id
        # another credential (here the admin key) neither sees it nor continues from it
        with pytest.raises(openai.NotFoundError):
            server.openai().responses.retrieve(r.id)
        with pytest.raises(openai.NotFoundError):
            server.openai().responses.create(
                model=model, input="More", previous_response_id=r.id, max_output_tokens=2
            )
    finally:
        httpx.delete(
            server.url(f"admin/keys/{created['id']}"), headers=server.headers(), timeout=30
        )
