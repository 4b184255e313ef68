"""The engine-boundary vocabulary (impetus.protocol): round trips, typed decoding, error codes."""

from __future__ import annotations

import subprocess
import sys
from typing import Any

import msgspec
import pytest

from impetus import protocol as p
from impetus.api.errors import ENGINE_CODES, APIError

LOGPROB = p.TokenLogprob(
    token=" a",
    token_id=7,
    logprob=-0.5,
    bytes=[32, 97],
    top_logprobs=[p.TokenLogprob(token=" b", token_id=8, logprob=-1.5)],
)
REQUEST = p.GenerateRequest(
    model="m",
    messages=[{"role": "user", "content": "hi"}],
    tools=[{"type": "function", "function": {"name": "f", "parameters": {}}}],
    tool_choice={"type": "function", "function": {"name": "f"}},
    sampling=p.SamplingParams(temperature=0.2, seed=3, logit_bias={5: -100.0}),
    max_tokens=9,
    stop=["\n"],
    n=2,
    logprobs=True,
    top_logprobs=1,
    response_format={"type": "json_object"},
)
STATUS = p.EngineStatus(
    state="ready",
    pid=12,
    models=[
        p.ModelState(
            id="m",
            kind="chat",
            path="/m",
            dtype="float32",
            source_dtype="q4",
            memory_bytes=1,
            context_length=2048,
            loaded_at=1.0,
            last_used=2.0,
            keep_alive=-1,
        )
    ],
    stats=p.EngineStats(running=1, decode_tps_recent=3.5),
)

COMMANDS: list[Any] = [
    p.Generate(rid="r1", request=REQUEST),
    p.Generate(rid="r2", request=p.GenerateRequest(model="m", prompt=[1, 2, 3])),
    p.Cancel(rid="r1"),
    p.Load(id=1, model="m", dtype="bfloat16", keep_alive=30.0, allow_paths=False),
    p.Unload(id=2, model="m"),
    p.Embed(id=3, model="e", texts=["a", "b"]),
    p.Tokenize(id=4, request=REQUEST),
    p.GetStatus(id=5),
    p.Ping(id=6),
    p.Shutdown(id=7),
]
MESSAGES: list[Any] = [
    p.Hello(pid=42, blas="openblas"),
    p.Start(rid="r1", model="m", prompt_tokens=10, cached_tokens=4, max_tokens=9),
    p.Delta(rid="r1", index=0, text="Hé", token_ids=[17]),
    p.Delta(rid="r1", index=1, text="", token_ids=[2], logprobs=[LOGPROB]),
    p.Done(
        rid="r1",
        index=0,
        finish_reason="tool_calls",
        usage=p.Usage(prompt_tokens=10, completion_tokens=3, cached_tokens=4),
        timings=p.Timings(ttft=0.1, e2e=0.5, itl=[0.01, 0.02]),
        tool_calls=[p.ToolCall(id="call_1", name="f", arguments='{"x": 1}')],
    ),
    p.Failed(rid="r2", error=p.ErrorInfo(code="queue_full", message="busy", param=None)),
    p.Reply(id=5, result=msgspec.Raw(p.encode(STATUS))),
    p.Reply(id=6, error=p.ErrorInfo(code="model_not_found", message="no m", param="model")),
]


@pytest.mark.parametrize("cmd", COMMANDS, ids=lambda c: type(c).__name__)
def test_every_command_round_trips(cmd: Any) -> None:
    assert p.decode_command(p.encode(cmd)) == cmd


def test_a_frame_of_every_message_round_trips() -> None:
    back = p.decode_messages(p.encode(MESSAGES))
    assert [type(m) for m in back] == [type(m) for m in MESSAGES]
    for got, sent in zip(back, MESSAGES, strict=True):
        if isinstance(sent, p.Reply):  # Raw compares by identity: compare the decoded values
            assert (got.id, got.error) == (sent.id, sent.error)
        else:
            assert got == sent


def test_call_results_decode_typed_or_raise_the_engine_error() -> None:
    ok, failed = p.decode_messages(p.encode(MESSAGES[-2:]))
    assert isinstance(ok, p.Reply) and isinstance(failed, p.Reply)
    assert p.decode_result(ok, p.EngineStatus) == STATUS
    with pytest.raises(p.EngineError) as e:
        p.decode_result(failed, p.EngineStatus)
    assert (e.value.code, e.value.message, e.value.param) == ("model_not_found", "no m", "model")
    # a call without a result (shutdown) decodes to None
    (empty,) = p.decode_messages(p.encode([p.Reply(id=7)]))
    assert isinstance(empty, p.Reply) and p.decode_result(empty, type(None)) is None


def test_event_kinds_are_named_without_a_field() -> None:
    assert [e.type for e in (MESSAGES[1], MESSAGES[2], MESSAGES[4], MESSAGES[5])] == [
        "start",
        "delta",
        "done",
        "error",
    ]
    assert "type" not in p.Delta.__struct_fields__


def test_a_delta_is_a_compact_array() -> None:
    # the per-token message: the tag, then the fields in order; no keys
    raw = p.encode(p.Delta(rid="r", index=0, text="a", token_ids=[1]))
    decoded = msgspec.msgpack.decode(raw)
    assert decoded[:5] == ["delta", "r", 0, "a", [1]]
    assert len(decoded) == 1 + len(p.Delta.__struct_fields__)


@pytest.mark.parametrize(
    ("data", "field"),
    [
        ({"model": "m", "n": 0}, "n"),
        ({"model": "m", "top_logprobs": 21}, "top_logprobs"),
        ({"model": "m", "sampling": {"temperature": 2.5}}, "temperature"),
        ({"model": "m", "sampling": {"top_p": 0}}, "top_p"),
        ({"model": "m", "prompt": {"not": "a prompt"}}, "prompt"),
        ({"messages": []}, "model"),
    ],
)
def test_convert_checks_types_and_ranges(data: dict[str, Any], field: str) -> None:
    with pytest.raises(msgspec.ValidationError, match=field):
        p.convert(data, p.GenerateRequest)


def test_the_engine_decoder_rejects_out_of_range_values() -> None:
    # constructors do not check ranges; the decoder on the engine side does
    bad = p.Generate(rid="r", request=p.GenerateRequest(model="m", n=0))
    with pytest.raises(msgspec.ValidationError, match="n"):
        p.decode_command(p.encode(bad))


def test_every_error_code_has_an_http_mapping() -> None:
    assert set(ENGINE_CODES) == set(p.ERROR_CODES)
    for code in p.ERROR_CODES:
        err = APIError.from_engine(p.EngineError(code, "m"))
        assert err.status >= 400 and err.code == code


def test_an_unknown_code_on_the_wire_becomes_internal() -> None:
    err = p.EngineError.from_info(p.ErrorInfo(code="no_such_code", message="m"))
    assert err.code == "internal" and err.message == "m"


def test_records_show_every_field_as_json() -> None:
    data = p.to_builtins(p.EngineStatus(state="stopped"))
    assert data["restarts"] == 0 and data["models"] == [] and data["stats"]["running"] == 0
    assert p.convert(p.to_builtins(STATUS), p.EngineStatus) == STATUS


def _modules_after(statement: str) -> set[str]:
    code = f"import sys; {statement}; print('\\n'.join(sorted(sys.modules)))"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    return set(out.split())


def test_the_protocol_imports_nothing_but_msgspec() -> None:
    mods = _modules_after("import impetus.protocol")
    ours = {m for m in mods if m.startswith("impetus")}
    assert ours == {"impetus", "impetus.protocol"}
    assert not {"pydantic", "zmq", "msgpack", "mlx", "tornado"} & mods


def test_the_model_package_does_not_load_the_engine() -> None:
    mods = _modules_after("import impetus.models.registry, impetus.models.errors")
    assert not any(m.startswith("impetus.engine") for m in mods)
    assert "zmq" not in mods and "msgpack" not in mods
