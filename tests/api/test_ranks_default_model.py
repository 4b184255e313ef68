"""The embedded default model (SmolLM2-135M) across three engine ranks gives the same greedy
text as one rank. Three, not two: its 9 attention heads and 3 key-value heads divide by 3 only
(two ranks are refused: test_ranks.py)."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from tests.api.conftest import Server

pytestmark = pytest.mark.slow

QUESTIONS = ["What is the capital of France?"]


def answers(srv: Server) -> list[str]:
    client = srv.openai()
    out = []
    for q in QUESTIONS:
        r = client.chat.completions.create(
            model="smollm2-135m",
            messages=[{"role": "user", "content": q}],
            max_tokens=8,
            temperature=0,
        )
        out.append(r.choices[0].message.content or "")
    return out


@pytest.mark.timeout(900)  # three ranks of a 135M model load and warm up on two cores
def test_three_ranks_answer_as_one_rank(
    server_factory: Callable[..., Server], tmp_path_factory: pytest.TempPathFactory
) -> None:
    # one model folder for both servers: the GGUF is converted once, by the first
    model_dir = str(tmp_path_factory.mktemp("smollm-models"))
    one = server_factory("--model", "smollm2-135m", "--model-dir", model_dir)
    solo = answers(one)
    assert "Paris" in solo[0]
    one.stop()  # three more processes of the model on a small machine: one server at a time
    three = server_factory(
        "--model", "smollm2-135m", "--model-dir", model_dir, "--ranks", "3", ready=False
    )
    three.wait_ready(timeout=600)  # three ranks warming up on two cores
    assert three.get("ready", key=None).json()["ranks"] == 3
    assert answers(three) == solo
