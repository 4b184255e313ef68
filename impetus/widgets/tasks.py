"""Long operations that leave the kernel free: `iw.pull`, `iw.load`, `iw.bench`.

Each returns a `Task` at once: a small panel (progress bar, status line, Stop button) whose work
runs on the widgets' own event loop. The kernel can run other cells meanwhile; `await task` (top
level in IPython) or `task.wait()` gives the result when it is needed.

```python
task = iw.pull("mlx-community/SmolLM2-360M-Instruct-4bit")
task            # shows the progress
...             # other cells run
await task      # the final progress event
```
"""

from __future__ import annotations

import asyncio
import concurrent.futures
from collections.abc import Awaitable, Callable, Generator
from html import escape
from typing import Any

import ipywidgets as w

from impetus.client import ImpetusError
from impetus.models.types import PullProgress
from impetus.protocol import ModelState
from impetus.widgets import _loop
from impetus.widgets._base import ClientLike, Connection, fmt_bytes, fmt_seconds, short_error

Work = Callable[["Task"], Awaitable[Any]]


class Task(w.VBox):
    """One background operation with its progress; awaitable, waitable, stoppable."""

    def __init__(self, title: str, work: Work, *, extra: list[w.Widget] | None = None) -> None:
        self.title = title
        self.bar = w.FloatProgress(value=0.0, min=0.0, max=1.0, layout=w.Layout(width="50%"))
        self.label = w.HTML(f"{escape(title)}: starting…")
        self.stop_button = w.Button(description="Stop", icon="stop", layout=w.Layout(width="80px"))
        self.stop_button.on_click(lambda _b: self.cancel())
        super().__init__([w.HBox([self.bar, self.stop_button, self.label]), *(extra or [])])
        self.add_class("impetus-task")
        self._task: asyncio.Task[Any] | None = None
        self.future: concurrent.futures.Future[Any] = _loop.submit(self._run(work))

    async def _run(self, work: Work) -> Any:
        self._task = asyncio.current_task()
        try:
            result = await work(self)
        except asyncio.CancelledError:
            self.finish("stopped", ok=False)
            raise
        except Exception as e:
            self.finish(f"failed: {short_error(e)}", ok=False)
            raise
        return result

    # ------------------------------------------------------------ progress, from the work
    def update(self, fraction: float | None, text: str) -> None:
        if fraction is None:
            self.bar.bar_style = "info"
        else:
            self.bar.value = max(0.0, min(1.0, fraction))
        self.label.value = f"{escape(self.title)}: {escape(text)}"

    def finish(self, text: str, *, ok: bool = True) -> None:
        if ok:
            self.bar.value = 1.0
        self.bar.bar_style = "success" if ok else "danger"
        self.stop_button.disabled = True
        self.label.value = f"{escape(self.title)}: {escape(text)}"

    # ------------------------------------------------------------ the caller's side
    @property
    def done(self) -> bool:
        return self.future.done()

    def cancel(self) -> None:
        task = self._task
        if task is not None and not task.done():
            _loop.call_soon(task.cancel)
        else:
            self.future.cancel()

    def wait(self, timeout: float | None = None) -> Any:
        """Block until done (a cell that needs the result); KeyboardInterrupt stops the task."""
        try:
            return self.future.result(timeout)
        except KeyboardInterrupt:
            self.cancel()
            raise

    def __await__(self) -> Generator[Any, None, Any]:
        return asyncio.wrap_future(self.future).__await__()


def pull(model_id: str, *, load: bool = False, client: ClientLike = None) -> Task:
    """Download (and convert) a model in the background; the task's result is the last event."""
    conn = Connection(client, model_id)

    async def work(task: Task) -> PullProgress:
        c = await conn.get()
        stream = await c.pull(model_id, load=load)
        last: PullProgress | None = None
        try:
            async for ev in stream:
                last = ev
                done, total = ev.bytes_done, ev.bytes_total
                text = f"{ev.status} {fmt_bytes(done)}"
                if total:
                    text += f" / {fmt_bytes(total)}"
                if ev.eta:
                    text += f" · {fmt_seconds(ev.eta)} left"
                task.update(done / total if total else None, text)
        except asyncio.CancelledError:
            await asyncio.shield(c.cancel_pull(model_id))
            raise
        finally:
            await stream.aclose()
        if last is None:
            raise ImpetusError(f"the pull of {model_id} ended without an event")
        if last.status != "done":
            raise ImpetusError(last.message or f"pull ended with {last.status}", code=last.code)
        task.finish(f"done · {fmt_bytes(last.bytes_done)}")
        return last

    return Task(f"pull {model_id}", work)


def load(
    model_id: str, *, dtype: str | None = None, keep_alive: float | None = None,
    client: ClientLike = None,
) -> Task:  # fmt: skip
    """Load a model into the engine in the background; the result is the model's state."""
    conn = Connection(client, model_id)

    async def work(task: Task) -> ModelState:
        c = await conn.get()
        task.update(None, "loading (reading weights, converting the dtype, warming up)…")
        state = await c.load(model_id, dtype=dtype, keep_alive=keep_alive)
        task.finish(
            f"loaded · {state.dtype} · {fmt_bytes(state.memory_bytes)} · {state.load_seconds:.1f} s"
        )
        return state

    return Task(f"load {model_id}", work)


def bench(argv: list[str], *, store: bool = True) -> Task:
    """`impetus bench serve` options in, a live `BenchChart` (its table has a row per finished
    profile) and the run record out (`impetus.bench.report.format_run` prints it)."""
    from impetus.bench.cli import parse_serve_config
    from impetus.bench.serve import run_serve
    from impetus.bench.store import ResultStore
    from impetus.widgets.bench import BenchChart

    config = parse_serve_config(argv)  # bad options fail here, in the caller's cell
    chart = BenchChart(title=f"impetus bench serve · {config.model} · {config.base_url}")

    async def work(task: Task) -> Any:
        def progress(done: int, total: int) -> None:
            chart.on_progress(done, total)
            task.update(done / total if total else None, f"{done} / {total} requests")

        record = await run_serve(
            config,
            on_result=chart.on_result,
            on_progress=progress,
            on_profile=chart.on_profile,
            store=ResultStore() if store else None,
        )
        failed = sum(1 for part in record.results for r in part if not r.success)
        task.finish(f"{len(record.profiles)} profiles · {failed} failed", ok=failed == 0)
        return record

    return Task("bench serve", work, extra=[chart])
