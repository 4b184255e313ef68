"""`impetus chat [MODEL]`: an interactive chat in the terminal, as Ollama's `run` has it.

It talks HTTP like every other client: to `--url` / `IMPETUS_URL` / this kernel's Jupyter server
when one is there, else to a private `impetus serve` started for the session (stopped at exit).
Answers stream as they are generated; the conversation is kept and sent whole each turn (the
engine's prompt cache makes that cheap). Commands: `/clear` forgets the conversation,
`/model NAME` switches model (the conversation stays), `/bye` (or Ctrl-D) quits, `/help`.
Ctrl-C stops an answer; after each one a line gives its tokens, rate and time to first token.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import uuid
from collections.abc import Callable
from typing import Any, TextIO

from impetus.client.chat import ChatResult
from impetus.client.clients import ImpetusClient
from impetus.client.discovery import Endpoint, find_endpoint
from impetus.client.errors import ImpetusError, ServerUnavailable
from impetus.client.server import DEFAULT_MODEL

HELP = """commands:
  /clear         forget the conversation
  /model NAME    switch to another model (the conversation stays)
  /bye           quit (Ctrl-D too)
  /help          this text
Ctrl-C stops an answer."""


def add_parser(sub: Any) -> None:
    from impetus.cli import documented_parser

    p = documented_parser(
        sub,
        "chat",
        __doc__,
        "interactive chat in the terminal (streaming, history, /clear, /model, /bye)",
    )
    p.add_argument(
        "model", nargs="?", default=None, help="model id (default: the first loaded one)"
    )
    p.add_argument(
        "--url",
        default=None,
        help="impetus server base URL (default: IMPETUS_URL, this Jupyter server, else a "
        "private `impetus serve`)",
    )
    p.add_argument("--api-key", default=None, help="API key for --url (default: IMPETUS_API_KEY)")
    p.add_argument("--system", default=None, help="a system message to start the conversation")
    p.add_argument("--max-tokens", type=int, default=None, help="max tokens per answer")
    p.add_argument("--temperature", type=float, default=None, help="sampling temperature")
    p.set_defaults(func=run)


class ChatSession:
    """The conversation and the commands; I/O is injected so that tests can drive it too."""

    def __init__(
        self,
        client: ImpetusClient,
        model: str,
        *,
        system: str | None = None,
        params: dict[str, Any] | None = None,
        out: TextIO = sys.stdout,
    ) -> None:
        self.client = client
        self.model = model
        self.system = system
        self.params = {k: v for k, v in (params or {}).items() if v is not None}
        self.out = out
        self.history: list[dict[str, str]] = []
        # sent with every turn: behind a proxy over several replicas, the conversation stays on
        # the one whose prompt cache holds it (docs/scale.md); a new one after /clear
        self.session = uuid.uuid4().hex

    def messages(self) -> list[dict[str, str]]:
        start = [{"role": "system", "content": self.system}] if self.system else []
        return start + self.history

    def command(self, line: str) -> bool:
        """Run a /command; False when the session should end."""
        name, _, arg = line[1:].partition(" ")
        arg = arg.strip()
        if name in ("bye", "exit", "quit"):
            return False
        if name == "clear":
            self.history.clear()
            self.session = uuid.uuid4().hex
            self.say("conversation cleared")
        elif name == "model":
            if not arg:
                self.say(f"model: {self.model}")
            else:
                known = self._served_ids()
                if known is not None and arg not in known:
                    self.say(f"note: {arg} is not loaded yet; the first message loads it")
                self.model = arg
                self.say(f"model: {self.model}")
        elif name in ("help", "?"):
            self.say(HELP)
        else:
            self.say(f"unknown command /{name} (try /help)")
        return True

    def _served_ids(self) -> set[str] | None:
        try:
            return {m.id for m in self.client.served_models()}
        except (ImpetusError, ServerUnavailable):
            return None

    def ask(self, text: str) -> None:
        """Send one user message and stream the answer; Ctrl-C stops it (the engine cancels)."""
        self.history.append({"role": "user", "content": text})
        stream = self.client.chat_stream(
            self.messages(), self.model, session=self.session, **self.params
        )
        parts: list[str] = []
        try:
            for delta in stream:
                parts.append(delta)
                self.out.write(delta)
                self.out.flush()
        except KeyboardInterrupt:
            stream.close()
            self.out.write("\n[stopped]")
        self.out.write("\n")
        answer = "".join(parts)
        if answer:
            self.history.append({"role": "assistant", "content": answer})
        else:  # nothing came back: the question is not part of the conversation
            self.history.pop()
        if stream.result is not None:
            self.say(f"[{stats_line(stream.result)}]")

    def say(self, text: str) -> None:
        self.out.write(text + "\n")
        self.out.flush()

    def loop(self, read: Callable[[str], str] = input) -> int:
        self.say(f"impetus chat · {self.model} · /help for commands, /bye to quit")
        while True:
            try:
                line = read(">>> ").strip()
            except EOFError:
                self.out.write("\n")
                return 0
            except KeyboardInterrupt:
                self.out.write("\n")
                continue
            if not line:
                continue
            if line.startswith("/"):
                if not self.command(line):
                    return 0
                continue
            try:
                self.ask(line)
            except ImpetusError as e:
                self.say(f"error: {e}")
            except ServerUnavailable as e:
                self.say(f"error: {e}")
                return 1


def stats_line(r: ChatResult) -> str:
    """Tokens, rate, time to first token and prompt size of one answer. The rate is the decode
    rate where measurable, else tokens over the whole answer (a short answer arrives at once)."""
    parts: list[str] = []
    if r.completion_tokens is not None:
        parts.append(f"{r.completion_tokens} tokens")
        rate = r.tokens_per_second
        if rate is None and r.elapsed > 0:
            rate = r.completion_tokens / r.elapsed
        if rate is not None:
            parts.append(f"{rate:.1f} tok/s")
    if r.ttft is not None:
        parts.append(f"first token {r.ttft * 1000:.0f} ms")
    if r.prompt_tokens is not None:
        parts.append(f"prompt {r.prompt_tokens} tokens ({r.cached_tokens or 0} cached)")
    if r.finish_reason:
        parts.append(r.finish_reason)
    return " · ".join(parts)


def _endpoint(args: argparse.Namespace) -> Endpoint:
    if args.url:
        return Endpoint(args.url, args.api_key)
    endpoint = find_endpoint(args.model or DEFAULT_MODEL, start=True)
    if args.api_key:
        endpoint.api_key = args.api_key
    return endpoint


def _default_model(client: ImpetusClient) -> str:
    """The first model the server has loaded, else the embedded default."""
    with contextlib.suppress(ImpetusError, ServerUnavailable):
        loaded = client.status().models
        if loaded:
            return loaded[0].id
    return DEFAULT_MODEL


def run(args: argparse.Namespace) -> int:
    try:
        endpoint = _endpoint(args)
    except ServerUnavailable as e:
        print(f"impetus chat: {e}", file=sys.stderr)
        return 1
    if endpoint.source == "private":
        print(f"(started a private impetus serve at {endpoint.base_url})", file=sys.stderr)
    # Line editing and history (arrow keys) for input(), where the platform has readline.
    with contextlib.suppress(ImportError):
        import readline  # noqa: F401
    with ImpetusClient(endpoint=endpoint) as client:
        model = args.model or _default_model(client)
        session = ChatSession(
            client,
            model,
            system=args.system,
            params={"max_tokens": args.max_tokens, "temperature": args.temperature},
        )
        try:
            return session.loop()
        finally:
            if endpoint.server is not None:
                endpoint.server.stop()
