"""A real Jupyter server (pytest-jupyter) with the impetus extension enabled through its config.

The pytest-jupyter fixtures (and its runner for `async def` tests) are imported here, so they
apply to this folder only; pytest-asyncio stays in strict mode for the rest of the suite.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from pytest_jupyter.jupyter_server import *  # noqa: F403


@pytest.fixture
def impetus_home_dir(tmp_path: Path) -> Path:
    return tmp_path / "impetus-home"


@pytest.fixture
def jp_server_config(tiny_model_dir: Path, impetus_home_dir: Path) -> dict[str, Any]:
    return {
        "ServerApp": {"jpserver_extensions": {"impetus": True}},
        "ImpetusExtension": {
            "models": [str(tiny_model_dir)],
            "home": str(impetus_home_dir),
            "max_tokens_default": 32,
        },
    }
