"""Small llama GGUF files written with the `gguf` package (llama.cpp's own writer), for tests.

The weights are random, the tokenizer is the byte-level BPE of tests/tiny_model.py moved into GGUF
metadata (tokens, merges, token types), the way llama.cpp's converter stores it.
"""

from __future__ import annotations

import functools
import json
import tempfile
from pathlib import Path
from typing import Any

import gguf
import numpy as np
from gguf import GGMLQuantizationType as Q
from gguf.quants import quantize

from tests.tiny_model import CHATML, build_tokenizer

LAYER_TENSORS = {
    "attn_q": ("q", "hidden"),
    "attn_k": ("kv", "hidden"),
    "attn_v": ("kv", "hidden"),
    "attn_output": ("hidden", "q"),
    "ffn_gate": ("ffn", "hidden"),
    "ffn_up": ("ffn", "hidden"),
    "ffn_down": ("hidden", "ffn"),
}


@functools.cache
def tokenizer_metadata() -> dict[str, Any]:
    """tokens / merges / token types of tests/tiny_model's tokenizer, as GGUF stores them, and
    the original tokenizer.json (`json`)."""
    with tempfile.TemporaryDirectory() as tmp:
        build_tokenizer(Path(tmp))
        text = (Path(tmp) / "tokenizer.json").read_text()
    data = json.loads(text)
    vocab: dict[str, int] = data["model"]["vocab"]
    tokens = [t for t, _ in sorted(vocab.items(), key=lambda kv: kv[1])]
    merges = [m if isinstance(m, str) else " ".join(m) for m in data["model"]["merges"]]
    special = {a["content"] for a in data["added_tokens"] if a["special"]}
    types = [3 if t in special else 1 for t in tokens]
    return {
        "tokens": tokens,
        "merges": merges,
        "types": types,
        "eos": vocab["<|im_end|>"],
        "bos": vocab["<|im_start|>"],
        "json": text,
    }


def write_llama_gguf(
    path: Path,
    *,
    hidden: int = 64,
    layers: int = 2,
    heads: int = 4,
    kv_heads: int = 2,
    ffn: int = 128,
    weight_type: Q = Q.Q8_0,
    types: dict[str, Q] | None = None,
    tied: bool = True,
    arch: str = "llama",
    tokenizer_model: str = "gpt2",
    pre: str = "default",
    rope_freqs: np.ndarray | None = None,
    extra_metadata: dict[str, Any] | None = None,
    seed: int = 0,
) -> Path:
    """A random llama GGUF; `types` overrides the GGML type of single tensors (by GGUF name)."""
    rng = np.random.default_rng(seed)
    tok = tokenizer_metadata()
    vocab = len(tok["tokens"])
    head_dim = hidden // heads
    dims = {"hidden": hidden, "q": heads * head_dim, "kv": kv_heads * head_dim, "ffn": ffn}
    w = gguf.GGUFWriter(str(path), arch)
    w.add_block_count(layers)
    w.add_context_length(256)
    w.add_embedding_length(hidden)
    w.add_feed_forward_length(ffn)
    w.add_head_count(heads)
    w.add_head_count_kv(kv_heads)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_rope_freq_base(10000.0)
    w.add_rope_dimension_count(head_dim)
    w.add_vocab_size(vocab)
    w.add_tokenizer_model(tokenizer_model)
    w.add_tokenizer_pre(pre)
    w.add_token_list(tok["tokens"])
    w.add_token_merges(tok["merges"])
    w.add_token_types(tok["types"])
    w.add_bos_token_id(tok["bos"])
    w.add_eos_token_id(tok["eos"])
    w.add_add_bos_token(False)
    w.add_chat_template(CHATML)
    for k, v in (extra_metadata or {}).items():
        if isinstance(v, str):
            w.add_string(k, v)
        elif isinstance(v, float):
            w.add_float32(k, v)
        else:
            w.add_uint32(k, int(v))
    types = types or {}

    def add(name: str, shape: tuple[int, ...], scale: float = 0.2) -> None:
        x = (rng.standard_normal(shape) * scale).astype(np.float32)
        qtype = types.get(name, weight_type if len(shape) == 2 else Q.F32)
        if qtype == Q.F32:
            w.add_tensor(name, x)
        elif qtype == Q.F16:
            w.add_tensor(name, x.astype(np.float16))
        elif qtype in (Q.Q4_K, Q.Q5_K, Q.Q6_K, Q.Q2_K, Q.Q3_K, Q.IQ4_XS):
            block, nbytes = gguf.GGML_QUANT_SIZES[qtype]
            raw = rng.integers(0, 256, (shape[0], shape[1] // block * nbytes), dtype=np.uint8)
            w.add_tensor(name, raw, raw_shape=raw.shape, raw_dtype=qtype)
        else:
            q = quantize(x, qtype)
            w.add_tensor(name, q, raw_shape=q.shape, raw_dtype=qtype)

    add("token_embd.weight", (vocab, hidden), 1.0)
    for i in range(layers):
        add(f"blk.{i}.attn_norm.weight", (hidden,), 0.1)
        for t, (rows, cols) in LAYER_TENSORS.items():
            add(f"blk.{i}.{t}.weight", (dims[rows], dims[cols]))
        add(f"blk.{i}.ffn_norm.weight", (hidden,), 0.1)
    add("output_norm.weight", (hidden,), 0.1)
    if not tied:
        add("output.weight", (vocab, hidden))
    if rope_freqs is not None:
        w.add_tensor("rope_freqs.weight", rope_freqs.astype(np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path
