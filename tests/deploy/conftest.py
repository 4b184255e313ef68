"""Deployment tests: the real `impetus serve` (fixtures shared with tests/api) behind real nginx."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.api.conftest import server_factory, slow_model_dir  # noqa: F401 - fixtures
from tests.deploy.certs import self_signed


@pytest.fixture(scope="session")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return self_signed(tmp_path_factory.mktemp("tls"))
