from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from impetus.bench.servers import MlxLmServer
from impetus.bench.store import ResultStore
from impetus.client import PrivateServer
from tests.bench.proxy import FlakyProxy


@pytest.fixture(scope="session")
def impetus_server(impetus_home: Path, tiny_model_dir: Path) -> Iterator[PrivateServer]:
    """A real `impetus serve` (its own engine process) serving the tiny model."""
    server = PrivateServer(str(tiny_model_dir))
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def impetus_url(impetus_server: PrivateServer) -> str:
    return impetus_server.base_url + "v1"


@pytest.fixture(scope="session")
def model_id(tiny_model_dir: Path) -> str:
    """The id impetus serves the tiny model under (its folder, given to --model)."""
    return str(tiny_model_dir)


@pytest.fixture(scope="session")
def mlx_server(tiny_model_dir: Path) -> Iterator[MlxLmServer]:
    """mlx_lm.server on the same folder: the bench must work against other servers too."""
    server = MlxLmServer(tiny_model_dir.resolve())
    server.start()
    yield server
    server.stop()


@pytest.fixture
def proxy() -> Iterator[Callable[..., FlakyProxy]]:
    started: list[FlakyProxy] = []

    def make(upstream: str, **kwargs: object) -> FlakyProxy:
        p = FlakyProxy(upstream, **kwargs).start()  # type: ignore[arg-type]
        started.append(p)
        return p

    yield make
    for p in started:
        p.stop()


@pytest.fixture
def store(tmp_path: Path) -> ResultStore:
    return ResultStore(tmp_path / "bench.sqlite")
