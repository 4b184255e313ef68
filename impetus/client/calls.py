"""One request builder for the blocking and the async client (httpx's own BaseClient pattern).

Each endpoint is a method written once, on the shared base, that builds a `Call`: the request
(method, path, body, timeout) and how to read the answer. The decorators below turn it into a
method of both clients: `ImpetusClient` sends the call and returns the result, and
`AsyncImpetusClient` returns a coroutine of it. Only the sending differs (`_send`).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Coroutine, Mapping
from dataclasses import dataclass
from typing import (
    TYPE_CHECKING,
    Any,
    ClassVar,
    Concatenate,
    Generic,
    Literal,
    ParamSpec,
    Protocol,
    TypeVar,
    overload,
)

import httpx

from impetus.client.errors import ImpetusError, ServerUnavailable

if TYPE_CHECKING:
    from impetus.client.discovery import Endpoint

R = TypeVar("R")
T = TypeVar("T")
S = TypeVar("S")
A = TypeVar("A")
P = ParamSpec("P")


class Blocking(Protocol):
    """A client whose calls return their results (`ImpetusClient`)."""

    is_async: ClassVar[Literal[False]]


class Awaitable(Protocol):
    """A client whose calls return coroutines (`AsyncImpetusClient`)."""

    is_async: ClassVar[Literal[True]]


@dataclass(frozen=True)
class Call(Generic[R]):
    """One request to the api and how its answer is read."""

    method: str
    path: str
    parse: Callable[[httpx.Response], R]
    json: Any = None
    params: Mapping[str, str] | None = None
    headers: Mapping[str, str] | None = None  # beside the client's own (a conversation's id)
    timeout: httpx.Timeout | float | None = None  # None: the client's default
    stream: bool = False  # send, and hand over the response before its body is read
    # a probe (`health`): any status is an answer, and an unreachable server answers this
    unreachable: Callable[[], R] | None = None

    def result(self, response: httpx.Response) -> R:
        """The answer, from a response whose body has been read if it is an error."""
        if response.is_error and self.unreachable is None:
            raise ImpetusError.from_response(response.status_code, response.content)
        return self.parse(response)

    def failed(self, e: httpx.TransportError, endpoint: Endpoint) -> R:
        """What a call answers when the server cannot be reached (a probe's answer, or raise)."""
        if self.unreachable is None:
            raise ServerUnavailable(f"{endpoint.base_url} unreachable: {e}") from e
        return self.unreachable()

    def request(self, http: httpx.Client | httpx.AsyncClient) -> httpx.Request:
        timeout = httpx.USE_CLIENT_DEFAULT if self.timeout is None else self.timeout
        return http.build_request(
            self.method,
            self.path,
            json=self.json,
            params=self.params,
            headers=self.headers,
            timeout=timeout,
        )


class endpoint(Generic[P, S, A]):
    """A method of both clients: `build` makes the Call; the blocking client returns `sync` of its
    result, the async client a coroutine of `asynchronous` of it."""

    def __init__(
        self,
        build: Callable[Concatenate[Any, P], Call[T]],
        sync: Callable[[T], S],
        asynchronous: Callable[[T], A],
    ) -> None:
        self.build, self.sync, self.asynchronous = build, sync, asynchronous
        self.__doc__ = build.__doc__

    @overload
    def __get__(self, obj: None, owner: type | None = None) -> endpoint[P, S, A]: ...
    @overload
    def __get__(self, obj: Blocking, owner: type | None = None) -> Callable[P, S]: ...
    @overload
    def __get__(
        self, obj: Awaitable, owner: type | None = None
    ) -> Callable[P, Coroutine[Any, Any, A]]: ...
    def __get__(self, obj: Any, owner: type | None = None) -> Any:
        if obj is None:
            return self
        build, sync, asynchronous = self.build, self.sync, self.asynchronous

        @functools.wraps(build)
        def bound(*args: Any, **kwargs: Any) -> Any:
            call = build(obj, *args, **kwargs)
            if not obj.is_async:
                return sync(obj._send(call))

            async def sent() -> A:
                return asynchronous(await obj._send(call))

            return sent()

        return bound


def _same(value: T) -> T:
    return value


def api_call(build: Callable[Concatenate[Any, P], Call[R]]) -> endpoint[P, R, R]:
    """An endpoint: `ImpetusClient().name(...)` returns R, `AsyncImpetusClient().name(...)` a
    coroutine of R."""
    return endpoint(build, _same, _same)


def streaming(
    sync: Callable[[httpx.Response], S], asynchronous: Callable[[httpx.Response], A]
) -> Callable[[Callable[Concatenate[Any, P], Call[httpx.Response]]], endpoint[P, S, A]]:
    """`@streaming(ChatStream, AsyncChatStream)` over a method that builds a streaming Call: the
    response, still open, is wrapped in `sync` or `asynchronous` after the client's kind."""

    def wrap(build: Callable[Concatenate[Any, P], Call[httpx.Response]]) -> endpoint[P, S, A]:
        return endpoint(build, sync, asynchronous)

    return wrap
