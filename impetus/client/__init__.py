"""HTTP client of the impetus api, used by the widgets, the bench runner and scripts.

One module a job:
* `discovery`: `Endpoint` and how a process finds the server (explicit URL, `IMPETUS_URL`, the
  Jupyter server of this kernel, else a private `impetus serve`);
* `server`: `PrivateServer`, that private `impetus serve` (and `supervisor`, which stops it
  when the process that started it dies: `python -m impetus.client --exit-with PID -- CMD`);
* `calls`: the one request builder both clients share; `clients`: `ImpetusClient` (blocking)
  and `AsyncImpetusClient` over it, and `openai()` for the official SDK;
* `sse`: the server-sent-events parser (also used by the benchmark's timed requests);
  `streams`: chat and pull streams over it; `chat`: `ChatResult`, what a streamed answer was;
* `errors`: `ImpetusError` (the server's error, in OpenAI's shape), `ServerUnavailable`;
* `metrics`: `parse_metrics` for the Prometheus text.

Streams are real SSE read line by line; closing a stream closes the connection, which is how
the api layer learns to cancel the generation in the engine.
"""

from impetus.client.chat import ChatResult
from impetus.client.clients import AsyncImpetusClient, ImpetusClient, make_openai
from impetus.client.discovery import Endpoint, default_endpoint, find_endpoint
from impetus.client.errors import ImpetusError, ServerUnavailable
from impetus.client.metrics import parse_metrics
from impetus.client.server import DEFAULT_MODEL, PrivateServer
from impetus.client.streams import AsyncChatStream, AsyncPullStream, ChatStream, PullStream

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
    "make_openai",
    "parse_metrics",
]
