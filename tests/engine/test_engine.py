"""The engine process on the tiny random Llama: sampling, batching, cache reuse, cancel, restart."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import msgspec
import pytest

from impetus.config import Settings
from impetus.engine import Engine
from impetus.protocol import EngineError, GenerateRequest, SamplingParams, convert
from tests.api.tools import ANSWER_SCHEMA

CHAT = [{"role": "user", "content": "Hello, how are you?"}]


@pytest.fixture(scope="module")
def engine(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Engine]:
    settings = Settings(home=tmp_path_factory.mktemp("home"), max_batch=32, max_queue=64)
    with Engine(settings) as e:
        e.load(str(tiny_model_dir))
        yield e


def req(model: Path, **kw: object) -> GenerateRequest:
    sampling = kw.pop("sampling", {"temperature": 0.0})
    base: dict[str, object] = {"model": str(model), "messages": CHAT, "max_tokens": 24, "sampling": sampling}
    base.update(kw)
    return convert(base, GenerateRequest)


def text(engine: Engine, r: GenerateRequest, index: int = 0) -> str:
    return str(engine.complete(r)[index]["text"])


def test_chat_template_is_applied(engine: Engine, tiny_model_dir: Path) -> None:
    from mlx_lm import load

    _, tok = load(str(tiny_model_dir))
    expected = tok.apply_chat_template(CHAT, add_generation_prompt=True)
    assert engine.tokenize(GenerateRequest(model=str(tiny_model_dir), messages=CHAT)) == list(expected)
    out = engine.complete(req(tiny_model_dir))
    assert out[0]["done"].usage.prompt_tokens == len(expected)


def test_greedy_is_deterministic_and_max_tokens_is_exact(engine: Engine, tiny_model_dir: Path) -> None:
    a = engine.complete(req(tiny_model_dir, max_tokens=17))
    b = engine.complete(req(tiny_model_dir, max_tokens=17))
    assert a[0]["text"] == b[0]["text"]
    assert a[0]["token_ids"] == b[0]["token_ids"]
    done = a[0]["done"]
    assert done.finish_reason == "length"
    assert done.usage.completion_tokens == 17 == len(a[0]["token_ids"])


def test_sampling_parameters_change_the_output(engine: Engine, tiny_model_dir: Path) -> None:
    greedy = engine.complete(req(tiny_model_dir))[0]["token_ids"]

    def ids(**sampling: object) -> list[int]:
        return list(engine.complete(req(tiny_model_dir, sampling=sampling))[0]["token_ids"])

    # top_k=1 / tiny top_p / min_p=1 keep only the best token: greedy, whatever the temperature
    assert ids(temperature=1.5, top_k=1, seed=3) == greedy
    assert ids(temperature=1.5, top_p=1e-6, seed=3) == greedy
    assert ids(temperature=1.5, min_p=1.0, seed=3) == greedy
    # high temperature with different seeds differs from greedy and between seeds
    hot = [ids(temperature=2.0, seed=s) for s in (1, 2)]
    assert hot[0] != greedy and hot[0] != hot[1]
    # penalties push away from repeats
    assert ids(temperature=0.0, repetition_penalty=2.0) != greedy
    assert ids(temperature=0.0, presence_penalty=2.0) != greedy
    assert ids(temperature=0.0, frequency_penalty=2.0) != greedy
    # logit_bias can force a token
    forced = ids(temperature=0.0, logit_bias={65: 100.0})
    assert set(forced) == {65}


def test_seed_reproducible_even_inside_a_busy_batch(engine: Engine, tiny_model_dir: Path) -> None:
    r = req(tiny_model_dir, sampling={"temperature": 1.0, "seed": 1234}, max_tokens=32)
    alone = text(engine, r)
    # the same seeded request while other (unseeded, hot) requests share the batch
    results: dict[int, str] = {}

    def run(i: int, rq: GenerateRequest) -> None:
        results[i] = text(engine, rq)

    noise = [req(tiny_model_dir, sampling={"temperature": 1.5}, max_tokens=40) for _ in range(6)]
    threads = [threading.Thread(target=run, args=(i, rq)) for i, rq in enumerate([*noise, r])]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results[len(noise)] == alone
    assert text(engine, req(tiny_model_dir, sampling={"temperature": 1.0, "seed": 99}, max_tokens=32)) != alone


def test_stop_strings_cut_before_the_stop_and_hide_it(engine: Engine, tiny_model_dir: Path) -> None:
    full = text(engine, req(tiny_model_dir, max_tokens=40))
    stop = full[10:13]
    assert len(stop) == 3
    out = engine.complete(req(tiny_model_dir, max_tokens=40, stop=[stop, "never-appears"]))
    got = out[0]["text"]
    assert got == full[: full.index(stop)]
    assert stop not in got
    assert out[0]["done"].finish_reason == "stop"


def test_logprobs_and_top_logprobs(engine: Engine, tiny_model_dir: Path) -> None:
    events = [ev for ev in engine.generate(req(tiny_model_dir, logprobs=True, top_logprobs=3, max_tokens=8)) if ev.type == "delta"]
    lps = [lp for ev in events for lp in (ev.logprobs or [])]
    assert len(lps) == 8
    for lp in lps:
        assert lp.logprob <= 0.0
        assert len(lp.top_logprobs) == 3
        tops = [t.logprob for t in lp.top_logprobs]
        assert tops == sorted(tops, reverse=True)
        # greedy: the chosen token is the most likely one
        assert lp.top_logprobs[0].token_id == lp.token_id
        assert abs(lp.top_logprobs[0].logprob - lp.logprob) < 1e-5


def test_n_gives_independent_choices(engine: Engine, tiny_model_dir: Path) -> None:
    out = engine.complete(req(tiny_model_dir, n=3, sampling={"temperature": 1.5, "seed": 7}, max_tokens=20))
    assert sorted(out) == [0, 1, 2]
    texts = {out[i]["text"] for i in out}
    assert len(texts) == 3
    assert all(out[i]["done"].usage.completion_tokens == 20 for i in out)


def test_ignore_eos_generates_exactly_max_tokens(engine: Engine, tiny_model_dir: Path) -> None:
    # bias EOS (<|im_end|> = 2) up so that a normal request stops at once ...
    eos_first = engine.complete(req(tiny_model_dir, sampling={"temperature": 0.0, "logit_bias": {2: 100.0}}))
    assert eos_first[0]["done"].finish_reason == "stop"
    assert eos_first[0]["done"].usage.completion_tokens == 1
    # ... and ignore_eos keeps going anyway
    kept = engine.complete(req(tiny_model_dir, sampling={"temperature": 0.0, "logit_bias": {2: 100.0}}, ignore_eos=True, max_tokens=9))
    assert kept[0]["done"].finish_reason == "length"
    assert kept[0]["done"].usage.completion_tokens == 9


def test_sixteen_concurrent_requests_match_their_solo_runs(engine: Engine, tiny_model_dir: Path) -> None:
    variants = [
        req(
            tiny_model_dir,
            messages=[{"role": "user", "content": f"Question number {i}: " + "tell me more " * (i % 5)}],
            max_tokens=8 + i,
            stop=["zz"] if i % 3 == 0 else [],
            sampling={"temperature": 0.0, "repetition_penalty": 1.3} if i % 4 == 1 else {"temperature": 0.0},
        )
        for i in range(16)
    ]
    solo = [text(engine, r) for r in variants]
    results: dict[int, str] = {}

    def run(i: int) -> None:
        results[i] = text(engine, variants[i])

    threads = [threading.Thread(target=run, args=(i,)) for i in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert [results[i] for i in range(16)] == solo


def test_prompt_cache_reuse_on_the_second_turn(engine: Engine, tiny_model_dir: Path) -> None:
    turn1 = [{"role": "user", "content": "Tell me about the quick brown fox and the lazy dog, please."}]
    first = engine.complete(req(tiny_model_dir, messages=turn1, max_tokens=12))
    before = engine.status().stats
    turn2 = [*turn1, {"role": "assistant", "content": first[0]["text"]}, {"role": "user", "content": "And then?"}]
    second = engine.complete(req(tiny_model_dir, messages=turn2, max_tokens=12))
    usage = second[0]["done"].usage
    after = engine.status().stats
    assert usage.cached_tokens >= first[0]["done"].usage.prompt_tokens
    assert after.prompt_cache_hits == before.prompt_cache_hits + 1
    assert after.prompt_cache_queries == before.prompt_cache_queries + 1


def test_json_schema_is_enforced(engine: Engine, tiny_model_dir: Path) -> None:
    out = engine.complete(
        req(tiny_model_dir, max_tokens=60, response_format={"type": "json_schema", "json_schema": {"name": "c", "schema": ANSWER_SCHEMA}})
    )
    data = json.loads(out[0]["text"])
    assert data["color"] in ("red", "green") and isinstance(data["ok"], bool)
    assert out[0]["done"].finish_reason == "stop"


def test_forced_tool_call(engine: Engine, tiny_model_dir: Path) -> None:
    tools = [
        {
            "type": "function",
            "function": {
                "name": "get_weather",
                "parameters": {
                    "type": "object",
                    "properties": {"city": {"enum": ["Paris", "Rome"]}},
                    "required": ["city"],
                    "additionalProperties": False,
                },
            },
        }
    ]
    out = engine.complete(req(tiny_model_dir, max_tokens=60, tools=tools, tool_choice="required"))
    done = out[0]["done"]
    assert done.finish_reason == "tool_calls"
    assert done.tool_calls and done.tool_calls[0].name == "get_weather"
    assert json.loads(done.tool_calls[0].arguments)["city"] in ("Paris", "Rome")
    assert "<tool_call>" not in out[0]["text"]


def test_cancel_frees_the_slot(engine: Engine, tiny_model_dir: Path) -> None:
    gen = engine.generate(req(tiny_model_dir, max_tokens=400, ignore_eos=True))
    it = iter(gen)
    seen = 0
    for ev in it:
        if ev.type == "delta":
            seen += 1
            if seen == 3:
                break
    gen.cancel()
    deadline = time.time() + 5
    while engine.status().stats.running and time.time() < deadline:
        time.sleep(0.02)
    assert engine.status().stats.running == 0
    # and the engine serves the next request normally
    assert engine.complete(req(tiny_model_dir, max_tokens=4))[0]["done"].usage.completion_tokens == 4


def test_bad_inputs_get_clear_errors_and_the_engine_serves_on(engine: Engine, tiny_model_dir: Path) -> None:
    with pytest.raises(EngineError) as e:
        engine.complete(req(Path("no-such-model")))
    assert e.value.code == "model_not_found"
    # a request may not make the engine load an arbitrary folder (only admin loads may)
    with pytest.raises(EngineError) as e:
        engine.complete(req(tiny_model_dir.parent))
    assert e.value.code == "invalid_request" and "path" in e.value.message
    with pytest.raises(EngineError) as e:
        engine.complete(req(tiny_model_dir, messages=[{"role": "user", "content": "tell me more " * 400}]))
    assert e.value.code == "context_length_exceeded"
    with pytest.raises(EngineError) as e:
        engine.complete(req(tiny_model_dir, max_tokens=600))
    assert e.value.code == "context_length_exceeded" and e.value.param == "max_tokens"
    with pytest.raises(EngineError) as e:
        engine.complete(req(tiny_model_dir, max_tokens=0))
    assert e.value.code == "invalid_request" and e.value.param == "max_tokens"
    with pytest.raises(EngineError) as e:
        engine.complete(req(tiny_model_dir, sampling={"temperature": 0.0, "logit_bias": {10**7: 1.0}}))
    assert e.value.param == "logit_bias"
    with pytest.raises(EngineError) as e:
        engine.complete(req(tiny_model_dir, response_format={"type": "xml"}))
    assert e.value.param == "response_format"
    assert engine.complete(req(tiny_model_dir, max_tokens=3))[0]["done"].usage.completion_tokens == 3


def test_validation_of_sampling_ranges(engine: Engine, tiny_model_dir: Path) -> None:
    with pytest.raises(msgspec.ValidationError, match="temperature"):
        convert({"temperature": -1}, SamplingParams)
    with pytest.raises(msgspec.ValidationError, match="top_p"):
        convert({"top_p": 0}, SamplingParams)
    # constructors do not check ranges; the engine's decoder does, and answers instead of dropping it
    bad = GenerateRequest(model=str(tiny_model_dir), prompt="hi", sampling=SamplingParams(temperature=-1))
    with pytest.raises(EngineError) as e:
        engine.complete(bad)
    assert e.value.code == "invalid_request" and "temperature" in e.value.message


def engine_processes() -> list[int]:
    """This process's children that are engine processes (the engine, and its spare)."""
    import contextlib

    import psutil

    pids = []
    for p in psutil.Process().children():
        with contextlib.suppress(psutil.Error):
            if "impetus.engine.process" in p.cmdline():
                pids.append(p.pid)
    return pids


@pytest.mark.parametrize("standby", [True, False])
def test_engine_standby_keeps_one_spare_process(tmp_path: Path, standby: bool) -> None:
    """engine_standby (default on): a spare engine process with its libraries imported waits
    beside the engine (the next crash's replacement); off, the engine runs alone."""
    # the module's shared engine (and its spare) may be alive: count only this test's processes
    before = set(engine_processes())

    def ours() -> list[int]:
        return [pid for pid in engine_processes() if pid not in before]

    with Engine(Settings(home=tmp_path, engine_standby=standby)) as e:
        engine = e.status().pid
        deadline = time.time() + 30
        while standby and len(ours()) < 2 and time.time() < deadline:
            time.sleep(0.1)
        pids = ours()
        assert engine in pids and len(pids) == (2 if standby else 1), pids
    # stopping the engine stops the spare too (it exits at the end of its input)
    deadline = time.time() + 30
    while ours() and time.time() < deadline:
        time.sleep(0.1)
    assert ours() == []


def test_crash_fails_open_requests_and_restarts(tiny_model_dir: Path, tmp_path: Path) -> None:
    with Engine(Settings(home=tmp_path)) as e:
        e.load(str(tiny_model_dir))
        gen = e.generate(req(tiny_model_dir, max_tokens=400, ignore_eos=True))
        it = iter(gen)
        next(it)  # started
        old_pid = e.status().pid
        e.kill()
        with pytest.raises(EngineError) as err:
            for _ in it:
                pass
        assert err.value.code == "engine_restarted"
        deadline = time.time() + 60
        while e.state != "ready" and time.time() < deadline:
            time.sleep(0.1)
        st = e.status()
        assert st.state == "ready" and st.restarts == 1 and st.pid != old_pid
        # the model it had is back, without a new load call
        assert [m.id for m in st.models] == [str(tiny_model_dir)]
        assert e.complete(req(tiny_model_dir, max_tokens=3))[0]["done"].usage.completion_tokens == 3
