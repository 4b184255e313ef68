"""A real Jupyter server (pytest-jupyter) with the impetus extension: the fixtures apply to this
folder only (pytest-asyncio stays strict elsewhere), as in tests/jupyter."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from pytest_jupyter.jupyter_server import *  # noqa: F403

from tests.api.conftest import slow_model_dir  # noqa: F401, F811 - a fixture


@pytest.fixture
def jp_server_config(slow_model_dir: Path, tmp_path: Path) -> dict[str, Any]:  # noqa: F811
    return {
        "ServerApp": {"jpserver_extensions": {"impetus": True}},
        "ImpetusExtension": {
            "models": [str(slow_model_dir)],
            "home": str(tmp_path / "impetus-home"),
            "max_tokens_default": 32,
        },
    }
