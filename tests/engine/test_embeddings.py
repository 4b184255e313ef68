"""The embedded embedding model `minilm` against the PyTorch reference (sentence-transformers)."""

from __future__ import annotations

from pathlib import Path

import mlx.core as mx
import numpy as np
import pytest

from impetus.engine.embeddings import Embedder, embedded_model_path, is_embedding_model

LONG = " ".join(f"token{i} and some words" for i in range(300))  # far over 256 tokens

TEXTS = [
    "The quick brown fox jumps over the lazy dog.",
    "",
    "Unicode: café, naïve, über, 東京, 😀, ñ, ß, é — ﬁ ligature, Ｆｕｌｌ width",
    LONG,
    "   leading and trailing spaces   ",
    "A man is eating food.",
    "def main():\n    print('hello')\n",
    *(f"sentence {i}: " + "lorem ipsum dolor " * (i % 9) for i in range(40)),
]


@pytest.fixture(scope="module")
def model_path() -> Path:
    return embedded_model_path()


@pytest.fixture(scope="module")
def embedder(model_path: Path) -> Embedder:
    return Embedder.load(model_path)


@pytest.fixture(scope="module")
def reference(model_path: Path):  # -> SentenceTransformer
    st = pytest.importorskip(
        "sentence_transformers", reason="reference needs sentence-transformers"
    )
    return st.SentenceTransformer(str(model_path), device="cpu")


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


def test_matches_sentence_transformers(embedder: Embedder, reference) -> None:
    vectors, tokens = embedder.embed(TEXTS)
    assert vectors.shape == (len(TEXTS), 384)
    assert vectors.dtype == mx.float32
    ours = np.array(vectors)
    ref = reference.encode(TEXTS, convert_to_numpy=True, batch_size=16)
    diff = np.abs(ours - ref).max(axis=1)
    assert diff.max() < 1e-4, {TEXTS[i][:40]: float(diff[i]) for i in np.argsort(-diff)[:5]}
    np.testing.assert_allclose(np.linalg.norm(ours, axis=1), 1.0, atol=1e-5)

    # Token count: what the reference feeds the model, [CLS]/[SEP] included, after truncation.
    enc = reference.tokenizer(TEXTS, truncation=True, max_length=reference.max_seq_length)
    assert tokens == sum(len(ids) for ids in enc["input_ids"])
    assert embedder.count_tokens(["", LONG]) == [2, 256]


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
