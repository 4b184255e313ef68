"""Writes tests/models/data/smollm2_tokenizer_reference.json: the token ids that transformers'
own GGUF tokenizer (independent code) gives the tricky strings of test_gguf.py, for the embedded
SmolLM2 GGUF. Run once where transformers' GGUF reader works (it needs PyTorch); the test then
compares the tokenizer impetus rebuilds against these ids without either.

    python tests/models/make_smollm_tokenizer_reference.py
"""

from __future__ import annotations

import datetime
import hashlib
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from impetus.models.catalogue import SMOLLM2  # noqa: E402
from tests.models.test_gguf import TRICKY  # noqa: E402

OUT = ROOT / "tests" / "models" / "data" / "smollm2_tokenizer_reference.json"


def main() -> None:
    import torch
    import transformers
    from transformers import AutoTokenizer

    gguf = SMOLLM2.locate()
    assert gguf is not None, "impetus models pull smollm2-135m first"
    ref = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(
        json.dumps(
            {
                "provenance": {
                    "gguf": f"{SMOLLM2.requirement}: {gguf.name}",
                    "gguf_sha256": hashlib.sha256(gguf.read_bytes()).hexdigest(),
                    "tokenizer": "transformers AutoTokenizer.from_pretrained(gguf_file=...)",
                    "transformers": transformers.__version__,
                    "torch": torch.__version__,
                    "date": datetime.date.today().isoformat(),
                },
                "ids": {s: ref.encode(s, add_special_tokens=False) for s in TRICKY},
            },
            indent=1,
            ensure_ascii=False,
        )
        + "\n"
    )
    print(OUT)


if __name__ == "__main__":
    main()
