"""`Compare`: one prompt to two to four models, or one model with different settings, at once.

```python
iw.Compare(models=["smollm2-135m", "mlx-community/SmolLM2-360M-Instruct-4bit"])
iw.Compare(model="smollm2-135m", variants=[{"temperature": 0}, {"temperature": 1.2}])
iw.Compare(variants=[{"model": "a"}, {"model": "b", "system_prompt": "Answer in French."}])
```

The requests are sent together, so the engine batches them; each column streams its answer with
its time to first token, decode speed and token counts underneath (from the server's usage).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import time
from html import escape
from typing import Any

import ipywidgets as w

from impetus.client import ChatResult
from impetus.widgets import _loop
from impetus.widgets._base import ClientLike, Connection, short_error

# a column's text is re-sent whole on each refresh: at most this often while it streams
REFRESH_SECONDS = 0.1
SAMPLING = ("temperature", "top_p", "top_k", "min_p", "seed", "max_tokens")
VARIANT_KEYS = frozenset({"model", "system_prompt", "label", *SAMPLING})


def _variant_label(v: dict[str, Any]) -> str:
    if v.get("label"):
        return str(v["label"])
    extras = [f"{k}={v[k]}" for k in SAMPLING if k in v]
    if v.get("system_prompt"):
        extras.append("system prompt")
    return " · ".join([str(v["model"]), *extras])


class Column(w.VBox):
    def __init__(self, variant: dict[str, Any]) -> None:
        self.variant = variant
        self.header = w.HTML(f"<b>{escape(_variant_label(variant))}</b>")
        self.body = w.HTML("", layout=w.Layout(min_height="6em"))
        self.stats = w.HTML("")
        super().__init__([self.header, self.body, self.stats])
        self.add_class("impetus-compare-column")
        self.result: ChatResult | None = None

    def show(self, text: str, *, pending: bool) -> None:
        cursor = " ▍" if pending else ""
        self.body.value = (
            f'<div class="impetus-compare-text" style="white-space: pre-wrap">'
            f"{escape(text)}{cursor}</div>"
        )


class Compare(w.VBox):
    """Side-by-side answers. `run(prompt)` returns at once, `compare(prompt)` blocks and
    `await compare.run_async(prompt)` awaits; `results` holds one ChatResult per column."""

    def __init__(
        self,
        models: list[str] | None = None,
        *,
        model: str | None = None,
        variants: list[dict[str, Any]] | None = None,
        system_prompt: str = "",
        temperature: float = 0.7,
        max_tokens: int = 256,
        client: ClientLike = None,
    ) -> None:
        self.variants = self._variants(models, model, variants, system_prompt, temperature,
                                       max_tokens)  # fmt: skip
        self._conn = Connection(client, self.variants[0]["model"])
        self.columns = [Column(v) for v in self.variants]
        self.prompt = w.Textarea(
            placeholder="One prompt, sent to every column at once",
            layout=w.Layout(width="100%", height="4em"),
        )
        self.send_button = w.Button(description="Send", button_style="primary", icon="paper-plane")
        self.stop_button = w.Button(description="Stop", icon="stop", disabled=True)
        self.status = w.HTML("")
        self.send_button.on_click(lambda _b: self._send_from_ui())
        self.stop_button.on_click(lambda _b: self.stop())
        grid = w.GridBox(
            self.columns,
            layout=w.Layout(
                grid_template_columns=f"repeat({len(self.columns)}, minmax(0, 1fr))",
                grid_gap="12px",
                width="100%",
            ),
        )
        super().__init__(
            [self.prompt, w.HBox([self.send_button, self.stop_button, self.status]), grid]
        )
        self.add_class("impetus-compare")
        self.results: list[ChatResult | None] = [None] * len(self.columns)
        self._future: concurrent.futures.Future[list[ChatResult | None]] | None = None
        self._task: asyncio.Task[Any] | None = None

    @staticmethod
    def _variants(
        models: list[str] | None,
        model: str | None,
        variants: list[dict[str, Any]] | None,
        system_prompt: str,
        temperature: float,
        max_tokens: int,
    ) -> list[dict[str, Any]]:
        base: dict[str, Any] = {"temperature": temperature, "max_tokens": max_tokens}
        if system_prompt:
            base["system_prompt"] = system_prompt
        if models and variants:
            raise ValueError("give models=[...] or variants=[...], not both")
        if models:
            out = [{**base, "model": m} for m in models]
        elif variants:
            out = []
            for v in variants:
                unknown = set(v) - VARIANT_KEYS
                if unknown:
                    raise ValueError(
                        f"unknown variant keys {sorted(unknown)}; known: {sorted(VARIANT_KEYS)}"
                    )
                m = v.get("model") or model
                if not m:
                    raise ValueError("each variant needs a model (or pass model=...)")
                out.append({**base, **v, "model": m})
        else:
            raise ValueError("give models=[...] or variants=[...] (two to four columns)")
        if not 2 <= len(out) <= 4:
            raise ValueError(f"two to four columns, got {len(out)}")
        return out

    # ------------------------------------------------------------------ public API
    @property
    def busy(self) -> bool:
        return self._future is not None and not self._future.done()

    def run(self, prompt: str) -> concurrent.futures.Future[list[ChatResult | None]]:
        if self.busy:
            raise RuntimeError("a comparison is running: stop() it or wait for it")
        prompt = prompt.strip()
        if not prompt:
            raise ValueError("empty prompt")
        self.prompt.value = prompt
        self._future = _loop.submit(self._run(prompt))
        return self._future

    def compare(self, prompt: str, timeout: float = 600.0) -> list[ChatResult | None]:
        return self.run(prompt).result(timeout)

    async def run_async(self, prompt: str) -> list[ChatResult | None]:
        return await asyncio.wrap_future(self.run(prompt))

    def stop(self) -> None:
        task = self._task
        if task is not None and not task.done():
            _loop.call_soon(task.cancel)

    def summary(self) -> list[dict[str, Any]]:
        """One row per column: the variant and its figures (for a table or a DataFrame)."""
        rows = []
        for col, r in zip(self.columns, self.results, strict=True):
            rows.append(
                {
                    "variant": _variant_label(col.variant),
                    "ttft_s": r.ttft if r else None,
                    "tokens_per_second": r.tokens_per_second if r else None,
                    "prompt_tokens": r.prompt_tokens if r else None,
                    "completion_tokens": r.completion_tokens if r else None,
                    "finish_reason": r.finish_reason if r else None,
                }
            )
        return rows

    # ------------------------------------------------------------------ internals
    def _send_from_ui(self) -> None:
        try:
            self.run(self.prompt.value)
        except (RuntimeError, ValueError) as e:
            self.status.value = f'<span style="color: #c62828">{escape(str(e))}</span>'

    async def _run(self, prompt: str) -> list[ChatResult | None]:
        self._task = asyncio.current_task()
        self.send_button.disabled, self.stop_button.disabled = True, False
        self.status.value = "sending…"
        self.results = [None] * len(self.columns)
        t0 = time.perf_counter()
        try:
            client = await self._conn.get()
            await asyncio.gather(
                *(self._column(client, i, col, prompt) for i, col in enumerate(self.columns))
            )
            self.status.value = f"done in {time.perf_counter() - t0:.1f} s"
        except asyncio.CancelledError:
            self.status.value = "stopped"
        except Exception as e:
            self.status.value = f'<span style="color: #c62828">{escape(short_error(e))}</span>'
            raise
        finally:
            self.send_button.disabled, self.stop_button.disabled = False, True
            self._task = None
        return self.results

    async def _column(self, client: Any, i: int, col: Column, prompt: str) -> None:
        v = col.variant
        messages: list[dict[str, Any]] = []
        if v.get("system_prompt"):
            messages.append({"role": "system", "content": v["system_prompt"]})
        messages.append({"role": "user", "content": prompt})
        params = {k: v[k] for k in SAMPLING if k in v}
        col.stats.value = ""
        col.show("", pending=True)
        parts: list[str] = []
        stream = None
        cancelled = False
        try:
            stream = await client.chat_stream(messages, model=v["model"], **params)
            shown = 0.0
            async for delta in stream:
                parts.append(delta)
                now = time.monotonic()
                if now - shown >= REFRESH_SECONDS:
                    col.show("".join(parts), pending=True)
                    shown = now
        except asyncio.CancelledError:
            cancelled = True
            raise
        except Exception as e:  # one column's failure (an unknown model) leaves the others
            col.show("".join(parts), pending=False)
            col.stats.value = f'<span style="color: #c62828">{escape(short_error(e))}</span>'
            return
        finally:
            result = stream.result if stream is not None else None
            if result is not None:
                if cancelled and result.finish_reason is None:
                    result.finish_reason = "cancelled"
                self.results[i] = col.result = result
                col.show(result.text, pending=False)
                col.stats.value = f"<small>{escape(result.summary())}</small>"
