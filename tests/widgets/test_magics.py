"""`%load_ext impetus`: `%%chat` and `%impetus` in a real IPython shell, against a real
`impetus serve` (tiny model) found through IMPETUS_URL, as a kernel would find it."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any, Literal

import pytest
from IPython.core.error import UsageError
from IPython.core.interactiveshell import InteractiveShell
from IPython.utils.capture import capture_output
from pydantic import BaseModel

import impetus.client.discovery as client_discovery
from impetus.client import Endpoint, ImpetusClient
from impetus.widgets.magics import ImpetusMagics, interpolate, json_schema_of

SCHEMA = {
    "type": "object",
    "properties": {"ok": {"type": "boolean"}, "color": {"enum": ["red", "green"]}},
    "required": ["ok", "color"],
    "additionalProperties": False,
}


class Answer(BaseModel):
    ok: bool
    color: Literal["red", "green"]


@pytest.fixture()
def shell(
    endpoint: Endpoint, client: ImpetusClient, monkeypatch: pytest.MonkeyPatch
) -> Iterator[InteractiveShell]:
    monkeypatch.setenv("IMPETUS_URL", endpoint.base_url)
    monkeypatch.delenv("JPY_PARENT_PID", raising=False)
    monkeypatch.setattr(client_discovery, "_default", None)  # discover afresh, from IMPETUS_URL
    ip = InteractiveShell.instance()
    ip.run_line_magic("load_ext", "impetus")
    yield ip
    ip.run_line_magic("reload_ext", "impetus")  # a fresh conversation for the next test


def magics(ip: InteractiveShell) -> ImpetusMagics:
    found = ip.magics_manager.registry["ImpetusMagics"]
    assert isinstance(found, ImpetusMagics)
    return found


def markdown_outputs(cap: Any) -> list[str]:
    return [o.data.get("text/markdown", "") for o in cap.outputs]


def test_interpolate_takes_names_and_leaves_other_braces() -> None:
    ns = {"topic": "tides", "n": 3}
    assert interpolate("Explain {topic} in {n} lines", ns) == "Explain tides in 3 lines"
    # unknown names, code and JSON stay as written; doubled braces are literal
    assert interpolate("{missing} {'a': 1} {{topic}}", ns) == "{missing} {'a': 1} {topic}"


def test_json_schema_of_accepts_dicts_and_pydantic_classes() -> None:
    assert json_schema_of(SCHEMA, "s") == (SCHEMA, None)
    schema, cls = json_schema_of(Answer, "Answer")
    assert cls is Answer and set(schema["properties"]) == {"ok", "color"}
    with pytest.raises(UsageError, match="expected a JSON schema"):
        json_schema_of([1, 2], "x")


def test_chat_streams_markdown_and_sets_underscore(
    shell: InteractiveShell, tiny_model: str
) -> None:
    shell.user_ns["topic"] = "the sea"
    with capture_output() as cap:
        shell.run_cell_magic(
            "chat", f"--model {tiny_model} --max-tokens 12 --temperature 0", "Tell me of {topic}."
        )
    answer = shell.user_ns["_"]
    assert isinstance(answer, str) and answer
    conv = magics(shell).conversation
    assert conv.messages[-2] == {"role": "user", "content": "Tell me of the sea."}
    assert conv.messages[-1] == {"role": "assistant", "content": answer}
    shown = markdown_outputs(cap)[-1]
    assert answer in shown and "tokens" in shown  # the answer, then its statistics line


def test_chat_continue_keeps_the_conversation(shell: InteractiveShell, tiny_model: str) -> None:
    with capture_output():
        shell.run_cell_magic(
            "chat", f"-m {tiny_model} --max-tokens 6 --system 'Be brief.' -q", "First question"
        )
        shell.run_cell_magic("chat", "--continue --max-tokens 6 -q", "Second question")
    conv = magics(shell).conversation
    assert [m["role"] for m in conv.messages] == [
        "system",
        "user",
        "assistant",
        "user",
        "assistant",
    ]
    assert conv.model == tiny_model
    # a cell without --continue starts over
    with capture_output():
        shell.run_cell_magic("chat", f"-m {tiny_model} --max-tokens 4 -q", "Fresh start")
    assert [m["role"] for m in conv.messages] == ["user", "assistant"]


def test_chat_json_schema_lands_parsed(shell: InteractiveShell, tiny_model: str) -> None:
    shell.user_ns["schema"] = SCHEMA
    shell.user_ns["Answer"] = Answer
    with capture_output() as cap:
        shell.run_cell_magic("chat", f"-m {tiny_model} --max-tokens 60 --json schema", "Answer.")
    data = shell.user_ns["_"]
    assert isinstance(data, dict) and data["color"] in ("red", "green")
    assert "```json" in markdown_outputs(cap)[-1]
    with capture_output():
        shell.run_cell_magic("chat", f"-m {tiny_model} --max-tokens 60 --json Answer", "Answer.")
    assert isinstance(shell.user_ns["_"], Answer)


def test_chat_bad_input_is_a_usage_error(shell: InteractiveShell, tiny_model: str) -> None:
    with pytest.raises(UsageError, match="empty"):
        magics(shell).chat(f"-m {tiny_model}", "   ")
    with pytest.raises(UsageError, match="no such variable"):
        magics(shell).chat(f"-m {tiny_model} --json nope", "hi")
    with pytest.raises(UsageError, match="unknown command"):
        magics(shell).impetus("frobnicate")


def test_impetus_status_models_load_and_bench(shell: InteractiveShell, tiny_model: str) -> None:
    with capture_output() as cap:
        shell.run_line_magic("impetus", "status")
    status = shell.user_ns["_"]
    assert status.state == "ready" and "engine: ready" in cap.stdout
    assert [m.id for m in status.models] == [tiny_model] and f"  {tiny_model}  chat" in cap.stdout
    with capture_output() as cap:
        shell.run_line_magic("impetus", "models")
    assert any("<table>" in o.data.get("text/html", "") for o in cap.outputs)
    with capture_output() as cap:
        shell.run_line_magic("impetus", f"load {tiny_model}")
    state = shell.user_ns["_"]
    assert state.id == tiny_model and state.kind == "chat"
    assert f"loaded {tiny_model} · {state.dtype}" in cap.stdout
    with capture_output():
        shell.run_line_magic(
            "impetus",
            f"bench --model {tiny_model} --concurrency 1 --requests 2 --max-tokens 4 "
            "--prompt-tokens 16 --warmup 0",
        )
    record = shell.user_ns["_"]
    assert len(record.profiles) == 1
    assert all(r.success for part in record.results for r in part)
    assert json.loads(record.model_dump_json())["model"] == tiny_model
