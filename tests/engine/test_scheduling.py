"""Chunked prefill, the memory budget, keep-alive, just-in-time loading, serving dtype."""

from __future__ import annotations

import shutil
import threading
import time
from pathlib import Path

import pytest

from impetus.config import Settings
from impetus.engine import Engine
from impetus.engine.scheduler import TextGate, finite_logprob
from impetus.protocol import EngineError, GenerateRequest, convert
from tests.tiny_model import build_tiny_llama


def greedy(model: str, **kw: object) -> GenerateRequest:
    return convert({"model": model, "sampling": {"temperature": 0.0}, **kw}, GenerateRequest)


def test_a_long_prompt_does_not_freeze_running_streams(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    model = str(tiny_model_dir)
    with Engine(Settings(home=tmp_path, prefill_step=32)) as e:
        e.load(model)
        log: list[tuple[str, str]] = []
        lock = threading.Lock()
        running = e.generate(greedy(model, prompt="hello", max_tokens=200, ignore_eos=True))
        it = iter(running)
        for _ in range(3):
            next(it)  # the stream is decoding

        def drain_running() -> None:
            for ev in it:
                with lock:
                    log.append(("running", ev.type))

        t = threading.Thread(target=drain_running)
        t.start()
        long_prompt = [5 + (i % 300) for i in range(480)]  # 15 prefill chunks of 32
        with lock:
            log.append(("long", "submitted"))
        for ev in e.generate(greedy(model, prompt=long_prompt, max_tokens=2)):
            with lock:
                log.append(("long", ev.type))
        t.join()
    start = log.index(("long", "submitted"))
    first_long_token = log.index(("long", "delta"))
    decoded_meanwhile = sum(
        1 for who, what in log[start:first_long_token] if who == "running" and what == "delta"
    )
    # one decode step of the running stream per prefill chunk of the long prompt
    assert decoded_meanwhile >= 10


def test_memory_budget_evicts_the_least_recently_used_idle_model(tmp_path: Path) -> None:
    a, b, d = (build_tiny_llama(tmp_path / n, seed=i) for i, n in enumerate("abd"))
    big = build_tiny_llama(tmp_path / "big", seed=3, hidden=256)
    size = sum(f.stat().st_size for f in a.glob("*.safetensors"))
    budget = int(size * 2.5)  # room for two small models, not three
    assert sum(f.stat().st_size for f in big.glob("*.safetensors")) > budget
    with Engine(Settings(home=tmp_path / "home", memory_budget=budget)) as e:
        e.load(str(a))
        e.load(str(b))
        e.complete(greedy(str(a), prompt="x", max_tokens=2))  # a is now more recent than b
        e.load(str(d))
        assert {m.id for m in e.status().models} == {str(a), str(d)}  # b, the LRU one, went
        # a model larger than the whole budget is refused with a clear error
        with pytest.raises(EngineError) as err:
            e.load(str(big))
        assert err.value.code == "out_of_memory" and "MiB" in err.value.message
        # the engine serves on
        assert (
            e.complete(greedy(str(d), prompt="x", max_tokens=2))[0]["done"].usage.completion_tokens
            == 2
        )


def test_pinned_models_are_never_evicted(tmp_path: Path) -> None:
    a = build_tiny_llama(tmp_path / "a", seed=1)
    b = build_tiny_llama(tmp_path / "b", seed=2)
    size = sum(f.stat().st_size for f in a.glob("*.safetensors"))
    with Engine(Settings(home=tmp_path / "home", memory_budget=int(size * 1.5))) as e:
        e.load(str(a), keep_alive=-1)
        with pytest.raises(EngineError) as err:
            e.load(str(b))
        assert err.value.code == "out_of_memory"
        assert [m.id for m in e.status().models] == [str(a)]


def test_keep_alive_unloads_idle_models_and_jit_loads_them_back(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    model = str(tiny_model_dir)
    with Engine(Settings(home=tmp_path, keep_alive=1.0, allow_model_paths=True)) as e:
        e.load(model)
        assert [m.id for m in e.status().models] == [model]
        deadline = time.time() + 10
        while e.status().models and time.time() < deadline:
            time.sleep(0.2)
        assert e.status().models == []
        # a request naming the unloaded model loads it just in time
        out = e.complete(greedy(model, prompt="hi", max_tokens=3))
        assert out[0]["done"].usage.completion_tokens == 3
        assert [m.id for m in e.status().models] == [model]


def test_serving_dtype_is_chosen_and_can_be_overridden(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    with Engine(Settings(home=tmp_path)) as e:
        st = e.load(str(tiny_model_dir))
        assert st.dtype == "float32"  # CPU: float32 decodes fastest (with an optimized BLAS)
        e.unload(str(tiny_model_dir))
        st = e.load(str(tiny_model_dir), dtype="bfloat16")
        assert st.dtype == "bfloat16"
        assert (
            e.complete(greedy(str(tiny_model_dir), prompt="hi", max_tokens=3))[0][
                "done"
            ].usage.completion_tokens
            == 3
        )


def test_quantized_models_are_dequantized_for_cpu(tmp_path: Path) -> None:
    from mlx_lm.convert import convert

    src = build_tiny_llama(tmp_path / "src", hidden=64)
    q = tmp_path / "q"
    convert(str(src), mlx_path=str(q), quantize=True, q_group_size=32, q_bits=4)
    shutil.copy(src / "tokenizer.json", q / "tokenizer.json")
    with Engine(Settings(home=tmp_path / "home")) as e:
        st = e.load(str(q))
        assert (st.source_dtype, st.dtype) == ("q4", "float32")
        native = e.complete(greedy(str(q), prompt="hello", max_tokens=6))[0]["done"]
        assert native.usage.completion_tokens == 6
        e.unload(str(q))
        st = e.load(str(q), dtype="native")
        assert st.dtype == "q4"


def test_text_gate_holds_back_partial_stops_and_never_splits_characters() -> None:
    g = TextGate(["END", "éé"], None)
    assert g.feed("abc E") == ("abc ", None)  # "E" may start "END"
    assert g.feed("N") == ("", None)
    assert g.feed("Dtail") == ("", "END")
    g = TextGate(["éé"], None)
    out1 = g.feed("caf")
    out2 = g.feed("é")  # could be the start of the stop
    out3 = g.feed("x")
    assert out1 == ("caf", None) and out2 == ("", None) and out3 == ("éx", None)
    assert g.flush() == ""
    g = TextGate([], "<tool_call>")
    assert g.feed("hi <tool") == ("hi ", None)
    assert g.feed("_call>{") == ("", "<tool_call>")


def test_a_masked_tokens_logprob_is_sent_as_openais_finite_floor() -> None:
    assert finite_logprob(float("-inf")) == -9999.0
    assert finite_logprob(float("nan")) == -9999.0
    assert finite_logprob(-0.25) == -0.25


def test_a_lone_sequence_decodes_without_a_mask_and_gets_the_same_logits(
    tiny_model_dir: Path,
) -> None:
    """The engine drops the attention mask for a batch of one (MLX's fused kernel then runs);
    a sequence left alone after its neighbour finished must see exactly what the mask allowed."""
    import mlx.core as mx
    from mlx_lm import load
    from mlx_lm.generate import BatchGenerator
    from mlx_lm.models.cache import BatchKVCache

    from impetus.engine import scheduler

    model = load(str(tiny_model_dir))[0]
    calls = {"none": 0}

    def counting(self: BatchKVCache, n: int, **kw: object) -> object:
        mask = scheduler._lone_sequence_mask(self, n, **kw)  # type: ignore[arg-type]
        calls["none"] += mask is None
        return mask

    def run(make_mask: object) -> mx.array:
        BatchKVCache.make_mask = make_mask  # type: ignore[method-assign]
        gen = BatchGenerator(model, max_tokens=12)
        # the short prompt is left-padded by 23 in the batch; its neighbour leaves after 3 tokens
        short, _ = gen.insert([list(range(10, 17)), list(range(40, 70))], max_tokens=[12, 3])
        rows: list[mx.array] = []
        while len(rows) < 12:
            rows += [r.logprobs for r in gen.next()[1] if r.uid == short]
        gen.close()
        return mx.stack(rows)

    try:
        masked, lone = run(scheduler._batch_mask), run(counting)
    finally:
        BatchKVCache.make_mask = scheduler._lone_sequence_mask  # type: ignore[method-assign]
    assert calls["none"] >= 8  # the steps after the neighbour left ran without a mask
    assert mx.abs(masked - lone).max().item() < 1e-5
