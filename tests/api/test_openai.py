"""The OpenAI endpoints of a real `impetus serve`, driven by the official openai SDK."""

from __future__ import annotations

import base64
import json
import struct
from typing import Any

import httpx
import openai
import pytest

from tests.api.conftest import Server
from tests.api.tools import ANSWER_SCHEMA, CHAT_TOOL

HELLO = [{"role": "user", "content": "Hello, how are you?"}]


def greedy(server: Server, model: str, **options: Any) -> Any:
    """HELLO to `model` at temperature 0, with `options`, through the official SDK."""
    return server.openai().chat.completions.create(
        model=model, messages=HELLO, temperature=0, **options
    )  # type: ignore[arg-type]


def test_models_list_and_get(server: Server, model: str) -> None:
    client = server.openai()
    ids = [m.id for m in client.models.list().data]
    assert model in ids
    card = client.models.retrieve(model)
    assert card.id == model and card.object == "model"
    assert card.model_extra and card.model_extra["loaded"] is True
    with pytest.raises(openai.NotFoundError) as e:
        client.models.retrieve("no-such-model")
    assert e.value.body["code"] == "model_not_found"  # type: ignore[index]


def test_chat_completion(server: Server, model: str) -> None:
    r = greedy(server, model, max_tokens=12)
    assert r.object == "chat.completion" and r.id.startswith("chatcmpl-")
    assert r.model == model
    (choice,) = r.choices
    assert choice.message.role == "assistant" and choice.message.content
    assert choice.finish_reason == "length"
    assert r.usage is not None
    assert r.usage.completion_tokens == 12
    assert r.usage.prompt_tokens > 0 and r.usage.total_tokens == r.usage.prompt_tokens + 12
    assert r.usage.prompt_tokens_details is not None


def test_cached_tokens_reported_on_the_second_turn(server: Server, model: str) -> None:
    client = server.openai()
    messages = [
        {"role": "user", "content": "A long enough question about caching prompts: does it work?"}
    ]
    first = client.chat.completions.create(
        model=model, messages=messages, max_tokens=4, temperature=0
    )  # type: ignore[arg-type]
    second = client.chat.completions.create(
        model=model, messages=messages, max_tokens=4, temperature=0
    )  # type: ignore[arg-type]
    assert first.usage and second.usage and second.usage.prompt_tokens_details
    assert second.usage.prompt_tokens == first.usage.prompt_tokens
    assert second.usage.prompt_tokens_details.cached_tokens > 0


def test_max_completion_tokens_wins_over_max_tokens(server: Server, model: str) -> None:
    r = greedy(server, model, max_tokens=30, max_completion_tokens=5)
    assert r.usage and r.usage.completion_tokens == 5


def test_streaming_without_usage(server: Server, model: str) -> None:
    chunks = list(greedy(server, model, max_tokens=8, stream=True))
    assert chunks[0].choices[0].delta.role == "assistant"
    assert all(c.usage is None for c in chunks)
    text = "".join(c.choices[0].delta.content or "" for c in chunks)
    assert text
    assert chunks[-1].choices[0].finish_reason == "length"
    assert len({c.id for c in chunks}) == 1


def test_streaming_with_usage_and_raw_sse_shape(server: Server, model: str) -> None:
    body = {
        "model": model,
        "messages": HELLO,
        "max_tokens": 6,
        "temperature": 0,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    with httpx.stream(
        "POST", server.url("v1/chat/completions"), json=body, headers=server.headers(), timeout=60
    ) as r:
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/event-stream")
        assert r.headers["cache-control"] == "no-cache"
        events = [line[len("data: ") :] for line in r.iter_lines() if line.startswith("data: ")]
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    *body_chunks, last = chunks
    assert last["choices"] == [] and last["usage"]["completion_tokens"] == 6
    assert all("usage" in c and c["usage"] is None for c in body_chunks)
    # one chunk per token delta of the engine (the tiny model yields text on every token)
    content_chunks = [c for c in body_chunks if c["choices"][0]["delta"].get("content")]
    assert 1 <= len(content_chunks) <= 6


def test_continuous_usage_stats(server: Server, model: str) -> None:
    """vLLM's stream_options.continuous_usage_stats: the usage so far on every chunk, through the
    official SDK; it counts engine tokens and ends equal to the final usage."""
    chunks = list(
        server.openai().chat.completions.create(
            model=model,
            messages=HELLO,
            max_tokens=8,
            temperature=0,
            stream=True,
            stream_options={"include_usage": True, "continuous_usage_stats": True},  # type: ignore[typeddict-unknown-key]
            extra_body={"ignore_eos": True},
        )
    )
    *body, last = chunks
    counts = [c.usage.completion_tokens for c in body if c.choices and c.choices[0].delta.content]
    assert counts and counts == sorted(counts) and counts[-1] <= 8
    assert all(c.usage.prompt_tokens == last.usage.prompt_tokens for c in body if c.usage)
    assert last.usage.completion_tokens == 8


def test_streaming_with_empty_stream_options(server: Server, model: str) -> None:
    chunks = list(
        server.openai().chat.completions.create(
            model=model, messages=HELLO, max_tokens=4, temperature=0, stream=True, stream_options={}
        )  # type: ignore[arg-type]
    )
    assert chunks and chunks[-1].choices[0].finish_reason == "length"


def test_n_choices(server: Server, model: str) -> None:
    r = server.openai().chat.completions.create(
        model=model, messages=HELLO, max_tokens=6, n=3, seed=7, extra_body={"ignore_eos": True}
    )  # type: ignore[arg-type]
    assert sorted(c.index for c in r.choices) == [0, 1, 2]
    assert r.usage and r.usage.completion_tokens == 18
    stream = greedy(server, model, max_tokens=4, n=2, stream=True)
    finished = {c.choices[0].index for c in stream if c.choices and c.choices[0].finish_reason}
    assert finished == {0, 1}


def test_seed_makes_sampling_reproducible(server: Server, model: str) -> None:
    client = server.openai()

    def run(seed: int) -> str:
        r = client.chat.completions.create(
            model=model, messages=HELLO, max_tokens=16, temperature=1.0, seed=seed
        )  # type: ignore[arg-type]
        return r.choices[0].message.content or ""

    assert run(1) == run(1)
    assert len({run(s) for s in (1, 2, 3)}) > 1


def test_stop_strings(server: Server, model: str) -> None:
    client = server.openai()
    full = client.chat.completions.create(model=model, messages=HELLO, max_tokens=24, temperature=0)  # type: ignore[arg-type]
    text = full.choices[0].message.content or ""
    assert len(text) > 6
    stop = text[4:6]
    head = text[: text.index(stop)]
    for value in (stop, [stop, "never-seen-stop"]):
        r = client.chat.completions.create(
            model=model, messages=HELLO, max_tokens=24, temperature=0, stop=value
        )  # type: ignore[arg-type]
        assert r.choices[0].message.content == head
        assert r.choices[0].finish_reason == "stop"


def test_chat_logprobs(server: Server, model: str) -> None:
    r = greedy(server, model, max_tokens=5, logprobs=True, top_logprobs=3)
    lp = r.choices[0].logprobs
    assert lp is not None and lp.content is not None and len(lp.content) == 5
    for item in lp.content:
        assert item.logprob <= 0 and len(item.top_logprobs) == 3
        assert item.bytes is not None
        # greedy: the chosen token is the most likely one
        assert item.logprob == pytest.approx(item.top_logprobs[0].logprob)
    streamed = greedy(server, model, max_tokens=4, logprobs=True, stream=True)
    tokens = [
        t
        for c in streamed
        if c.choices and c.choices[0].logprobs
        for t in c.choices[0].logprobs.content or []
    ]
    assert len(tokens) == 4


def test_unknown_parameters_are_ignored(server: Server, model: str) -> None:
    r = server.openai().chat.completions.create(
        model=model,
        messages=HELLO,  # type: ignore[arg-type]
        max_tokens=3,
        temperature=0,
        user="someone",
        metadata={"a": "b"},
        extra_body={"some_future_param": {"x": 1}, "another": [1, 2]},
    )
    assert r.usage and r.usage.completion_tokens == 3


def test_json_object_mode(server: Server, model: str) -> None:
    r = server.openai().chat.completions.create(
        model=model,
        messages=[{"role": "user", "content": "Reply in JSON."}],
        max_tokens=200,
        temperature=0,
        response_format={"type": "json_object"},
        extra_body={"top_k": 5},
    )
    assert isinstance(json.loads(r.choices[0].message.content or ""), dict)


def test_json_schema_mode(server: Server, model: str) -> None:
    r = server.openai().chat.completions.create(
        model=model,
        messages=[{"role": "user", "content": "Answer."}],
        max_tokens=60,
        response_format={
            "type": "json_schema",
            "json_schema": {"name": "answer", "schema": ANSWER_SCHEMA, "strict": True},
        },
    )
    data = json.loads(r.choices[0].message.content or "")
    assert (
        set(data) == {"ok", "color"}
        and isinstance(data["ok"], bool)
        and data["color"] in ("red", "green")
    )
    assert r.choices[0].finish_reason == "stop"


TOOLS = [CHAT_TOOL]


def test_tool_calls(server: Server, tool_model_dir: object) -> None:
    client = server.openai()
    model = str(tool_model_dir)  # loaded just in time by this request
    messages = [{"role": "user", "content": "Weather in Paris?"}]
    r = client.chat.completions.create(
        model=model, messages=messages, tools=TOOLS, tool_choice="required", max_tokens=80
    )  # type: ignore[arg-type]
    choice = r.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.tool_calls
    call = choice.message.tool_calls[0]
    assert call.type == "function" and call.id
    assert call.function.name == "get_weather"
    assert json.loads(call.function.arguments)["city"] in ("Paris", "Rome")

    # the named form, streamed: the call arrives as a tool_calls delta before the finish
    chunks = list(
        client.chat.completions.create(
            model=model,
            messages=messages,  # type: ignore[arg-type]
            tools=TOOLS,  # type: ignore[arg-type]
            tool_choice={"type": "function", "function": {"name": "get_weather"}},
            max_tokens=80,
            stream=True,
        )
    )
    calls = [tc for c in chunks if c.choices for tc in c.choices[0].delta.tool_calls or []]
    assert calls and calls[0].function and calls[0].function.name == "get_weather"
    assert chunks[-1].choices[0].finish_reason == "tool_calls"

    # the conversation goes on with the tool's answer
    follow = messages + [
        {"role": "assistant", "content": None, "tool_calls": [call.model_dump()]},
        {"role": "tool", "tool_call_id": call.id, "content": '{"temp": 21}'},
    ]
    # (ignore_eos: the random model may sample its end token within five; the point is no call)
    r2 = client.chat.completions.create(
        model=model,
        messages=follow,  # type: ignore[arg-type]
        tools=TOOLS,  # type: ignore[arg-type]
        tool_choice="none",
        max_tokens=5,
        extra_body={"ignore_eos": True},
    )
    assert r2.choices[0].finish_reason == "length" and not r2.choices[0].message.tool_calls


def test_tool_choice_naming_an_unknown_tool_is_400(server: Server, model: str) -> None:
    with pytest.raises(openai.BadRequestError) as e:
        server.openai().chat.completions.create(
            model=model,
            messages=HELLO,
            tools=TOOLS,
            tool_choice={"type": "function", "function": {"name": "nope"}},  # type: ignore[arg-type]
        )
    assert e.value.body["param"] == "tool_choice"  # type: ignore[index]


def test_legacy_completions(server: Server, model: str) -> None:
    client = server.openai()
    r = client.completions.create(
        model=model, prompt="The quick brown", max_tokens=6, temperature=0, logprobs=2
    )
    assert r.object == "text_completion"
    (choice,) = r.choices
    assert choice.finish_reason == "length" and choice.text
    lp = choice.logprobs
    assert lp is not None and lp.tokens and lp.token_logprobs and lp.top_logprobs and lp.text_offset
    assert (
        len(lp.tokens) == 6 == len(lp.token_logprobs) == len(lp.top_logprobs) == len(lp.text_offset)
    )
    # offsets advance by each token's text (tokens that split a UTF-8 character print as U+FFFD)
    assert lp.text_offset == [sum(len(t) for t in lp.tokens[:i]) for i in range(6)]
    # two alternatives per position (fewer keys when two are the same U+FFFD text)
    assert all(d and 1 <= len(d) <= 2 for d in lp.top_logprobs)
    # default max_tokens is OpenAI's 16
    r = client.completions.create(model=model, prompt="Hello", temperature=0)
    assert r.usage and r.usage.completion_tokens == 16


def test_completions_batch_echo_and_stream(server: Server, model: str) -> None:
    client = server.openai()
    r = client.completions.create(
        model=model, prompt=["Hello", "The quick"], max_tokens=4, n=2, echo=True, temperature=0
    )
    assert [c.index for c in r.choices] == [0, 1, 2, 3]
    assert r.choices[0].text.startswith("Hello") and r.choices[2].text.startswith("The quick")
    assert r.choices[0].text == r.choices[1].text  # greedy: both choices alike
    assert r.usage and r.usage.completion_tokens == 16
    token_prompt = client.completions.create(
        model=model, prompt=[5, 6, 7, 8], max_tokens=3, temperature=0
    )
    assert token_prompt.usage and token_prompt.usage.prompt_tokens == 4
    chunks = list(
        client.completions.create(
            model=model,
            prompt="Hello",
            max_tokens=5,
            temperature=0,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    assert chunks[-1].usage and chunks[-1].usage.completion_tokens == 5
    assert any(c.choices and c.choices[0].finish_reason == "length" for c in chunks)


def test_embeddings(server: Server) -> None:
    client = server.openai()
    r = client.embeddings.create(
        model="minilm", input=["a cat sits on the mat", "a dog lies on the rug"]
    )
    assert [d.index for d in r.data] == [0, 1]
    vec = r.data[0].embedding  # the SDK asked for base64 and decoded it
    assert len(vec) == 384 and abs(sum(x * x for x in vec) - 1.0) < 1e-3
    assert r.usage.prompt_tokens > 0
    raw = server.post(
        "v1/embeddings", {"model": "minilm", "input": "hello", "encoding_format": "float"}
    ).json()
    assert isinstance(raw["data"][0]["embedding"], list)
    b64 = server.post(
        "v1/embeddings", {"model": "minilm", "input": "hello", "encoding_format": "base64"}
    ).json()
    decoded = struct.unpack("<384f", base64.b64decode(b64["data"][0]["embedding"]))
    assert decoded == pytest.approx(raw["data"][0]["embedding"], abs=1e-6)
    bad = server.post("v1/embeddings", {"model": "minilm", "input": "hello", "dimensions": 64})
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "dimensions"
