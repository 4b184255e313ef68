"""HTTP client of the impetus api, used by the widgets, the bench runner and scripts.

Where the server is, in order:
1. an explicit ``base_url`` (and ``api_key``);
2. ``IMPETUS_URL`` / ``IMPETUS_API_KEY`` in the environment;
3. the Jupyter server that started this kernel (``JPY_PARENT_PID`` matched against
   ``jupyter_server.serverapp.list_running_servers()``), if it hosts the impetus extension:
   base ``{url}impetus/``, its token as a Bearer key;
4. otherwise a private ``impetus serve`` on a free loopback port, started once per process and
   stopped at exit (papermill in CI, plain scripts).

Every call has a timeout: a notebook must never hang on a server that went away. Streams are
real SSE (``text/event-stream``) read line by line; closing a stream closes the connection, which
is how the api layer learns to cancel the generation in the engine.
"""

from __future__ import annotations

import atexit
import contextlib
import ipaddress
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import AsyncIterator, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import quote, urlsplit

import httpx
from pydantic import BaseModel

if TYPE_CHECKING:  # openai is an optional dependency: imported only by `openai()`
    import openai

__all__ = [
    "DEFAULT_MODEL",
    "AsyncChatStream",
    "AsyncImpetusClient",
    "AsyncPullStream",
    "ChatResult",
    "ChatStream",
    "Endpoint",
    "ImpetusClient",
    "ImpetusError",
    "PrivateServer",
    "PullStream",
    "ServerUnavailable",
    "default_endpoint",
    "find_endpoint",
]

DEFAULT_MODEL = "smollm2-135m"

# Short calls (status, model list) vs. streams, where `read` is the longest silence between two
# events we accept (a long prompt's prefill happens before the first token).
DEFAULT_TIMEOUT = httpx.Timeout(30.0, connect=5.0)
STREAM_TIMEOUT = httpx.Timeout(30.0, connect=5.0, read=300.0)
# How long `impetus serve` may take to answer /health (first start converts the default model).
SERVER_START_TIMEOUT = float(os.environ.get("IMPETUS_SERVER_START_TIMEOUT", 300.0))

# Below this (seconds between the first and the last text chunk) a decode speed is not measurable.
MIN_DECODE_SPAN = 0.02

PullStatus = Literal["downloading", "converting", "done", "error", "cancelled"]
PULL_FINAL: frozenset[str] = frozenset({"done", "error", "cancelled"})


# --------------------------------------------------------------------------------------------
# errors


class ImpetusError(Exception):
    """An error answered by the server, in OpenAI's shape (`code` is the engine's code)."""

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        code: str | None = None,
        type: str | None = None,
        param: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.code = code
        self.type = type
        self.param = param

    def __str__(self) -> str:
        where = f"HTTP {self.status}" if self.status else "impetus"
        code = f" {self.code}" if self.code else ""
        return f"{where}{code}: {self.message}"

    @classmethod
    def from_response(cls, status: int, body: bytes | str) -> ImpetusError:
        text = body.decode("utf-8", "replace") if isinstance(body, bytes) else body
        try:
            data = json.loads(text)
        except ValueError:
            data = None
        if isinstance(data, dict):
            return cls.from_payload(data, status=status)
        text = text.strip()
        if text.startswith("<"):  # an HTML error page (a proxy, or Jupyter's own 404 page)
            text = ""
        return cls(text[:500] or httpx.codes.get_reason_phrase(status), status=status)

    @classmethod
    def from_payload(cls, data: Mapping[str, Any], *, status: int | None = None) -> ImpetusError:
        err = data.get("error", data)
        if isinstance(err, Mapping):
            return cls(
                str(err.get("message") or err),
                status=status,
                code=_opt_str(err.get("code")),
                type=_opt_str(err.get("type")),
                param=_opt_str(err.get("param")),
            )
        # jupyter_server's own errors: {"message": ..., "reason": ...}
        return cls(str(data.get("message") or err), status=status)


class ServerUnavailable(ImpetusError):
    """The server could not be reached (not started yet, restarting, or gone)."""


def _opt_str(value: Any) -> str | None:
    return None if value is None else str(value)


# --------------------------------------------------------------------------------------------
# finding (or starting) the server


@dataclass
class Endpoint:
    """Where the api lives and how to authenticate. `base_url` ends with a slash."""

    base_url: str
    api_key: str | None = None
    source: Literal["explicit", "env", "jupyter", "private"] = "explicit"
    verify: bool = True
    server: PrivateServer | None = None
    # Jupyter without a token checks XSRF on POST even with a Bearer header; tornado's check is
    # a double-submit compare of cookie and header, so one random value sent as both passes it.
    xsrf: str = field(default_factory=lambda: secrets.token_hex(16))

    def __post_init__(self) -> None:
        if not self.base_url.endswith("/"):
            self.base_url += "/"

    def url(self, path: str) -> str:
        return self.base_url + path.lstrip("/")

    @property
    def openai_base_url(self) -> str:
        return self.url("v1")

    def headers(self) -> dict[str, str]:
        headers = {"X-XSRFToken": self.xsrf, "Cookie": f"_xsrf={self.xsrf}"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        return headers

    @property
    def is_local(self) -> bool:
        """True when the server runs on this machine (its engine pid is then one of ours to see)."""
        host = urlsplit(self.base_url).hostname or ""
        if host in ("localhost", socket.gethostname()):
            return True
        try:
            return ipaddress.ip_address(host).is_loopback
        except ValueError:
            return False


def find_endpoint(model: str | None = None, *, start: bool = True) -> Endpoint:
    """Resolve where the api is (see the module docstring); start a private server if needed."""
    url = os.environ.get("IMPETUS_URL")
    if url:
        return Endpoint(url, os.environ.get("IMPETUS_API_KEY") or None, source="env")
    jupyter = _jupyter_endpoint()
    if jupyter is not None:
        return jupyter
    if not start:
        raise ServerUnavailable("no impetus server found (IMPETUS_URL unset, no Jupyter server)")
    server = PrivateServer(model or os.environ.get("IMPETUS_MODEL") or DEFAULT_MODEL)
    server.start()
    return Endpoint(server.base_url, None, source="private", server=server)


_default_lock = threading.Lock()
_default: Endpoint | None = None


def default_endpoint(model: str | None = None) -> Endpoint:
    """The process-wide endpoint every widget shares (one private server per kernel at most)."""
    global _default
    with _default_lock:
        if _default is None or (_default.server is not None and not _default.server.running):
            _default = find_endpoint(model)
        return _default


def _jupyter_endpoint() -> Endpoint | None:
    """The Jupyter server that launched this kernel, if it serves impetus."""
    parent = os.environ.get("JPY_PARENT_PID")
    if not parent:
        return None
    try:
        from jupyter_server.serverapp import list_running_servers
    except ImportError:
        return None
    for info in list_running_servers():
        if str(info.get("pid")) != parent or info.get("sock"):
            continue
        host = str(info.get("hostname") or "localhost")
        if host in ("", "0.0.0.0", "::", "*"):  # a wildcard bind: this machine answers on loopback
            host = "127.0.0.1"
        if ":" in host:
            host = f"[{host}]"
        scheme = "https" if info.get("secure") else "http"
        base_url = f"{scheme}://{host}:{info['port']}{info.get('base_url') or '/'}impetus/"
        endpoint = Endpoint(
            base_url,
            info.get("token") or None,
            source="jupyter",
            # the runtime file vouches for this server; a self-signed certificate is expected
            verify=not info.get("secure"),
        )
        if _serves_impetus(endpoint):
            return endpoint
    return None


def _serves_impetus(endpoint: Endpoint) -> bool:
    try:
        r = httpx.get(
            endpoint.url("health"), headers=endpoint.headers(), timeout=5.0, verify=endpoint.verify
        )
    except httpx.HTTPError:
        return False
    return r.status_code == 200


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class PrivateServer:
    """An `impetus serve` child on loopback with auth off, stopped (with its engine) at exit."""

    def __init__(
        self,
        model: str | None = DEFAULT_MODEL,
        *,
        port: int | None = None,
        extra_args: Iterable[str] = (),
        env: Mapping[str, str] | None = None,
    ) -> None:
        self.model = model
        self.port = port or _free_port()
        self.extra_args = list(extra_args)
        self.env = dict(env) if env is not None else None
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path: Path | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/"

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def command(self) -> list[str]:
        cmd = [sys.executable, "-m", "impetus.cli", "serve", "--host", "127.0.0.1"]
        # This process's own server: a model folder named by path works as in a script
        cmd += ["--port", str(self.port), "--no-auth", "--allow-model-paths"]
        if self.model:
            cmd += ["--model", self.model]
        return cmd + self.extra_args

    def _child_env(self) -> dict[str, str]:
        env = dict(self.env if self.env is not None else os.environ)
        # The child must import the same impetus as this process, installed or not.
        root = str(Path(__file__).resolve().parent.parent)
        paths = [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
        if root not in paths:
            env["PYTHONPATH"] = os.pathsep.join([root, *paths])
        # A kernel's variables must not leak in: the server would take IMPETUS_API_KEY as its key
        # (contradicting --no-auth), and JPY_PARENT_PID names a Jupyter server it is not part of.
        for name in ("JPY_PARENT_PID", "IMPETUS_API_KEY", "IMPETUS_URL"):
            env.pop(name, None)
        return env

    def start(self, timeout: float = SERVER_START_TIMEOUT) -> None:
        if self.running:
            return
        fd, log = tempfile.mkstemp(prefix="impetus-serve-", suffix=".log")
        self.log_path = Path(log)
        # A supervisor between us and the server: it stops the server when this process dies
        # without running atexit (a kernel killed by a restart or the OOM killer).
        supervised = [sys.executable, "-m", "impetus.client", "--exit-with", str(os.getpid())]
        with os.fdopen(fd, "wb") as log_file:
            self.proc = subprocess.Popen(
                [*supervised, "--", *self.command()],
                stdin=subprocess.DEVNULL,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                env=self._child_env(),
                # own process group: stop() takes the engine process down with the server
                start_new_session=True,
            )
        atexit.register(self.stop)
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise ServerUnavailable(
                    f"impetus serve exited with code {self.proc.returncode}:\n{self.log_tail()}"
                )
            try:
                if httpx.get(self.base_url + "health", timeout=2.0).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                self.stop()
                raise ServerUnavailable(
                    f"impetus serve did not answer within {timeout:.0f} s:\n{self.log_tail()}"
                )
            time.sleep(0.2)

    def log_tail(self, chars: int = 4000) -> str:
        if self.log_path is None or not self.log_path.exists():
            return ""
        return self.log_path.read_text(errors="replace")[-chars:]

    def stop(self, timeout: float = 10.0) -> None:
        proc, self.proc = self.proc, None
        if proc is None:
            return
        with contextlib.suppress(ValueError):
            atexit.unregister(self.stop)
        if proc.poll() is None:
            for sig in (signal.SIGTERM, signal.SIGKILL):
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(proc.pid, sig)
                try:
                    proc.wait(timeout)
                    break
                except subprocess.TimeoutExpired:
                    continue
        if self.log_path is not None:
            with contextlib.suppress(OSError):
                self.log_path.unlink()

    def __enter__(self) -> PrivateServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


# --------------------------------------------------------------------------------------------
# SSE and results


class _SSEDecoder:
    """Server-sent events from lines (https://html.spec.whatwg.org/#event-stream-interpretation)."""

    def __init__(self) -> None:
        self.event = ""
        self.data: list[str] = []

    def feed(self, line: str) -> tuple[str, str] | None:
        """One line in; an (event, data) pair out when a blank line ends an event."""
        line = line.rstrip("\r\n")
        if not line:
            if not self.data:
                self.event = ""
                return None
            out = (self.event or "message", "\n".join(self.data))
            self.event, self.data = "", []
            return out
        if line.startswith(":"):  # comment / keep-alive
            return None
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "data":
            self.data.append(value)
        elif name == "event":
            self.event = value
        return None


def _event_payload(event: str, data: str) -> dict[str, Any] | None:
    """JSON of one SSE event; None for the `[DONE]` sentinel; raises on error events."""
    if data.strip() == "[DONE]":
        return None
    payload = json.loads(data)
    if event == "error" or (isinstance(payload, dict) and isinstance(payload.get("error"), dict)):
        raise ImpetusError.from_payload(payload)
    if not isinstance(payload, dict):
        raise ImpetusError(f"unexpected event data: {data[:200]}")
    return payload


class ChatResult(BaseModel):
    """What one streamed answer amounted to; timings measured here, at the client."""

    text: str = ""
    model: str | None = None
    id: str | None = None
    finish_reason: str | None = None  # "stop" | "length" | ... ; "cancelled" when closed here
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    cached_tokens: int | None = None
    usage: dict[str, Any] | None = None
    ttft: float | None = None  # seconds from sending the request to the first text
    elapsed: float = 0.0  # seconds from sending the request to the end
    tokens_per_second: float | None = None  # decode speed: the engine's if it reports it, else ours
    engine_timings: dict[str, Any] | None = None  # the server's own timings, where it sends them

    def summary(self) -> str:
        parts = []
        if self.tokens_per_second is not None:
            parts.append(f"{self.tokens_per_second:.1f} tok/s")
        if self.ttft is not None:
            parts.append(f"TTFT {self.ttft * 1000:.0f} ms")
        if self.completion_tokens is not None:
            parts.append(f"{self.completion_tokens} tokens")
        if self.cached_tokens is not None and self.prompt_tokens:
            parts.append(f"cached {self.cached_tokens}/{self.prompt_tokens} prompt tokens")
        if self.finish_reason:
            parts.append(self.finish_reason)
        return " · ".join(parts)


class _ChatAccumulator:
    """Turns chat.completion.chunk payloads into deltas and a ChatResult."""

    def __init__(self) -> None:
        self.t0 = time.perf_counter()
        self.t_first: float | None = None
        self.t_last: float | None = None
        self.parts: list[str] = []
        self.result = ChatResult()

    def add(self, chunk: Mapping[str, Any]) -> str:
        now = time.perf_counter()
        self.result.id = chunk.get("id") or self.result.id
        self.result.model = chunk.get("model") or self.result.model
        text = ""
        for choice in chunk.get("choices") or []:
            if choice.get("index", 0) != 0:
                continue
            delta = choice.get("delta") or {}
            text += delta.get("content") or ""
            if choice.get("finish_reason"):
                self.result.finish_reason = choice["finish_reason"]
        if text:
            if self.t_first is None:
                self.t_first = now
            self.t_last = now
            self.parts.append(text)
        # llama.cpp-style engine timings, on the last chunk or inside usage, where a server sends them
        timings = chunk.get("timings") or (chunk.get("usage") or {}).get("timings")
        if isinstance(timings, dict):
            self.result.engine_timings = dict(timings)
        usage = chunk.get("usage")
        if usage:
            self.result.usage = dict(usage)
            self.result.prompt_tokens = usage.get("prompt_tokens")
            self.result.completion_tokens = usage.get("completion_tokens")
            details = usage.get("prompt_tokens_details") or {}
            self.result.cached_tokens = details.get("cached_tokens")
        return text

    def finish(self, cancelled: bool = False) -> ChatResult:
        r = self.result
        r.text = "".join(self.parts)
        r.elapsed = time.perf_counter() - self.t0
        if cancelled and r.finish_reason is None:
            r.finish_reason = "cancelled"
        if self.t_first is not None:
            r.ttft = self.t_first - self.t0
        engine_tps = (r.engine_timings or {}).get("decode_tps")
        if isinstance(engine_tps, int | float) and engine_tps > 0:
            r.tokens_per_second = float(engine_tps)
        elif r.completion_tokens and r.completion_tokens > 1 and self.t_first is not None:
            # decode speed seen here: the tokens after the first over the time after the first.
            # Tokens that arrive in one burst (a server flushing several engine steps at once)
            # give no measurable span: no number then, rather than an absurd one.
            span = (self.t_last or self.t_first) - self.t_first
            if span >= MIN_DECODE_SPAN:
                r.tokens_per_second = (r.completion_tokens - 1) / span
        return r


def chat_body(
    messages: list[dict[str, Any]],
    model: str,
    *,
    stream: bool,
    temperature: float | None = None,
    top_p: float | None = None,
    max_tokens: int | None = None,
    **extra: Any,
) -> dict[str, Any]:
    body: dict[str, Any] = {"model": model, "messages": messages, "stream": stream}
    if stream:
        body["stream_options"] = {"include_usage": True}
    for key, value in (("temperature", temperature), ("top_p", top_p), ("max_tokens", max_tokens)):
        if value is not None:
            body[key] = value
    body.update(extra)
    return body


# --------------------------------------------------------------------------------------------
# sync client


class ChatStream:
    """Iterate for text deltas; `.result` after the end; `close()` stops (the engine cancels)."""

    def __init__(self, response: httpx.Response) -> None:
        self._response = response
        self._acc = _ChatAccumulator()
        self._closed = False
        self.result: ChatResult | None = None

    def __iter__(self) -> Iterator[str]:
        decoder = _SSEDecoder()
        try:
            for line in self._response.iter_lines():
                ev = decoder.feed(line)
                if ev is None:
                    continue
                payload = _event_payload(*ev)
                if payload is None:
                    break
                text = self._acc.add(payload)
                if text:
                    yield text
        except (httpx.HTTPError, httpx.StreamError) as e:
            # closing the response (Stop) ends the read with an error: that is not a failure
            if not self._closed:
                raise ServerUnavailable(f"stream broken: {e}") from e
        finally:
            self._response.close()
            self.result = self._acc.finish(cancelled=self._closed)

    def close(self) -> None:
        self._closed = True
        self._response.close()

    def __enter__(self) -> ChatStream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class PullStream:
    """Progress events of a model download (dicts as documented in docs/architecture.md)."""

    def __init__(self, response: httpx.Response) -> None:
        self._response = response
        self.last: dict[str, Any] | None = None

    def __iter__(self) -> Iterator[dict[str, Any]]:
        decoder = _SSEDecoder()
        try:
            for line in self._response.iter_lines():
                ev = decoder.feed(line)
                if ev is None:
                    continue
                payload = _event_payload(*ev)
                if payload is None:
                    break
                self.last = payload
                yield payload
                if payload.get("status") in PULL_FINAL:
                    break
        finally:
            self._response.close()

    def close(self) -> None:
        self._response.close()


def _check(response: httpx.Response) -> httpx.Response:
    if response.status_code >= 400:
        if not response.is_closed:
            response.read()
        raise ImpetusError.from_response(response.status_code, response.content)
    return response


class ImpetusClient:
    """Blocking client over the api. `ImpetusClient()` finds (or starts) the server itself."""

    def __init__(
        self,
        base_url: str | None = None,
        api_key: str | None = None,
        *,
        model: str | None = None,
        endpoint: Endpoint | None = None,
        timeout: httpx.Timeout | float = DEFAULT_TIMEOUT,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        if endpoint is None:
            endpoint = Endpoint(base_url, api_key) if base_url else default_endpoint(model)
        self.endpoint = endpoint
        self.model = model
        self._http = httpx.Client(
            base_url=endpoint.base_url,
            headers=endpoint.headers(),
            timeout=timeout,
            verify=endpoint.verify,
            transport=transport,
        )

    # -- plumbing
    def _request(self, method: str, path: str, **kw: Any) -> httpx.Response:
        try:
            return _check(self._http.request(method, path, **kw))
        except httpx.TransportError as e:
            raise ServerUnavailable(f"{self.endpoint.base_url} unreachable: {e}") from e

    def _stream(self, method: str, path: str, **kw: Any) -> httpx.Response:
        request = self._http.build_request(method, path, timeout=STREAM_TIMEOUT, **kw)
        try:
            return _check(self._http.send(request, stream=True))
        except httpx.TransportError as e:
            raise ServerUnavailable(f"{self.endpoint.base_url} unreachable: {e}") from e

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> ImpetusClient:
        return self

    def __exit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    # -- ops
    def health(self) -> bool:
        try:
            return self._http.get("health", timeout=5.0).status_code == 200
        except httpx.HTTPError:
            return False

    def ready(self) -> dict[str, Any]:
        """`/ready`'s body; raises ImpetusError (503) while the engine is not ready."""
        return dict(self._request("GET", "ready").json())

    def wait_ready(self, timeout: float = 120.0, poll: float = 0.25) -> dict[str, Any]:
        """Block until the engine is up and a model is loaded (or raise after `timeout`)."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                return self.ready()
            except ImpetusError:
                if time.monotonic() > deadline:
                    raise
            time.sleep(poll)

    def status(self) -> dict[str, Any]:
        return dict(self._request("GET", "admin/status").json())

    def metrics(self) -> str:
        """Prometheus text; see `parse_metrics` for sums by metric name."""
        return self._request("GET", "metrics").text

    # -- models
    def models(self) -> list[dict[str, Any]]:
        """The registry: local, cached and built-in models (`admin/models`)."""
        return list(self._request("GET", "admin/models").json().get("data", []))

    def search_models(self, query: str) -> list[dict[str, Any]]:
        """Hugging Face hub models matching `query` (raises when the hub cannot be searched)."""
        r = self._request("GET", "admin/models/search", params={"q": query})
        return _search_results(r.json())

    def served_models(self) -> list[dict[str, Any]]:
        """OpenAI's `v1/models`."""
        return list(self._request("GET", "v1/models").json().get("data", []))

    def pull(self, model_id: str, *, load: bool = False) -> PullStream:
        return PullStream(
            self._stream("POST", "admin/models/pull", json={"id": model_id, "load": load})
        )

    def cancel_pull(self, model_id: str) -> dict[str, Any]:
        return _json(self._request("POST", "admin/models/pull/cancel", json={"id": model_id}))

    def load(
        self, model_id: str, *, dtype: str | None = None, keep_alive: float | None = None
    ) -> dict[str, Any]:
        body: dict[str, Any] = {"id": model_id}
        if dtype is not None:
            body["dtype"] = dtype
        if keep_alive is not None:
            body["keep_alive"] = keep_alive
        # loading converts / reads weights: allow minutes, not seconds
        return _json(self._request("POST", "admin/models/load", json=body, timeout=STREAM_TIMEOUT))

    def unload(self, model_id: str) -> dict[str, Any]:
        return _json(self._request("POST", "admin/models/unload", json={"id": model_id}))

    def delete(self, model_id: str) -> dict[str, Any]:
        return _json(self._request("DELETE", f"admin/models/{quote(model_id, safe='')}"))

    # -- inference
    def _model(self, model: str | None) -> str:
        return model or self.model or DEFAULT_MODEL

    def chat_stream(
        self, messages: list[dict[str, Any]], model: str | None = None, **params: Any
    ) -> ChatStream:
        body = chat_body(messages, self._model(model), stream=True, **params)
        return ChatStream(self._stream("POST", "v1/chat/completions", json=body))

    def chat(
        self, messages: list[dict[str, Any]], model: str | None = None, **params: Any
    ) -> dict[str, Any]:
        body = chat_body(messages, self._model(model), stream=False, **params)
        return _json(
            self._request("POST", "v1/chat/completions", json=body, timeout=STREAM_TIMEOUT)
        )

    def completions(
        self, prompt: str | list[int], model: str | None = None, **params: Any
    ) -> dict[str, Any]:
        body = {"model": self._model(model), "prompt": prompt, **params}
        return _json(self._request("POST", "v1/completions", json=body, timeout=STREAM_TIMEOUT))

    def embeddings(self, input: str | list[str], model: str) -> dict[str, Any]:
        body = {"model": model, "input": input}
        return _json(self._request("POST", "v1/embeddings", json=body, timeout=STREAM_TIMEOUT))

    def openai(self, **kwargs: Any) -> openai.OpenAI:
        """An `openai.OpenAI` client configured for this server."""
        return make_openai(self.endpoint, **kwargs)


def make_openai(endpoint: Endpoint, **kwargs: Any) -> openai.OpenAI:
    import openai

    headers = {k: v for k, v in endpoint.headers().items() if k != "Authorization"}
    headers.update(kwargs.pop("default_headers", {}) or {})
    return openai.OpenAI(
        base_url=endpoint.openai_base_url,
        # the SDK insists on a key; a private server runs with auth off and ignores it
        api_key=endpoint.api_key or "no-key",
        default_headers=headers,
        **kwargs,
    )


def _search_results(data: Any) -> list[dict[str, Any]]:
    """`{"query", "models": [...], "error"}` -> the models; the hub's failure as an exception."""
    if not isinstance(data, dict):
        return list(data)
    models: list[dict[str, Any]] = list(data.get("models") or data.get("data") or [])
    if not models and data.get("error"):
        raise ImpetusError(str(data["error"]), code="hub_unavailable")
    return models


def _json(response: httpx.Response) -> dict[str, Any]:
    if not response.content:
        return {}
    data = response.json()
    return data if isinstance(data, dict) else {"data": data}


# --------------------------------------------------------------------------------------------
# async client (the widgets run it on their own event-loop thread)


class AsyncChatStream:
    """`async for` text deltas; `.result` after the end; `aclose()` stops (the engine cancels)."""

    def __init__(self, response: httpx.Response) -> None:
        self._response = response
        self._acc = _ChatAccumulator()
        self._closed = False
        self.result: ChatResult | None = None

    async def __aiter__(self) -> AsyncIterator[str]:
        decoder = _SSEDecoder()
        try:
            async for line in self._response.aiter_lines():
                ev = decoder.feed(line)
                if ev is None:
                    continue
                payload = _event_payload(*ev)
                if payload is None:
                    break
                text = self._acc.add(payload)
                if text:
                    yield text
        except (httpx.HTTPError, httpx.StreamError) as e:
            # closing the response (Stop) ends the read with an error: that is not a failure
            if not self._closed:
                raise ServerUnavailable(f"stream broken: {e}") from e
        finally:
            await self._response.aclose()
            self.result = self._acc.finish(cancelled=self._closed)

    async def aclose(self) -> None:
        self._closed = True
        await self._response.aclose()

    def mark_cancelled(self) -> None:
        """Called when the task reading the stream is cancelled (the connection then closes)."""
        self._closed = True


class AsyncPullStream:
    def __init__(self, response: httpx.Response) -> None:
        self._response = response
        self.last: dict[str, Any] | None = None

    async def __aiter__(self) -> AsyncIterator[dict[str, Any]]:
        decoder = _SSEDecoder()
        try:
            async for line in self._response.aiter_lines():
                ev = decoder.feed(line)
                if ev is None:
                    continue
                payload = _event_payload(*ev)
                if payload is None:
                    break
                self.last = payload
                yield payload
                if payload.get("status") in PULL_FINAL:
                    break
        finally:
            await self._response.aclose()

    async def aclose(self) -> None:
        await self._response.aclose()


class AsyncImpetusClient:
    """The same surface as ImpetusClient, awaitable. Bound to the loop it is first used on."""

    def __init__(
        self,
        base_url: str | None = None,
        api_key: str | None = None,
        *,
        model: str | None = None,
        endpoint: Endpoint | None = None,
        timeout: httpx.Timeout | float = DEFAULT_TIMEOUT,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        if endpoint is None:
            endpoint = Endpoint(base_url, api_key) if base_url else default_endpoint(model)
        self.endpoint = endpoint
        self.model = model
        self._http = httpx.AsyncClient(
            base_url=endpoint.base_url,
            headers=endpoint.headers(),
            timeout=timeout,
            verify=endpoint.verify,
            transport=transport,
        )

    async def _request(self, method: str, path: str, **kw: Any) -> httpx.Response:
        try:
            response = await self._http.request(method, path, **kw)
        except httpx.TransportError as e:
            raise ServerUnavailable(f"{self.endpoint.base_url} unreachable: {e}") from e
        return _check(response)

    async def _stream(self, method: str, path: str, **kw: Any) -> httpx.Response:
        request = self._http.build_request(method, path, timeout=STREAM_TIMEOUT, **kw)
        try:
            response = await self._http.send(request, stream=True)
        except httpx.TransportError as e:
            raise ServerUnavailable(f"{self.endpoint.base_url} unreachable: {e}") from e
        if response.status_code >= 400:
            await response.aread()
            await response.aclose()
        return _check(response)

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> AsyncImpetusClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def health(self) -> bool:
        try:
            return (await self._http.get("health", timeout=5.0)).status_code == 200
        except httpx.HTTPError:
            return False

    async def ready(self) -> dict[str, Any]:
        return dict((await self._request("GET", "ready")).json())

    async def status(self) -> dict[str, Any]:
        return dict((await self._request("GET", "admin/status")).json())

    async def metrics(self) -> str:
        return (await self._request("GET", "metrics")).text

    async def models(self) -> list[dict[str, Any]]:
        return list((await self._request("GET", "admin/models")).json().get("data", []))

    async def search_models(self, query: str) -> list[dict[str, Any]]:
        r = await self._request("GET", "admin/models/search", params={"q": query})
        return _search_results(r.json())

    async def served_models(self) -> list[dict[str, Any]]:
        return list((await self._request("GET", "v1/models")).json().get("data", []))

    async def pull(self, model_id: str, *, load: bool = False) -> AsyncPullStream:
        body = {"id": model_id, "load": load}
        return AsyncPullStream(await self._stream("POST", "admin/models/pull", json=body))

    async def cancel_pull(self, model_id: str) -> dict[str, Any]:
        return _json(await self._request("POST", "admin/models/pull/cancel", json={"id": model_id}))

    async def load(
        self, model_id: str, *, dtype: str | None = None, keep_alive: float | None = None
    ) -> dict[str, Any]:
        body: dict[str, Any] = {"id": model_id}
        if dtype is not None:
            body["dtype"] = dtype
        if keep_alive is not None:
            body["keep_alive"] = keep_alive
        r = await self._request("POST", "admin/models/load", json=body, timeout=STREAM_TIMEOUT)
        return _json(r)

    async def unload(self, model_id: str) -> dict[str, Any]:
        return _json(await self._request("POST", "admin/models/unload", json={"id": model_id}))

    async def delete(self, model_id: str) -> dict[str, Any]:
        return _json(await self._request("DELETE", f"admin/models/{quote(model_id, safe='')}"))

    def _model(self, model: str | None) -> str:
        return model or self.model or DEFAULT_MODEL

    async def chat_stream(
        self, messages: list[dict[str, Any]], model: str | None = None, **params: Any
    ) -> AsyncChatStream:
        body = chat_body(messages, self._model(model), stream=True, **params)
        return AsyncChatStream(await self._stream("POST", "v1/chat/completions", json=body))

    async def chat(
        self, messages: list[dict[str, Any]], model: str | None = None, **params: Any
    ) -> dict[str, Any]:
        body = chat_body(messages, self._model(model), stream=False, **params)
        r = await self._request("POST", "v1/chat/completions", json=body, timeout=STREAM_TIMEOUT)
        return _json(r)

    async def completions(
        self, prompt: str | list[int], model: str | None = None, **params: Any
    ) -> dict[str, Any]:
        body = {"model": self._model(model), "prompt": prompt, **params}
        r = await self._request("POST", "v1/completions", json=body, timeout=STREAM_TIMEOUT)
        return _json(r)

    async def embeddings(self, input: str | list[str], model: str) -> dict[str, Any]:
        body = {"model": model, "input": input}
        r = await self._request("POST", "v1/embeddings", json=body, timeout=STREAM_TIMEOUT)
        return _json(r)

    def openai(self, **kwargs: Any) -> openai.OpenAI:
        return make_openai(self.endpoint, **kwargs)


# --------------------------------------------------------------------------------------------
# metrics


def parse_metrics(text: str) -> dict[str, float]:
    """Prometheus text -> {sample name: value summed over label sets} (e.g. `..._count`)."""
    from prometheus_client.parser import text_string_to_metric_families

    out: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name.endswith("_bucket"):
                continue
            out[sample.name] = out.get(sample.name, 0.0) + float(sample.value)
    return out


# --------------------------------------------------------------------------------------------
# `python -m impetus.client --exit-with PID -- CMD...`: the private server's supervisor


def _supervise(parent: int, cmd: list[str], poll: float = 1.0) -> int:
    """Run `cmd`; stop it when `parent` goes away. Signals to us are passed on to it."""
    child = subprocess.Popen(cmd)

    def forward(signum: int, _frame: object) -> None:
        with contextlib.suppress(ProcessLookupError):
            child.send_signal(signum)

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, forward)
    while True:
        try:
            return child.wait(poll)
        except subprocess.TimeoutExpired:
            pass
        if os.getppid() != parent:  # re-parented: the process that started us is gone
            child.terminate()
            try:
                return child.wait(15.0)
            except subprocess.TimeoutExpired:
                child.kill()
                return child.wait()


def _main(argv: list[str]) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="python -m impetus.client")
    parser.add_argument("--exit-with", type=int, required=True, metavar="PID")
    parser.add_argument("cmd", nargs=argparse.REMAINDER)
    args = parser.parse_args(argv)
    cmd = args.cmd[1:] if args.cmd[:1] == ["--"] else args.cmd
    if not cmd:
        parser.error("no command")
    return _supervise(args.exit_with, cmd)


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
