"""An independent llama forward pass in numpy, from a GGUF file, for checking the converter.

Shares no code with impetus or MLX: the `gguf` package reads and dequantizes the tensors, the Q/K
rows are un-permuted back to Hugging Face order (undoing llama.cpp's converter) and the rotary
embedding is the rotate-half form of transformers' LlamaModel. If the converter's
`rope_traditional: true` shortcut were wrong, the two would disagree.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from gguf import GGUFReader
from gguf.quants import dequantize


def _field(reader: GGUFReader, key: str) -> Any:
    f = reader.fields[key]
    return f.contents()


def _unpermute(w: np.ndarray, n_head: int) -> np.ndarray:
    # llama.cpp: w.reshape(n_head, 2, rows // n_head // 2, cols).swapaxes(1, 2).reshape(w.shape)
    rows = w.shape[0]
    return w.reshape(n_head, rows // n_head // 2, 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


class NumpyLlama:
    def __init__(self, path: str) -> None:
        reader = GGUFReader(path)
        arch = _field(reader, "general.architecture")
        self.n_head = int(_field(reader, f"{arch}.attention.head_count"))
        self.n_kv = int(_field(reader, f"{arch}.attention.head_count_kv"))
        self.eps = float(_field(reader, f"{arch}.attention.layer_norm_rms_epsilon"))
        self.theta = float(_field(reader, f"{arch}.rope.freq_base"))
        self.n_layer = int(_field(reader, f"{arch}.block_count"))
        self.w: dict[str, np.ndarray] = {}
        for t in reader.tensors:
            arr = dequantize(t.data, t.tensor_type).astype(np.float32)
            self.w[t.name] = arr.reshape([int(d) for d in reversed(t.shape)])
        for i in range(self.n_layer):
            self.w[f"blk.{i}.attn_q.weight"] = _unpermute(
                self.w[f"blk.{i}.attn_q.weight"], self.n_head
            )
            self.w[f"blk.{i}.attn_k.weight"] = _unpermute(
                self.w[f"blk.{i}.attn_k.weight"], self.n_kv
            )
        self.head_dim = self.w["blk.0.attn_q.weight"].shape[0] // self.n_head

    def _norm(self, x: np.ndarray, w: np.ndarray) -> np.ndarray:
        return x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + self.eps) * w

    def _rope(self, x: np.ndarray) -> np.ndarray:  # x: (heads, T, d), rotate-half (HF) form
        d = x.shape[-1]
        inv = 1.0 / self.theta ** (np.arange(0, d, 2, dtype=np.float64) / d)
        ang = np.arange(x.shape[1])[:, None] * inv[None, :]
        cos = np.cos(np.concatenate([ang, ang], -1)).astype(np.float32)
        sin = np.sin(np.concatenate([ang, ang], -1)).astype(np.float32)
        rot = np.concatenate([-x[..., d // 2 :], x[..., : d // 2]], -1)
        return x * cos + rot * sin

    def logits(self, ids: list[int]) -> np.ndarray:
        w, T, hd = self.w, len(ids), self.head_dim
        x = w["token_embd.weight"][ids]
        mask = np.triu(np.full((T, T), -np.inf, dtype=np.float32), 1)
        for i in range(self.n_layer):
            p = f"blk.{i}."
            h = self._norm(x, w[p + "attn_norm.weight"])
            q = (h @ w[p + "attn_q.weight"].T).reshape(T, self.n_head, hd).transpose(1, 0, 2)
            k = (h @ w[p + "attn_k.weight"].T).reshape(T, self.n_kv, hd).transpose(1, 0, 2)
            v = (h @ w[p + "attn_v.weight"].T).reshape(T, self.n_kv, hd).transpose(1, 0, 2)
            q, k = self._rope(q), self._rope(k)
            rep = self.n_head // self.n_kv
            k, v = np.repeat(k, rep, axis=0), np.repeat(v, rep, axis=0)
            s = q @ k.transpose(0, 2, 1) / np.sqrt(hd) + mask
            s = np.exp(s - s.max(-1, keepdims=True))
            s /= s.sum(-1, keepdims=True)
            o = (s @ v).transpose(1, 0, 2).reshape(T, -1)
            x = x + o @ w[p + "attn_output.weight"].T
            h = self._norm(x, w[p + "ffn_norm.weight"])
            g = h @ w[p + "ffn_gate.weight"].T
            u = h @ w[p + "ffn_up.weight"].T
            x = x + ((g / (1 + np.exp(-g))) * u) @ w[p + "ffn_down.weight"].T
        x = self._norm(x, w["output_norm.weight"])
        out = w.get("output.weight", w["token_embd.weight"])
        return x @ out.T
