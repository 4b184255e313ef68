"""Build a random-weight Llama MLX folder of a real model's shape, for speed benchmarks.

    python benchmarks/make_random_model.py --preset llama3-8b /path/to/folder

Speed depends on the shapes, not on the values, so a Llama-3-8B-shaped model with random bf16
weights measures what the real one would, with no download. The folder is what `mlx_lm.load`
and the impetus engine read from the hub: config.json, model.safetensors, tokenizer.json,
tokenizer_config.json with a ChatML template (the benchmark's turn-2 test uses chat messages).

The tokenizer is a byte-level BPE whose vocabulary is exactly the model's (like Llama 3's
128256), so every id the model can emit decodes to real bytes: 3 specials, the 256 byte
symbols, then every byte pair, then pair+byte triples until the vocabulary is full. Its merges
are synthetic; text round-trips through it like through any byte-level BPE.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.tiny_model import SPECIALS, write_tokenizer_config  # noqa: E402

PRESETS: dict[str, dict[str, Any]] = {
    # meta-llama/Meta-Llama-3-8B-Instruct's config.json, less its weights
    "llama3-8b": {
        "hidden_size": 4096,
        "num_hidden_layers": 32,
        "intermediate_size": 14336,
        "num_attention_heads": 32,
        "num_key_value_heads": 8,
        "vocab_size": 128256,
        "max_position_embeddings": 8192,
        "rope_theta": 500000.0,
        "tie_word_embeddings": False,
    },
    # meta-llama/Meta-Llama-3-70B-Instruct's shape: ~140 GB in bf16, more than one 80 GB card
    # (benchmarks/ranks_scaling.sh serves it across the GPUs of one machine); building it holds
    # the whole model in host memory once
    "llama3-70b": {
        "hidden_size": 8192,
        "num_hidden_layers": 80,
        "intermediate_size": 28672,
        "num_attention_heads": 64,
        "num_key_value_heads": 8,
        "vocab_size": 128256,
        "max_position_embeddings": 8192,
        "rope_theta": 500000.0,
        "tie_word_embeddings": False,
    },
    # meta-llama/Llama-3.2-1B-Instruct's shape (its rope scaling left out: no effect on speed)
    "llama3.2-1b": {
        "hidden_size": 2048,
        "num_hidden_layers": 16,
        "intermediate_size": 8192,
        "num_attention_heads": 32,
        "num_key_value_heads": 8,
        "head_dim": 64,
        "vocab_size": 128256,
        "max_position_embeddings": 8192,
        "rope_theta": 500000.0,
        "tie_word_embeddings": True,
    },
    # the full Llama-3 vocabulary on a toy body: checks the pipeline on a CPU in seconds
    "tiny": {
        "hidden_size": 64,
        "num_hidden_layers": 2,
        "intermediate_size": 128,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "vocab_size": 128256,
        "max_position_embeddings": 4096,
        "rope_theta": 10000.0,
        "tie_word_embeddings": True,
    },
}


def build_full_tokenizer(dest: Path, vocab_size: int) -> None:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers

    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    vocab: dict[str, int] = {s: i for i, s in enumerate(SPECIALS)}
    merges: list[tuple[str, str]] = []

    def add(token: str, merge: tuple[str, str] | None) -> None:
        vocab[token] = len(vocab)
        if merge is not None:
            merges.append(merge)

    for c in alphabet:
        add(c, None)
    pairs = [a + b for a in alphabet for b in alphabet]
    for p in pairs:
        if len(vocab) >= vocab_size:
            break
        add(p, (p[0], p[1]))
    for p in pairs:
        for c in alphabet:
            if len(vocab) >= vocab_size:
                break
            add(p + c, (p, c))
        if len(vocab) >= vocab_size:
            break
    if len(vocab) != vocab_size:
        raise SystemExit(f"could not fill a vocabulary of {vocab_size} (got {len(vocab)})")

    tok = Tokenizer(models.BPE(vocab=vocab, merges=merges))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens(SPECIALS)
    tok.save(str(dest / "tokenizer.json"))
    write_tokenizer_config(dest, model_max_length=8192)


def build(dest: Path, preset: str, seed: int = 0) -> Path:
    import mlx.core as mx
    from mlx.utils import tree_flatten
    from mlx_lm.models import llama

    dest.mkdir(parents=True, exist_ok=True)
    config: dict[str, Any] = {
        "model_type": "llama",
        "architectures": ["LlamaForCausalLM"],
        "rms_norm_eps": 1e-5,
        "eos_token_id": SPECIALS.index("<|im_end|>"),
        "torch_dtype": "bfloat16",
        **PRESETS[preset],
    }
    build_full_tokenizer(dest, int(config["vocab_size"]))
    mx.random.seed(seed)
    model = llama.Model(llama.ModelArgs.from_dict(config))
    model.set_dtype(mx.bfloat16)  # lazy: the float32 init is never materialized whole
    params = dict(tree_flatten(model.parameters()))
    mx.save_safetensors(str(dest / "model.safetensors"), params, metadata={"format": "mlx"})
    (dest / "config.json").write_text(json.dumps(config, indent=2))
    return dest


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("dest", type=Path)
    ap.add_argument("--preset", choices=sorted(PRESETS), default="llama3-8b")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    t0 = time.perf_counter()
    build(args.dest, args.preset, args.seed)
    size = sum(f.stat().st_size for f in args.dest.glob("*.safetensors"))
    print(
        f"{args.preset}: {args.dest} ({size / 2**30:.2f} GiB) in {time.perf_counter() - t0:.1f} s",
        file=sys.stderr,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
