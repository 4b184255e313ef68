"""IPython magics: `%load_ext impetus`, then `%%chat` and `%impetus ...`.

```
%%chat --model smollm2-135m --max-tokens 128
Summarise {topic} in two sentences.
```

The cell is the prompt (`{name}` takes a notebook variable); the answer streams into the output
area as Markdown and lands in `_` (text, or parsed JSON with `--json SCHEMA_VAR`). `%%chat
--continue` goes on with the conversation of the previous `%%chat`. `%impetus models | load M |
unload M | status | pull M | bench ...` manage the engine from a line.

Every call is an HTTP request to the impetus server this kernel finds (its Jupyter server, or a
private `impetus serve`), like the widgets' own.
"""

from __future__ import annotations

import json
import re
import shlex
import time
import uuid
from html import escape
from typing import Any

from IPython.core.error import UsageError
from IPython.core.magic import Magics, cell_magic, line_magic, magics_class
from IPython.core.magic_arguments import argument, magic_arguments, parse_argstring
from IPython.display import HTML, Markdown, display

from impetus.api.schemas import AdminStatus, Unloaded
from impetus.client import ChatResult, ImpetusClient, ImpetusError, default_endpoint
from impetus.protocol import ModelState
from impetus.widgets._base import fmt_bytes

# a display update resends the whole answer: at most this often while it streams
REFRESH_SECONDS = 0.1
_NAME = re.compile(r"\{\{|\}\}|\{([A-Za-z_][A-Za-z0-9_]*)\}")


def interpolate(text: str, namespace: dict[str, Any]) -> str:
    """`{name}` becomes the notebook variable's value; `{{` / `}}` are literal braces.

    Braces around anything else (code, JSON in a prompt) are left as they are, and so is a
    `{name}` the notebook does not define, so a prompt never fails for its own text.
    """

    def sub(m: re.Match[str]) -> str:
        token = m.group(0)
        if token in ("{{", "}}"):
            return token[0]
        name = m.group(1)
        return str(namespace[name]) if name in namespace else token

    return _NAME.sub(sub, text)


def json_schema_of(value: Any, name: str) -> tuple[dict[str, Any], Any]:
    """The JSON schema held by a notebook variable (a dict, or a pydantic model class), and the
    class to validate the answer into (None for a plain schema)."""
    schema_fn = getattr(value, "model_json_schema", None)
    if isinstance(value, type) and callable(schema_fn):
        return _strict(dict(schema_fn())), value
    if isinstance(value, dict):
        return value, None
    raise UsageError(
        f"--json {name}: expected a JSON schema (a dict) or a pydantic model class, "
        f"got {type(value).__name__}"
    )


def _strict(schema: Any) -> Any:
    """No properties beyond the declared ones, in every object of a pydantic schema, as the
    OpenAI SDK does for a pydantic `response_format`: an answer is exactly the class."""
    if isinstance(schema, dict):
        out = {k: _strict(v) for k, v in schema.items()}
        if out.get("type") == "object" and "properties" in out:
            out.setdefault("additionalProperties", False)
        return out
    if isinstance(schema, list):
        return [_strict(v) for v in schema]
    return schema


class Conversation:
    """The messages of the notebook's current `%%chat` conversation."""

    def __init__(self) -> None:
        self.messages: list[dict[str, Any]] = []
        self.model: str | None = None
        self.session = uuid.uuid4().hex  # X-Session-Id of its turns (docs/scale.md)

    def start(self, system: str | None, model: str | None) -> None:
        self.messages = [{"role": "system", "content": system}] if system else []
        self.model = model
        self.session = uuid.uuid4().hex


@magics_class
class ImpetusMagics(Magics):
    def __init__(self, shell: Any) -> None:
        super().__init__(shell)
        self._client: ImpetusClient | None = None
        self.conversation = Conversation()

    # ---------------------------------------------------------------- connection
    def client(self, model: str | None = None) -> ImpetusClient:
        if self._client is None:
            self._client = ImpetusClient(endpoint=default_endpoint(model), model=model)
        return self._client

    def _default_model(self, client: ImpetusClient) -> str:
        """The loaded chat model (the first), else the embedded default."""
        for m in client.status().models:
            if m.kind != "embedding":
                return m.id
        from impetus.client import DEFAULT_MODEL

        return DEFAULT_MODEL

    # ---------------------------------------------------------------- %%chat
    @magic_arguments()
    @argument("--model", "-m", help="model id (default: the loaded model, or the conversation's)")
    @argument("--max-tokens", type=int, default=512, help="tokens to generate at most")
    @argument("--temperature", "-t", type=float, help="sampling temperature")
    @argument("--system", "-s", help="system prompt (a new conversation only)")
    @argument(
        "--json",
        dest="json_var",
        metavar="SCHEMA_VAR",
        help="constrain the answer to the JSON schema in this variable (a dict or pydantic class)",
    )
    @argument(
        "--continue",
        "-c",
        dest="cont",
        action="store_true",
        help="go on with the previous %%%%chat conversation",
    )
    @argument("--quiet", "-q", action="store_true", help="no statistics line under the answer")
    @cell_magic
    def chat(self, line: str, cell: str) -> None:
        """Send the cell to a model; stream the answer as Markdown; the answer lands in `_`."""
        args = parse_argstring(self.chat, line)
        ns = self._namespace()
        prompt = interpolate(cell, ns).strip()
        if not prompt:
            raise UsageError("%%chat: the cell is the prompt, and it is empty")
        schema = validator = None
        if args.json_var:
            if args.json_var not in ns:
                raise UsageError(f"--json {args.json_var}: no such variable in the notebook")
            schema, validator = json_schema_of(ns[args.json_var], args.json_var)

        conv = self.conversation
        if args.cont and conv.messages:
            if args.system:
                raise UsageError(
                    "--system starts a conversation: it cannot be used with --continue"
                )
            model = args.model or conv.model
        else:
            conv.start(args.system, args.model)
            model = args.model
        client = self.client(model)
        model = model or self._default_model(client)
        conv.model = model

        params: dict[str, Any] = {
            "max_tokens": args.max_tokens,
            # usage on every chunk: an interrupted answer still knows its token count
            "stream_options": {"include_usage": True, "continuous_usage_stats": True},
        }
        if args.temperature is not None:
            params["temperature"] = args.temperature
        if schema is not None:
            params["response_format"] = {
                "type": "json_schema",
                "json_schema": {"name": args.json_var, "schema": schema, "strict": True},
            }
        messages = [*conv.messages, {"role": "user", "content": prompt}]
        result = self._stream_answer(client, messages, model, params, as_json=schema is not None,
                                     quiet=args.quiet, session=conv.session)  # fmt: skip
        if result.finish_reason == "cancelled" and not result.text:
            return
        conv.messages = [*messages, {"role": "assistant", "content": result.text}]
        value: Any = result.text
        if schema is not None:
            try:
                value = json.loads(result.text)
            except ValueError as e:
                raise ImpetusError(
                    f"the answer is not complete JSON ({result.finish_reason}): {e}; "
                    "raise --max-tokens"
                ) from None
            if validator is not None:
                value = validator.model_validate(value)
        self._set_underscore(value)

    def _stream_answer(
        self,
        client: ImpetusClient,
        messages: list[dict[str, Any]],
        model: str,
        params: dict[str, Any],
        *,
        as_json: bool,
        quiet: bool,
        session: str,
    ) -> ChatResult:
        def render(text: str, footer: str = "") -> Markdown:
            body = f"```json\n{text}\n```" if as_json else text
            return Markdown(body + (f"\n\n<sub>{escape(footer)}</sub>" if footer else ""))

        handle = display(Markdown("*…*"), display_id=True)
        stream = client.chat_stream(messages, model=model, session=session, **params)
        parts: list[str] = []
        shown = 0.0
        try:
            for delta in stream:
                parts.append(delta)
                now = time.monotonic()
                if now - shown >= REFRESH_SECONDS:
                    handle.update(render("".join(parts)))
                    shown = now
        except KeyboardInterrupt:  # Interrupt the kernel = stop the answer (the engine cancels)
            stream.close()
            list(stream)  # drains nothing: finishes the result as cancelled
        result = stream.result or ChatResult(text="".join(parts), finish_reason="cancelled")
        footer = "" if quiet else f"{model} · {result.summary()}"
        if result.finish_reason == "cancelled":
            n = result.completion_tokens
            footer = f"{model} · stopped" + (f" after {n} tokens" if n is not None else "")
        handle.update(render(result.text, footer))
        return result

    def _set_underscore(self, value: Any) -> None:
        """`_` (and `Out`) hold the answer, as if the cell had returned it, without printing it
        a second time under the streamed Markdown."""
        hook = getattr(self.shell, "displayhook", None)
        if hook is not None and hasattr(hook, "update_user_ns"):
            hook.update_user_ns(value)
        else:
            self._namespace()["_"] = value

    def _namespace(self) -> dict[str, Any]:
        if self.shell is None:
            raise UsageError("the impetus magics need an IPython shell")
        ns: dict[str, Any] = self.shell.user_ns
        return ns

    # ---------------------------------------------------------------- %impetus
    @line_magic
    def impetus(self, line: str) -> None:
        """`%impetus models | status | load M [--dtype D] | unload M | pull M | bench ARGS`.

        Each prints a summary; the full value (status, model state, benchmark record) lands in
        `_` rather than being printed whole."""
        words = shlex.split(line)
        if not words:
            raise UsageError(
                "usage: %impetus models | status | load MODEL | unload MODEL | pull MODEL | "
                "bench [impetus bench serve options]"
            )
        command, rest = words[0], words[1:]
        handler = getattr(self, f"_cmd_{command}", None)
        if handler is None:
            raise UsageError(f"%impetus: unknown command {command!r}")
        value = handler(rest)
        if value is not None:
            self._set_underscore(value)

    def _cmd_models(self, rest: list[str]) -> None:
        client = self.client()
        rows = []
        for m in client.models():
            state = "loaded" if m.loaded else ("on disk" if m.downloaded else "")
            rows.append(
                f"<tr><td><code>{escape(m.id)}</code></td>"
                f"<td>{escape(m.kind)}</td><td>{escape(state)}</td>"
                f"<td>{escape(fmt_bytes(m.size_bytes) if m.size_bytes else '')}</td></tr>"
            )
        display(
            HTML(
                "<table><tr><th>model</th><th>kind</th><th>state</th><th>size</th></tr>"
                + "".join(rows)
                + "</table>"
            )
        )

    def _cmd_status(self, rest: list[str]) -> AdminStatus:
        client = self.client()
        status = client.status()
        lines = [f"engine: {status.state} · backend {status.backend} · {client.endpoint.base_url}"]
        for m in status.models:
            lines.append(f"  {m.id}  {m.kind}  {m.dtype}  {fmt_bytes(m.memory_bytes)}")
        print("\n".join(lines))
        return status

    def _one_model(self, rest: list[str], command: str) -> str:
        if len(rest) < 1:
            raise UsageError(f"usage: %impetus {command} MODEL")
        return rest[0]

    def _cmd_load(self, rest: list[str]) -> ModelState:
        model = self._one_model(rest, "load")
        dtype = None
        if "--dtype" in rest:
            i = rest.index("--dtype")
            if i + 1 >= len(rest):
                raise UsageError("--dtype needs a value")
            dtype = rest[i + 1]
        print(f"loading {model}…", flush=True)
        state = self.client().load(model, dtype=dtype)
        print(f"loaded {state.id} · {state.dtype} · {fmt_bytes(state.memory_bytes)}")
        return state

    def _cmd_unload(self, rest: list[str]) -> Unloaded:
        model = self._one_model(rest, "unload")
        out = self.client().unload(model)
        print(f"unloaded {model}")
        return out

    def _cmd_pull(self, rest: list[str]) -> None:
        from impetus.widgets.tasks import pull

        model = self._one_model(rest, "pull")
        task = pull(model, client=self.client().endpoint)
        display(task)
        task.wait()

    def _cmd_bench(self, rest: list[str]) -> Any:
        from impetus.widgets.tasks import bench

        client = self.client()
        argv = list(rest)
        if "--base-url" not in argv:
            argv += ["--base-url", client.endpoint.openai_base_url]
        if "--model" not in argv:
            argv += ["--model", self._default_model(client)]
        if "--api-key" not in argv and client.endpoint.api_key:
            argv += ["--api-key", client.endpoint.api_key]
        task = bench(argv)
        display(task)
        record = task.wait()
        from impetus.bench.report import format_run

        print(format_run(record))  # also where widgets don't render (papermill, nbconvert)
        return record


def load_ipython_extension(ipython: Any) -> None:
    ipython.register_magics(ImpetusMagics(ipython))
