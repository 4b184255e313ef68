"""A real `impetus serve` on loopback serving the tiny model, shared by the widget tests."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from impetus.client import Endpoint, ImpetusClient, PrivateServer


@pytest.fixture(scope="session")
def tiny_model(tiny_model_dir: Path) -> str:
    return str(tiny_model_dir)


@pytest.fixture(scope="session")
def server(impetus_home: Path, tiny_model: str) -> Iterator[PrivateServer]:
    srv = PrivateServer(tiny_model)
    srv.start(timeout=180)
    try:
        yield srv
    finally:
        srv.stop()


@pytest.fixture(scope="session")
def endpoint(server: PrivateServer) -> Endpoint:
    return Endpoint(server.base_url, source="private")


@pytest.fixture()
def client(endpoint: Endpoint, tiny_model: str) -> Iterator[ImpetusClient]:
    with ImpetusClient(endpoint=endpoint, model=tiny_model) as c:
        c.wait_ready(120)
        yield c
