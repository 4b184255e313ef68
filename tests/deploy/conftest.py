"""Deployment tests: the real `impetus serve` (fixtures shared with tests/api) behind real nginx."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.api.conftest import (  # noqa: F401 - fixtures
    server_factory,
    slow_model_dir,
    stop_module_servers,
)
from tests.deploy.certs import self_signed


@pytest.fixture(scope="session")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return self_signed(tmp_path_factory.mktemp("tls"))


PACED = "paced-llama"


@pytest.fixture(scope="session")
def paced_models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A models folder (for --model-dir) holding PACED: a random Llama of 64 thin layers, tiny on
    disk but tens of milliseconds per token on a CPU (per-layer overheads), so that tokens leave
    the server at a pace a client can see; its short id keeps a 16-token SSE response under the
    4 KB nginx buffers hold, which is what a buffering proxy would deliver in one burst."""
    from tests.tiny_model import build_tiny_llama

    models = tmp_path_factory.mktemp("paced-models")
    build_tiny_llama(models / PACED, hidden=64, layers=64)
    return models
