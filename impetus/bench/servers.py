"""Endpoints for a benchmark report: impetus (found or started by impetus.client), an
`mlx_lm.server` started here on the same model folder, or any URL.

Spec strings, as the report notebook's `endpoints` parameter takes them:
  "impetus"          impetus.client.find_endpoint: $IMPETUS_URL, this kernel's Jupyter server,
                     or a private `impetus serve` on a free loopback port
  "mlx_lm"           `mlx_lm.server` on a free loopback port, serving the model's MLX folder
  "NAME=URL"         any OpenAI-compatible base URL (llama.cpp, vLLM, Ollama, ...)
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

from impetus.client import PrivateServer, ServerUnavailable, find_endpoint


class MlxLmServer(PrivateServer):
    """`mlx_lm.server` as a supervised child on loopback, like impetus' own private server.

    It runs offline (HF_HUB_OFFLINE=1): asked for a model it does not have, it answers an error
    at once instead of trying to download it in the middle of a benchmark.
    """

    def __init__(
        self,
        model_path: str | Path,
        *,
        port: int | None = None,
        extra_args: Iterable[str] = (),
        env: Mapping[str, str] | None = None,
    ) -> None:
        env = dict(os.environ if env is None else env)
        env.setdefault("HF_HUB_OFFLINE", "1")
        super().__init__(str(model_path), port=port, extra_args=extra_args, env=env)

    def command(self) -> list[str]:
        return [
            sys.executable, "-m", "mlx_lm", "server",
            "--model", str(self.model), "--host", "127.0.0.1", "--port", str(self.port),
            *self.extra_args,
        ]  # fmt: skip

    def start(self, timeout: float = 120.0) -> None:
        try:
            super().start(timeout)
        except ServerUnavailable as exc:
            raise ServerUnavailable(exc.message.replace("impetus serve", "mlx_lm.server")) from exc

    @property
    def openai_base_url(self) -> str:
        return self.base_url + "v1"


def model_folder(model: str) -> Path:
    """The MLX folder impetus serves for `model` (a GGUF source is converted once, cached)."""
    from impetus.config import Settings
    from impetus.models.registry import resolve

    return Path(resolve(model, Settings()).path)


@dataclass
class BenchEndpoint:
    """A resolved endpoint: what `ServeConfig` needs, and the server to stop afterwards."""

    name: str
    base_url: str
    model: str  # the id this endpoint knows the model by
    api_key: str | None = None
    headers: dict[str, str] = field(default_factory=dict)
    server: PrivateServer | None = None

    def config(self) -> dict[str, Any]:
        """Keyword arguments for ServeConfig / MultiTurnConfig."""
        return {
            "base_url": self.base_url,
            "model": self.model,
            "label": self.name,
            "api_key": self.api_key,
            "headers": dict(self.headers),
        }


def open_endpoint(spec: str, model: str, model_path: str | Path | None = None) -> BenchEndpoint:
    """Resolve one spec string (see the module docstring); starts a server when it must."""
    name, sep, url = spec.partition("=")
    if sep:
        return BenchEndpoint(name=name.strip(), base_url=url.strip(), model=model)
    if spec == "impetus":
        found = find_endpoint(model)
        headers = found.headers()
        headers.pop("Authorization", None)  # sent from api_key
        return BenchEndpoint(
            name="impetus",
            base_url=found.openai_base_url,
            model=model,
            api_key=found.api_key,
            headers=headers,  # Jupyter's XSRF double-submit pair, for token-less servers
        )
    if spec == "mlx_lm":
        # mlx_lm.server lists its --model by resolved path and treats a request for that id as
        # its own model; any other id would make it try to load that id instead.
        folder = str(Path(model_path or model_folder(model)).resolve())
        server = MlxLmServer(folder)
        server.start()
        return BenchEndpoint(
            name="mlx_lm", base_url=server.openai_base_url, model=folder, server=server
        )
    raise ValueError(f"unknown endpoint {spec!r}: use 'impetus', 'mlx_lm' or 'NAME=URL'")


class Endpoints(contextlib.AbstractContextManager["Endpoints"]):
    """Several endpoints opened together; the servers started for them stop on exit."""

    def __init__(
        self, specs: Iterable[str], model: str, model_path: str | Path | None = None
    ) -> None:
        self.items: list[BenchEndpoint] = []
        try:
            for spec in specs:
                self.items.append(open_endpoint(spec, model, model_path))
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        for item in self.items:
            if item.server is not None:
                item.server.stop()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __iter__(self) -> Any:
        return iter(self.items)
