"""The embedded embedding model `minilm` against the PyTorch reference (sentence-transformers).

The reference vectors were produced once by `python -m tests.engine.make_minilm_reference` and
are kept with their provenance in tests/engine/data/minilm_reference.npz, so the tests need
neither torch nor sentence-transformers."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import mlx.core as mx
import numpy as np
import pytest

from impetus.engine.embeddings import Embedder, embedded_model_path, is_embedding_model
from tests.engine.embedding_texts import LONG, TEXTS

REFERENCE = Path(__file__).parent / "data" / "minilm_reference.npz"


@pytest.fixture(scope="module")
def model_path() -> Path:
    return embedded_model_path()


@pytest.fixture(scope="module")
def embedder(model_path: Path) -> Embedder:
    return Embedder.load(model_path)


@pytest.fixture(scope="module")
def reference(model_path: Path) -> dict[str, Any]:
    with np.load(REFERENCE) as data:
        ref = {k: data[k] for k in data.files}
    provenance = json.loads(str(ref["provenance"]))
    # The reference is for these texts and these weights: a change to either needs a new one.
    assert json.loads(str(ref["texts"])) == TEXTS, "texts changed: rerun make_minilm_reference"
    weights = hashlib.sha256((model_path / "model.safetensors").read_bytes()).hexdigest()
    assert weights == provenance["weights_sha256"], provenance
    ref["provenance"] = provenance
    return ref


def test_model_is_found_and_routed(model_path: Path, tiny_model_dir: Path, tmp_path: Path) -> None:
    assert (model_path / "model.safetensors").is_file()
    assert is_embedding_model(model_path)
    assert not is_embedding_model(tiny_model_dir)  # a Llama is a chat model
    assert not is_embedding_model(tmp_path / "missing")
    (tmp_path / "config.json").write_text("{not json")
    assert not is_embedding_model(tmp_path)


def test_attributes(embedder: Embedder) -> None:
    assert embedder.kind == "embedding"
    assert embedder.dim == 384
    assert embedder.max_length == 256  # sentence_bert_config.json, not tokenizer.json's 128
    # 22.7M float32 parameters without the unused pooler.
    assert 85e6 < embedder.memory_bytes < 95e6


def test_matches_sentence_transformers(embedder: Embedder, reference: dict[str, Any]) -> None:
    vectors, tokens = embedder.embed(TEXTS)
    assert vectors.shape == (len(TEXTS), 384)
    assert vectors.dtype == mx.float32
    ours = np.array(vectors)
    ref = reference["vectors"]
    assert ref.shape == ours.shape and reference["provenance"]["max_seq_length"] == 256
    diff = np.abs(ours - ref).max(axis=1)
    assert diff.max() < 1e-4, {TEXTS[i][:40]: float(diff[i]) for i in np.argsort(-diff)[:5]}
    np.testing.assert_allclose(np.linalg.norm(ours, axis=1), 1.0, atol=1e-5)

    # Token count: what the reference fed the model, [CLS]/[SEP] included, after truncation.
    assert tokens == int(reference["tokens"].sum())
    assert embedder.count_tokens(["", LONG]) == [2, 256]
    assert embedder.count_tokens(TEXTS) == [int(n) for n in reference["tokens"]]


def test_truncation_keeps_the_first_max_length_tokens(embedder: Embedder) -> None:
    (a, b), _ = embedder.embed([LONG, LONG + " and a different ending that is cut off"])
    assert float(mx.abs(a - b).max()) == 0.0
    (c,), _ = embedder.embed([LONG[:200]])
    assert float(mx.abs(a - c).max()) > 1e-3


def test_batching_restores_order(model_path: Path, embedder: Embedder) -> None:
    small_batches = Embedder.load(model_path, batch_size=3)
    texts = TEXTS[:12]
    batched, n_batched = small_batches.embed(texts)
    together, n_together = embedder.embed(texts)
    alone = mx.concatenate([embedder.embed([t])[0] for t in texts])
    assert n_batched == n_together
    assert float(mx.abs(batched - alone).max()) < 1e-5
    assert float(mx.abs(together - alone).max()) < 1e-5


def test_similarity_is_meaningful(embedder: Embedder) -> None:
    v, _ = embedder.embed(
        ["A man is eating food.", "A man is eating a piece of bread.", "A plane is in the sky."]
    )
    sims = v @ v.T
    assert float(sims[0, 1]) > float(sims[0, 2]) + 0.3


def test_bad_input(embedder: Embedder, tiny_model_dir: Path) -> None:
    vectors, tokens = embedder.embed([])
    assert vectors.shape == (0, 384) and tokens == 0
    with pytest.raises(TypeError):
        embedder.embed("not a list")
    with pytest.raises(TypeError):
        embedder.embed([1, 2])  # type: ignore[list-item]
    with pytest.raises(ValueError, match="not a BERT"):
        Embedder.load(tiny_model_dir)
