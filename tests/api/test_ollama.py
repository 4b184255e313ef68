"""Ollama's API on a real `impetus serve` (at the server root), driven by the official ollama
client. The pull (impetus's own, with Ollama's progress lines) is tested beside the admin pull in
test_admin_models.py, which has a local hub."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import ollama
import pytest

from tests.api.conftest import Server
from tests.api.tools import CHAT_TOOL as WEATHER

HELLO = [{"role": "user", "content": "Hello, how are you?"}]


def client(server: Server, key: str | None = "default") -> ollama.Client:
    k = server.key if key == "default" else key
    return ollama.Client(host=server.base_url.rstrip("/"), headers={"Authorization": f"Bearer {k}"})


def test_chat_options_and_timings(server: Server, model: str) -> None:
    c = client(server)
    name = model + ":latest"  # Ollama's default tag is accepted and dropped
    # Texts are compared below: put the prompt in the prompt cache first, so that every request
    # prefills the same way (a full prefill and a cached one may differ in the last bits, and a
    # random model has near ties)
    c.chat(model=model, messages=HELLO, stream=False, options={"num_predict": 1})
    r = c.chat(
        model=name, messages=HELLO, stream=False, options={"num_predict": 7, "temperature": 0}
    )
    assert r.done and r.done_reason == "length" and r.message.role == "assistant"
    assert r.message.content and r.eval_count == 7 and r.model == name
    assert r.prompt_eval_count and r.prompt_eval_count > 0
    assert r.total_duration and r.eval_duration and r.prompt_eval_duration is not None
    assert r.eval_duration < r.total_duration
    # streamed by default: NDJSON lines, the same text, stats on the last line
    parts = list(
        c.chat(
            model=name, messages=HELLO, options={"num_predict": 7, "temperature": 0}, stream=True
        )
    )
    assert all(not p.done for p in parts[:-1]) and parts[-1].done and parts[-1].eval_count == 7
    assert "".join(p.message.content for p in parts) == r.message.content
    with httpx.stream(
        "POST",
        server.url("api/chat"),
        json={"model": model, "messages": HELLO, "options": {"num_predict": 2}},
        headers=server.headers(),
        timeout=60,
    ) as raw:
        assert raw.headers["content-type"].startswith("application/x-ndjson")
        lines = [json.loads(line) for line in raw.iter_lines() if line]
    assert lines[-1]["done"] is True and lines[-1]["eval_count"] == 2
    # options map onto sampling: top_k 1 is greedy, a seed reproduces, stop ends the text
    k1 = c.chat(model=model, messages=HELLO, stream=False, options={"num_predict": 7, "top_k": 1})
    assert k1.message.content == r.message.content
    seeded = [
        c.chat(
            model=model,
            messages=HELLO,
            stream=False,
            options={
                "num_predict": 7,
                "seed": 7,
                "temperature": 1.0,
                "min_p": 0.05,
                "repeat_penalty": 1.1,
            },
        )
        for _ in range(2)
    ]
    assert seeded[0].message.content == seeded[1].message.content
    text = r.message.content
    stop = text.strip()[2:4] or text[1:3]
    cut = c.chat(
        model=model,
        messages=HELLO,
        stream=False,
        options={"num_predict": 7, "temperature": 0, "stop": [stop]},
    )
    assert cut.done_reason == "stop" and cut.message.content == text[: text.index(stop)]
    # num_ctx bounds prompt + output
    with pytest.raises(ollama.ResponseError) as e:
        c.chat(model=model, messages=HELLO, stream=False, options={"num_predict": 7, "num_ctx": 8})
    assert e.value.status_code == 400 and "context" in e.value.error


def test_generate_format_and_raw(server: Server, model: str) -> None:
    c = client(server)
    r = c.generate(
        model=model,
        prompt="Hello",
        system="Be brief.",
        options={"num_predict": 5, "temperature": 0},
    )
    assert r.done and r.response and r.eval_count == 5
    parts = list(
        c.generate(
            model=model,
            prompt="Hello",
            system="Be brief.",
            options={"num_predict": 5, "temperature": 0},
            stream=True,
        )
    )
    assert "".join(p.response for p in parts) == r.response
    schema = {
        "type": "object",
        "properties": {"color": {"enum": ["red", "green"]}},
        "required": ["color"],
        "additionalProperties": False,
    }
    js = c.generate(model=model, prompt="A color?", format=schema, options={"num_predict": 40})
    assert json.loads(js.response)["color"] in ("red", "green") and js.done_reason == "stop"
    # "json": any JSON object (a random model may not close it within the limit)
    loose = c.chat(
        model=model, messages=HELLO, format="json", options={"num_predict": 5}, stream=False
    )
    assert loose.message.content.startswith("{")
    # raw: no template; the same text the completions endpoint gives for the same prompt
    raw = c.generate(
        model=model, prompt="Once upon", raw=True, options={"num_predict": 4, "temperature": 0}
    )
    comp = server.post(
        "v1/completions", {"model": model, "prompt": "Once upon", "max_tokens": 4, "temperature": 0}
    )
    assert raw.response == comp.json()["choices"][0]["text"]


def test_tools(server: Server, tool_model_dir: Path) -> None:
    model = str(tool_model_dir)
    r = client(server).chat(
        model=model,
        messages=[{"role": "user", "content": "Weather in Paris?"}],
        tools=[WEATHER],
        stream=False,
        options={"num_predict": 80},
    )
    # "auto" leaves a random model free: check the shape whichever way it went
    for call in r.message.tool_calls or []:
        assert call.function.name == "get_weather" and isinstance(call.function.arguments, dict)
    follow = [
        {"role": "user", "content": "Weather in Paris?"},
        {
            "role": "assistant",
            "content": "",
            "tool_calls": [{"function": {"name": "get_weather", "arguments": {"city": "Paris"}}}],
        },
        {"role": "tool", "content": '{"temp": 21}', "tool_name": "get_weather"},
    ]
    r2 = client(server).chat(model=model, messages=follow, stream=False, options={"num_predict": 3})
    assert r2.done and r2.eval_count == 3


def test_thinking(server: Server, think_model_dir: Path) -> None:
    c = client(server)
    model = str(think_model_dir)
    r = c.chat(
        model=model, messages=HELLO, stream=False, options={"num_predict": 4, "temperature": 0}
    )
    assert r.message.thinking  # the template opens the think block
    assert "thinking" in (c.show(model).capabilities or [])
    off = c.chat(
        model=model,
        messages=HELLO,
        think=False,
        stream=False,
        options={"num_predict": 4, "temperature": 0},
    )
    assert not off.message.thinking and off.message.content


def test_models_keep_alive_and_embed(server: Server, model: str, tiny_model_dir: Path) -> None:
    c = client(server)
    assert c.show(model).capabilities == ["completion", "tools"]  # its template has tool calls
    tags = [m.model for m in c.list().models]
    assert tags and all(t.endswith(":latest") for t in tags)
    # keep_alive maps onto the engine's: 5 minutes from now
    c.chat(model=model, messages=HELLO, keep_alive="5m", stream=False, options={"num_predict": 1})
    (ps,) = [m for m in c.ps().models if m.model == model + ":latest"]
    assert ps.expires_at is not None and ps.size and ps.size > 0
    remaining = ps.expires_at.timestamp() - __import__("time").time()
    assert 200 < remaining <= 300
    c.chat(model=model, messages=[], keep_alive=-1)  # no messages: load only, pinned again
    (ps,) = [m for m in c.ps().models if m.model == model + ":latest"]
    assert ps.expires_at and ps.expires_at.year == 9999
    emb = c.embed(model="minilm", input=["hello", "world"])
    assert len(emb.embeddings) == 2 and len(emb.embeddings[0]) == 384
    assert emb.prompt_eval_count and emb.prompt_eval_count > 0
    version = httpx.get(server.url("api/version"), timeout=10)  # public, as Ollama's is
    assert version.status_code == 200 and version.json()["version"]


def test_errors_in_ollama_shape(server: Server, model: str) -> None:
    c = client(server)
    with pytest.raises(ollama.ResponseError) as e:
        c.chat(model="no-such-model", messages=HELLO, stream=False)
    assert e.value.status_code == 404
    with pytest.raises(ollama.ResponseError) as e:
        client(server, key="wrong").chat(model=model, messages=HELLO, stream=False)
    assert e.value.status_code == 401
    for body in (
        {"model": model, "messages": HELLO, "options": {"temperature": 9}},
        {"model": model, "messages": HELLO, "keep_alive": "soon"},
        {"model": model, "messages": [], "keep_alive": "soon"},  # load only
        {"model": model, "messages": [{"role": "user", "content": "x", "images": ["aGk="]}]},
        {"messages": HELLO},
    ):
        r = server.post("api/chat", body)
        assert r.status_code == 400, r.text
        assert list(r.json()) == ["error"] and r.json()["error"]
    r = server.post("api/show", {"model": "no-such-model"})
    assert r.status_code == 404 and list(r.json()) == ["error"]
