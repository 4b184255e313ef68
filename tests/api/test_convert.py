"""impetus.api.convert without a server: OpenAI requests -> engine requests, engine events ->
whole responses (Accumulator) and SSE chunks (ChunkMaker). Table-driven, milliseconds."""

from __future__ import annotations

from typing import Any

import pytest

from impetus.api import convert
from impetus.api.errors import APIError
from impetus.api.schemas import ChatCompletionRequest, CompletionRequest
from impetus.protocol import (
    Delta,
    Done,
    SamplingParams,
    Start,
    Timings,
    TokenLogprob,
    ToolCall,
    Usage,
)

HI = [{"role": "user", "content": "hi"}]


def chat(**fields: Any) -> ChatCompletionRequest:
    return ChatCompletionRequest.model_validate({"model": "m", "messages": HI, **fields})


def completion(**fields: Any) -> CompletionRequest:
    return CompletionRequest.model_validate({"model": "m", "prompt": "p", **fields})


def lp(token: str, logprob: float = -0.5, top: dict[str, float] | None = None) -> TokenLogprob:
    return TokenLogprob(
        token=token,
        token_id=1,
        logprob=logprob,
        top_logprobs=[TokenLogprob(token=t, token_id=2, logprob=v) for t, v in (top or {}).items()],
    )


def start(rid: str = "r", prompt: int = 5, cached: int = 0) -> Start:
    return Start(rid=rid, model="m", prompt_tokens=prompt, cached_tokens=cached)


def delta(text: str, index: int = 0, logprobs: list[TokenLogprob] | None = None) -> Delta:
    return Delta(rid="r", index=index, text=text, token_ids=[1], logprobs=logprobs)


def done(
    index: int = 0,
    reason: Any = "stop",
    tokens: int = 2,
    text: str = "",
    calls: list[ToolCall] | None = None,
) -> Done:
    return Done(
        rid="r",
        index=index,
        finish_reason=reason,
        usage=Usage(completion_tokens=tokens),
        timings=Timings(),
        text=text,
        tool_calls=calls,
    )


# ---------------------------------------------------------------- requests


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ({}, SamplingParams()),  # OpenAI's defaults: temperature 1, top_p 1
        (
            {"temperature": 0, "top_p": 0.5, "top_k": 4, "min_p": 0.1, "seed": 7},
            SamplingParams(temperature=0.0, top_p=0.5, top_k=4, min_p=0.1, seed=7),
        ),
        (
            {"presence_penalty": 1, "frequency_penalty": -1, "repetition_penalty": 1.1},
            SamplingParams(presence_penalty=1.0, frequency_penalty=-1.0, repetition_penalty=1.1),
        ),
        ({"logit_bias": {"42": -100}}, SamplingParams(logit_bias={42: -100.0})),  # keys: token ids
    ],
)
def test_sampling(fields: dict[str, Any], expected: SamplingParams) -> None:
    assert convert.sampling_from(chat(**fields)) == expected


@pytest.mark.parametrize(("stop", "expected"), [(None, []), ("x", ["x"]), (["a", "b"], ["a", "b"])])
def test_stop_list(stop: Any, expected: list[str]) -> None:
    assert convert.stop_list(stop) == expected


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ({}, {"n": 1, "max_tokens": None, "logprobs": False, "response_format": None}),
        ({"max_tokens": 10, "max_completion_tokens": 20}, {"max_tokens": 20}),
        ({"max_tokens": 10}, {"max_tokens": 10}),
        (
            {"n": 3, "logprobs": True, "top_logprobs": 2},
            {"n": 3, "logprobs": True, "top_logprobs": 2},
        ),
        ({"stop": "END"}, {"stop": ["END"]}),
        ({"response_format": {"type": "text"}}, {"response_format": None}),
        (
            {"response_format": {"type": "json_object"}},
            {"response_format": {"type": "json_object"}},
        ),
        (
            {"messages": [{"role": "developer", "content": "be brief"}, *HI]},
            {"messages": [{"role": "system", "content": "be brief"}, *HI]},
        ),
        (
            {"messages": [{"role": "user", "content": [{"type": "text", "text": "a"}]}]},
            {"messages": [{"role": "user", "content": [{"type": "text", "text": "a"}]}]},
        ),
        (
            {
                "tools": [{"type": "function", "function": {"name": "f", "parameters": {}}}],
                "tool_choice": {"type": "function", "function": {"name": "f"}},
            },
            {
                "tools": [{"type": "function", "function": {"name": "f", "parameters": {}}}],
                "tool_choice": {"type": "function", "function": {"name": "f"}},
            },
        ),
        ({"tool_choice": "none"}, {"tool_choice": "none"}),
        (
            {"chat_template_kwargs": {"enable_thinking": False}},
            {"chat_template_kwargs": {"enable_thinking": False}},
        ),
        ({"ignore_eos": True}, {"ignore_eos": True}),
    ],
)
def test_chat_request(fields: dict[str, Any], expected: dict[str, Any]) -> None:
    req = convert.chat_request(chat(**fields))
    assert {k: getattr(req, k) for k in expected} == expected
    assert req.model == "m" and req.prompt is None


@pytest.mark.parametrize(
    ("content", "param", "code"),
    [
        (
            [{"type": "text", "text": "a"}, {"type": "image_url", "image_url": {"url": "x"}}],
            "messages[0].content[1]",
            "unsupported_content",
        ),
        ([{"type": "text"}], "messages[0].content[0].text", None),
    ],
)
def test_chat_request_refuses_what_it_cannot_send(
    content: list[dict[str, Any]], param: str, code: str | None
) -> None:
    with pytest.raises(APIError) as e:
        convert.chat_request(chat(messages=[{"role": "user", "content": content}]))
    assert (e.value.status, e.value.param) == (400, param)
    if code:
        assert e.value.code == code


@pytest.mark.parametrize(
    ("prompt", "prompts"),
    [
        ("once", ["once"]),
        (["a", "b"], ["a", "b"]),
        ([1, 2, 3], [[1, 2, 3]]),  # one prompt of token ids
        ([[1, 2], [3]], [[1, 2], [3]]),
    ],
)
def test_completion_requests_one_per_prompt(prompt: Any, prompts: list[Any]) -> None:
    reqs = convert.completion_requests(completion(prompt=prompt, n=2, logprobs=3, max_tokens=4))
    assert [r.prompt for r in reqs] == prompts
    assert {(r.n, r.logprobs, r.top_logprobs, r.max_tokens, r.messages) for r in reqs} == {
        (2, True, 3, 4, None)
    }


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"echo": True, "logprobs": 1}, "'echo' together with 'logprobs'"),
        ({"echo": True, "prompt": [1, 2]}, "'echo' needs text prompts"),
    ],
)
def test_completion_requests_refused(fields: dict[str, Any], message: str) -> None:
    with pytest.raises(APIError, match=message) as e:
        convert.completion_requests(completion(**fields))
    assert e.value.param == "echo"


# ---------------------------------------------------------------- whole responses


def test_accumulated_chat_completion() -> None:
    acc = convert.Accumulator(n=2)
    call = ToolCall(id="call_1", name="f", arguments='{"x": 1}')
    events: list[tuple[int, Any]] = [
        (0, start(prompt=5, cached=3)),
        (0, delta("Hel", logprobs=[lp("Hel")])),
        (1, delta("")),  # a held-back token: nothing to add
        (0, delta("lo", logprobs=[lp("lo", top={"lo": -0.1})])),
        (0, done(0, "stop", tokens=2, text="!")),
        (1, done(1, "tool_calls", tokens=4, calls=[call])),
    ]
    for index, ev in events:
        acc.add(index, ev)
    out = acc.chat_completion("chatcmpl-1", 100, "m", want_logprobs=True).model_dump(
        exclude_none=True
    )
    first, second = out["choices"]
    assert first["message"] == {"role": "assistant", "content": "Hello!"}
    assert first["finish_reason"] == "stop"
    assert [t["token"] for t in first["logprobs"]["content"]] == ["Hel", "lo"]
    assert first["logprobs"]["content"][1]["top_logprobs"] == [{"token": "lo", "logprob": -0.1}]
    # a choice that only called tools has no content
    assert "content" not in second["message"]
    assert second["message"]["tool_calls"][0]["function"] == {"name": "f", "arguments": '{"x": 1}'}
    assert out["usage"] == {
        "prompt_tokens": 5,
        "completion_tokens": 6,  # both choices
        "total_tokens": 11,
        "prompt_tokens_details": {"cached_tokens": 3},
    }


def test_accumulated_completion_with_echo_and_offsets() -> None:
    acc = convert.Accumulator(n=1)
    for index, ev in [
        (0, start(prompt=2)),
        (1, start(prompt=3)),  # a batch of two prompts: prompt tokens add up
        (0, delta("ab", logprobs=[lp("a"), lp("b")])),
        (1, delta("z", logprobs=[lp("z")])),
        (0, done(0, "length", tokens=2)),
        (1, done(1, "stop", tokens=1)),
    ]:
        acc.add(index, ev)
    out = acc.completion("cmpl-1", 100, "m", want_logprobs=True, echo=["P0 ", "P1 "])
    texts = [c.text for c in out.choices]
    assert texts == ["P0 ab", "P1 z"]
    assert out.choices[0].logprobs is not None
    assert out.choices[0].logprobs.text_offset == [3, 4]  # after the echoed prompt
    assert out.choices[0].logprobs.tokens == ["a", "b"]
    assert [c.finish_reason for c in out.choices] == ["length", "stop"]
    assert (out.usage.prompt_tokens, out.usage.completion_tokens) == (5, 3)


# ---------------------------------------------------------------- streaming chunks


def maker(**kw: Any) -> convert.ChunkMaker:
    base: dict[str, Any] = {
        "rid": "id-1",
        "model": "m",
        "chat": True,
        "include_usage": False,
        "want_logprobs": False,
        "created": 100,
    }
    return convert.ChunkMaker(**{**base, **kw})


def choice(chunk: dict[str, Any] | None) -> dict[str, Any]:
    assert chunk is not None
    assert len(chunk["choices"]) == 1
    c: dict[str, Any] = chunk["choices"][0]
    return c


def test_chat_chunks() -> None:
    m = maker(include_usage=True)
    role = m.role(0)
    assert role["object"] == "chat.completion.chunk" and role["usage"] is None
    assert choice(role) == {
        "index": 0,
        "delta": {"role": "assistant", "content": ""},
        "finish_reason": None,
        "logprobs": None,
    }
    assert choice(m.delta(0, delta("Hi")))["delta"] == {"content": "Hi"}
    assert m.delta(0, delta("")) is None  # nothing to send for a held-back token
    call = ToolCall(id="c1", name="f", arguments="{}")
    chunks = m.done(0, done(0, "tool_calls", text=" there", calls=[call]))
    assert [choice(c)["delta"] for c in chunks[:2]] == [
        {"content": " there"},
        {
            "tool_calls": [
                {
                    "index": 0,
                    "id": "c1",
                    "type": "function",
                    "function": {"name": "f", "arguments": "{}"},
                }
            ]
        },
    ]
    assert choice(chunks[2]) == {
        "index": 0,
        "delta": {},
        "finish_reason": "tool_calls",
        "logprobs": None,
    }
    usage = m.usage(convert.usage_out(5, 3, 1))
    assert usage["choices"] == [] and usage["usage"]["total_tokens"] == 8


@pytest.mark.parametrize(
    ("want", "text", "sent"),
    [
        (True, "", True),  # logprobs alone are worth a chunk
        (False, "", False),
        (True, "x", True),
    ],
)
def test_chat_chunk_logprobs(want: bool, text: str, sent: bool) -> None:
    chunk = maker(want_logprobs=want).delta(0, delta(text, logprobs=[lp("x")]))
    assert (chunk is not None) == sent
    if chunk is not None:
        assert choice(chunk)["logprobs"]["content"][0]["token"] == "x"


def test_completion_chunks_echo_once_with_offsets() -> None:
    m = maker(chat=False, want_logprobs=True, n=2, echo=["Q: "])
    first = choice(m.delta(1, delta("a", index=1, logprobs=[lp("a")])))
    assert first["text"] == "Q: a"  # the prompt of choice 1 (prompt 0, n=2) comes first, once
    assert first["logprobs"]["text_offset"] == [3]
    second = choice(m.delta(1, delta("b", index=1, logprobs=[lp("b")])))
    assert (second["text"], second["logprobs"]["text_offset"]) == ("b", [4])
    # a choice that produced nothing still echoes its prompt before it finishes
    end = m.done(0, done(0, "length"))
    assert [choice(c)["text"] for c in end] == ["Q: ", ""]
    assert choice(end[-1])["finish_reason"] == "length"
    assert end[-1]["object"] == "text_completion"
