from __future__ import annotations

# Like the engine process, the test process loads an optimized BLAS before anything imports MLX.
from impetus.engine.blas import load_optimized_blas

load_optimized_blas()

import os  # noqa: E402
from pathlib import Path  # noqa: E402

import pytest  # noqa: E402

from tests.tiny_model import build_tiny_llama  # noqa: E402

# Tests never touch the user's model cache or the network beyond what a test serves itself.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")


@pytest.fixture(scope="session")
def impetus_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A private IMPETUS_HOME shared by the session (the default model converts once in it)."""
    home = Path(os.environ.get("IMPETUS_TEST_HOME") or tmp_path_factory.mktemp("impetus-home"))
    os.environ["IMPETUS_HOME"] = str(home)
    return home


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random Llama MLX folder (a folder path is a valid model id for the engine)."""
    return build_tiny_llama(tmp_path_factory.mktemp("models") / "tiny-llama")


@pytest.fixture(scope="session")
def think_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random reasoning model: <think> / </think> tokens, a template that opens the think
    block (mlx-lm recognises the markers; impetus splits reasoning from content on them)."""
    return build_tiny_llama(tmp_path_factory.mktemp("models") / "tiny-think", thinking=True)
