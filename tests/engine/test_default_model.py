"""The embedded default models through the engine process: SmolLM2-135M (chat) and MiniLM (embeddings)."""

from __future__ import annotations

import math
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from impetus.config import Settings
from impetus.engine import Engine
from impetus.protocol import GenerateRequest, convert

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def engine(impetus_home: Path) -> Iterator[Engine]:
    with Engine(Settings(home=impetus_home)) as e:
        yield e


def ask(engine: Engine, question: str, **kw: object) -> str:
    r = convert(
        {"model": "smollm2-135m", "messages": [{"role": "user", "content": question}], "max_tokens": 40, "sampling": {"temperature": 0.0}, **kw},
        GenerateRequest,
    )
    return str(engine.complete(r)[0]["text"])


def test_capital_of_france(engine: Engine) -> None:
    st = engine.load("smollm2-135m")
    assert st.kind == "chat" and st.dtype == "float32" and st.source_dtype == "q4"
    assert "Paris" in ask(engine, "What is the capital of France?")


def test_concurrent_answers_match_solo_answers(engine: Engine) -> None:
    questions = ["What is the capital of France?", "Name a primary color.", "What is 2 + 2?", "Say hello in Spanish."]
    solo = [ask(engine, q) for q in questions]
    got: dict[int, str] = {}

    def run(i: int) -> None:
        got[i] = ask(engine, questions[i])

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(questions))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert [got[i] for i in range(len(questions))] == solo


def test_stop_string_on_real_text(engine: Engine) -> None:
    full = ask(engine, "What is the capital of France?")
    assert "Paris" in full
    cut = ask(engine, "What is the capital of France?", stop=["Paris"])
    assert cut == full[: full.index("Paris")]


def test_minilm_embeddings_are_normalised_384d(engine: Engine) -> None:
    res = engine.embed("minilm", ["The cat sits on the mat.", "A feline rests on a rug.", "Stock markets fell sharply today."])
    assert len(res.vectors) == 3 and all(len(v) == 384 for v in res.vectors)
    for v in res.vectors:
        assert math.isclose(math.sqrt(sum(x * x for x in v)), 1.0, rel_tol=1e-4)

    def cos(a: list[float], b: list[float]) -> float:
        return sum(x * y for x, y in zip(a, b, strict=True))

    # paraphrases are closer than unrelated text
    assert cos(res.vectors[0], res.vectors[1]) > cos(res.vectors[0], res.vectors[2]) + 0.2
    assert res.prompt_tokens > 10
