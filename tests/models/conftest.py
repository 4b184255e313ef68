"""Fixtures of the model-package tests: private settings, the embedded GGUF, a fake hub."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from impetus.config import Settings
from impetus.models.catalogue import SMOLLM2
from tests.fake_hub import FakeHub, Repo
from tests.tiny_model import build_tiny_llama


@pytest.fixture()
def settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Settings:
    """A private model directory and Hugging Face cache."""
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    return Settings(home=tmp_path / "home", dtype="auto")


@pytest.fixture(scope="session")
def smollm_gguf() -> Path:
    path = SMOLLM2.locate()
    if path is None:
        pytest.skip(f"{SMOLLM2.requirement} is not installed (impetus models pull smollm2-135m)")
    return path


@pytest.fixture(scope="session")
def smollm_mlx(smollm_gguf: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from impetus.models.gguf import convert_gguf

    assert SMOLLM2.sha256 is not None
    return convert_gguf(
        smollm_gguf,
        tmp_path_factory.mktemp("smollm") / "smollm2-135m",
        expected_sha256=SMOLLM2.sha256,
    )


@pytest.fixture(scope="session")
def tiny_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random Llama MLX folder, ~1.4 MB of weights: several download chunks."""
    return build_tiny_llama(tmp_path_factory.mktemp("tiny") / "tiny-llama", hidden=128)


@pytest.fixture()
def hub(monkeypatch: pytest.MonkeyPatch, tiny_folder: Path) -> Iterator[FakeHub]:
    """A fake hub serving `impetus-test/tiny-llama`, with HF_ENDPOINT pointing at it."""
    import huggingface_hub.constants

    server = FakeHub()
    server.add(Repo.from_folder("impetus-test/tiny-llama", tiny_folder))
    server.start()
    monkeypatch.setenv("HF_ENDPOINT", server.url)
    # tests/conftest.py sets HF_HUB_OFFLINE=1 for the suite; this hub is on loopback
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    try:
        yield server
    finally:
        server.stop()
