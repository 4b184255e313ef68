"""`ImpetusClient` (blocking) and `AsyncImpetusClient`: one set of endpoints, two transports.

Every endpoint is written once on `_Api` (see `calls`); the two clients differ only in how a
`Call` is sent. Every call has a timeout: a notebook must never hang on a server that went away.

Answers of the admin and ops routes are decoded into the types the server encodes them from
(`impetus.protocol` for the engine's status and model states, `impetus.models.types` for
registry entries, `impetus.api.schemas` for the rest), so a field renamed there is renamed for
every client; fields a newer server adds are ignored. OpenAI's `/v1` answers stay OpenAI's JSON
(`openai()` gives the official SDK's typed objects).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from types import TracebackType
from typing import TYPE_CHECKING, Any, ClassVar, Generic, Literal, TypeVar, cast
from urllib.parse import quote

import httpx
import msgspec
from pydantic import BaseModel

from impetus.api.schemas import (
    AdminStatus,
    ModelCard,
    ModelList,
    ModelRegistry,
    PullCancelled,
    Ready,
    Unloaded,
)
from impetus.client.calls import Call, R, api_call, streaming
from impetus.client.chat import chat_body, session_headers
from impetus.client.discovery import Endpoint, default_endpoint
from impetus.client.errors import ImpetusError
from impetus.client.server import DEFAULT_MODEL
from impetus.client.streams import AsyncChatStream, AsyncPullStream, ChatStream, PullStream
from impetus.models.types import DeleteResult, HubModel, RegistryEntry, SearchResult
from impetus.protocol import ModelState

if TYPE_CHECKING:  # openai is an optional dependency: imported only by `openai()`
    import openai

# Short calls (status, model list) vs. streams, where `read` is the longest silence between two
# events we accept (a long prompt's prefill happens before the first token).
DEFAULT_TIMEOUT = httpx.Timeout(30.0, connect=5.0)
STREAM_TIMEOUT = httpx.Timeout(30.0, connect=5.0, read=300.0)

T = TypeVar("T", httpx.BaseTransport, httpx.AsyncBaseTransport)
H = TypeVar("H", httpx.Client, httpx.AsyncClient)
D = TypeVar("D")


def _object(response: httpx.Response) -> dict[str, Any]:
    if not response.content:
        return {}
    data = response.json()
    return data if isinstance(data, dict) else {"data": data}


def _decoded(kind: type[D]) -> Callable[[httpx.Response], D]:
    """A parser of a JSON answer into `kind` (a msgspec Struct or a pydantic model), checked as
    it is read: a server that answers something else raises ImpetusError, not a KeyError later."""

    def parse(response: httpx.Response) -> D:
        try:
            if issubclass(kind, BaseModel):
                return cast(D, kind.model_validate_json(response.content))
            return msgspec.json.decode(response.content, type=kind)
        except (ValueError, msgspec.ValidationError) as e:  # pydantic's is a ValueError
            raise ImpetusError(
                f"{response.request.method} {response.request.url.path}: the answer is not a"
                f" {kind.__name__}: {str(e)[:300]}",
                status=response.status_code,
            ) from e

    return parse


_status = _decoded(AdminStatus)
_ready = _decoded(Ready)
_model_state = _decoded(ModelState)
_unloaded = _decoded(Unloaded)
_deleted = _decoded(DeleteResult)
_cancelled = _decoded(PullCancelled)
_registry = _decoded(ModelRegistry)
_served = _decoded(ModelList)
_search = _decoded(SearchResult)


def _registry_entries(response: httpx.Response) -> list[RegistryEntry]:
    return _registry(response).data


def _model_cards(response: httpx.Response) -> list[ModelCard]:
    return _served(response).data


def _text(response: httpx.Response) -> str:
    return response.text


def _ok(response: httpx.Response) -> bool:
    return response.status_code == 200


def _no() -> bool:
    return False


def _search_results(response: httpx.Response) -> list[HubModel]:
    """The hub's models; its failure (no network, ...) as an exception."""
    result = _search(response)
    if not result.models and result.error:
        raise ImpetusError(result.error, code="hub_unavailable")
    return result.models


class _Api(Generic[T, H]):
    """The endpoints, shared by both clients; `T` is the kind of httpx transport they accept,
    `H` the httpx client they send with."""

    is_async: ClassVar[bool]
    _http_class: Callable[..., H]

    def __init__(
        self,
        base_url: str | None = None,
        api_key: str | None = None,
        *,
        model: str | None = None,
        endpoint: Endpoint | None = None,
        timeout: httpx.Timeout | float = DEFAULT_TIMEOUT,
        transport: T | None = None,
    ) -> None:
        if endpoint is None:
            endpoint = Endpoint(base_url, api_key) if base_url else default_endpoint(model)
        self.endpoint = endpoint
        self.model = model
        self._http: H = self._http_class(
            base_url=endpoint.base_url,
            headers=endpoint.headers(),
            timeout=timeout,
            verify=endpoint.verify,
            transport=transport,
        )

    def _model(self, model: str | None) -> str:
        return model or self.model or DEFAULT_MODEL

    def openai(self, **kwargs: Any) -> openai.OpenAI:
        """An `openai.OpenAI` client configured for this server (same key, headers, TLS check)."""
        return make_openai(self.endpoint, **kwargs)

    # -- ops
    @api_call
    def health(self) -> Call[bool]:
        """True when the server answers (whatever the engine's state)."""
        return Call("GET", "health", _ok, timeout=5.0, unreachable=_no)

    @api_call
    def ready(self) -> Call[Ready]:
        """`/ready`'s body; raises ImpetusError (503) while the engine is not ready."""
        return Call("GET", "ready", _ready)

    @api_call
    def status(self) -> Call[AdminStatus]:
        """`admin/status`: the engine (state, backend, memory, models, stats, accelerator) and
        the api layer (endpoint, requests in flight, draining)."""
        return Call("GET", "admin/status", _status)

    @api_call
    def metrics(self) -> Call[str]:
        """Prometheus text; see `parse_metrics` for sums by metric name."""
        return Call("GET", "metrics", _text)

    # -- models
    @api_call
    def models(self) -> Call[list[RegistryEntry]]:
        """The registry: local, cached and built-in models (`admin/models`)."""
        return Call("GET", "admin/models", _registry_entries)

    @api_call
    def search_models(self, query: str) -> Call[list[HubModel]]:
        """Hugging Face hub models matching `query` (raises when the hub cannot be searched)."""
        return Call("GET", "admin/models/search", _search_results, params={"q": query})

    @api_call
    def served_models(self) -> Call[list[ModelCard]]:
        """OpenAI's `v1/models`, with impetus's fields (loaded, kind, context_length)."""
        return Call("GET", "v1/models", _model_cards)

    @streaming(PullStream, AsyncPullStream)
    def pull(self, model_id: str, *, load: bool = False) -> Call[httpx.Response]:
        """Download (and convert) a model; iterate the stream for progress events."""
        body = {"id": model_id, "load": load}
        return Call(
            "POST", "admin/models/pull", _raw, json=body, timeout=STREAM_TIMEOUT, stream=True
        )

    @api_call
    def cancel_pull(self, model_id: str) -> Call[PullCancelled]:
        return Call("POST", "admin/models/pull/cancel", _cancelled, json={"id": model_id})

    @api_call
    def load(
        self, model_id: str, *, dtype: str | None = None, keep_alive: float | None = None
    ) -> Call[ModelState]:
        body: dict[str, Any] = {"id": model_id}
        if dtype is not None:
            body["dtype"] = dtype
        if keep_alive is not None:
            body["keep_alive"] = keep_alive
        # loading converts / reads weights: allow minutes, not seconds
        return Call("POST", "admin/models/load", _model_state, json=body, timeout=STREAM_TIMEOUT)

    @api_call
    def unload(self, model_id: str) -> Call[Unloaded]:
        return Call("POST", "admin/models/unload", _unloaded, json={"id": model_id})

    @api_call
    def delete(self, model_id: str) -> Call[DeleteResult]:
        return Call("DELETE", f"admin/models/{quote(model_id, safe='')}", _deleted)

    # -- inference
    @streaming(ChatStream, AsyncChatStream)
    def chat_stream(
        self,
        messages: list[dict[str, Any]],
        model: str | None = None,
        *,
        session: str | None = None,
        **params: Any,
    ) -> Call[httpx.Response]:
        """Iterate the stream for text deltas; its `.result` has usage and timings. `session`:
        the conversation's id, sent as X-Session-Id so that a proxy in front of several
        replicas keeps its turns where its prompt cache is."""
        return self._chat_call(_raw, messages, model, session, params, stream=True)

    @api_call
    def chat(
        self,
        messages: list[dict[str, Any]],
        model: str | None = None,
        *,
        session: str | None = None,
        **params: Any,
    ) -> Call[dict[str, Any]]:
        """One whole chat completion; `session` as for `chat_stream`."""
        return self._chat_call(_object, messages, model, session, params, stream=False)

    def _chat_call(
        self,
        parse: Callable[[httpx.Response], R],
        messages: list[dict[str, Any]],
        model: str | None,
        session: str | None,
        params: dict[str, Any],
        *,
        stream: bool,
    ) -> Call[R]:
        """The chat completion request of `chat_stream` (stream) and `chat` (whole)."""
        body = chat_body(messages, self._model(model), stream=stream, **params)
        return Call(
            "POST",
            "v1/chat/completions",
            parse,
            json=body,
            headers=session_headers(session),
            timeout=STREAM_TIMEOUT,
            stream=stream,
        )

    @api_call
    def completions(
        self, prompt: str | list[int], model: str | None = None, **params: Any
    ) -> Call[dict[str, Any]]:
        body = {"model": self._model(model), "prompt": prompt, **params}
        return Call("POST", "v1/completions", _object, json=body, timeout=STREAM_TIMEOUT)

    @api_call
    def embeddings(self, input: str | list[str], model: str) -> Call[dict[str, Any]]:
        body = {"model": model, "input": input}
        return Call("POST", "v1/embeddings", _object, json=body, timeout=STREAM_TIMEOUT)


def _raw(response: httpx.Response) -> httpx.Response:
    return response


class ImpetusClient(_Api[httpx.BaseTransport, httpx.Client]):
    """Blocking client over the api. `ImpetusClient()` finds (or starts) the server itself."""

    is_async: ClassVar[Literal[False]] = False
    _http_class = httpx.Client

    def _send(self, call: Call[R]) -> R:
        try:
            response = self._http.send(call.request(self._http), stream=call.stream)
            if response.is_error:
                response.read()  # a stream's error body, for the message (read() closes it)
        except httpx.TransportError as e:
            return call.failed(e, self.endpoint)
        return call.result(response)

    def wait_ready(self, timeout: float = 120.0, poll: float = 0.25) -> Ready:
        """Block until the engine is up and a model is loaded (or raise after `timeout`)."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                return self.ready()
            except ImpetusError:
                if time.monotonic() > deadline:
                    raise
            time.sleep(poll)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> ImpetusClient:
        return self

    def __exit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


class AsyncImpetusClient(_Api[httpx.AsyncBaseTransport, httpx.AsyncClient]):
    """The same surface as ImpetusClient, awaitable. Bound to the loop it is first used on."""

    is_async: ClassVar[Literal[True]] = True
    _http_class = httpx.AsyncClient

    async def _send(self, call: Call[R]) -> R:
        try:
            response = await self._http.send(call.request(self._http), stream=call.stream)
            if response.is_error:
                await response.aread()
        except httpx.TransportError as e:
            return call.failed(e, self.endpoint)
        return call.result(response)

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> AsyncImpetusClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()


def make_openai(endpoint: Endpoint, **kwargs: Any) -> openai.OpenAI:
    """An `openai.OpenAI` for `endpoint`: its key, its XSRF pair, and its TLS `verify` setting
    (a Jupyter server with a self-signed certificate works as it does for ImpetusClient)."""
    import openai

    headers = {k: v for k, v in endpoint.headers().items() if k != "Authorization"}
    headers.update(kwargs.pop("default_headers", {}) or {})
    if "http_client" not in kwargs:
        kwargs["http_client"] = openai.DefaultHttpxClient(verify=endpoint.verify)
    return openai.OpenAI(
        base_url=endpoint.openai_base_url,
        # the SDK insists on a key; a private server runs with auth off and ignores it
        api_key=endpoint.api_key or "no-key",
        default_headers=headers,
        **kwargs,
    )
