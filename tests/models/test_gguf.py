"""GGUF -> MLX conversion: the embedded default model against independent references, every
supported tensor type on small crafted files, and the errors for files it must refuse."""

from __future__ import annotations

import io
import json
import math
from pathlib import Path

import numpy as np
import pytest
from gguf import GGMLQuantizationType as Q

from impetus.models.errors import ModelError
from impetus.models.gguf import build_config, convert_gguf
from impetus.models.gguf_file import read_gguf
from impetus.models.gguf_tokenizer import build_tokenizer
from tests.models.gguf_factory import tokenizer_metadata, write_llama_gguf
from tests.models.reference import NumpyLlama

TRICKY = [
    "Hello world",
    "12345 apples cost $3.50",
    " 2024-01-01, 3.14159",
    "x1 y22 z333",
    "café ñandú 日本語 🤗 naïve Ελληνικά",
    "  two  spaces\n\nnew\tline\r\n",
    "<|im_start|>user\nhi<|im_end|>",
    "don't I'll we've",
    "emoji 👨‍👩‍👧 family",
    "def f(x):\n    return x**2  # square",
    "",
    " ",
]


def _leftovers(parent: Path) -> list[str]:
    return sorted(p.name for p in parent.iterdir() if p.name.endswith((".partial", ".old")))


# --- the embedded default model ---------------------------------------------------------------


@pytest.mark.slow
def test_default_model_answers_paris(smollm_mlx: Path) -> None:
    import mlx_lm

    model, tok = mlx_lm.load(str(smollm_mlx))
    messages = [{"role": "user", "content": "What is the capital of France?"}]
    prompt = tok.apply_chat_template(messages, add_generation_prompt=True)
    assert tok.decode(prompt).endswith("<|im_start|>assistant\n")  # the GGUF's own chat template
    text = mlx_lm.generate(model, tok, prompt, max_tokens=24)  # default sampler: greedy
    assert "Paris" in text


@pytest.mark.slow
def test_default_model_folder(smollm_mlx: Path, smollm_gguf: Path) -> None:
    config = json.loads((smollm_mlx / "config.json").read_text())
    assert config["rope_traditional"] is True
    assert config["tie_word_embeddings"] is True
    assert config["quantization"] == {"group_size": 32, "bits": 4}
    assert (config["num_hidden_layers"], config["num_key_value_heads"], config["rms_norm_eps"]) == (
        30,
        3,
        1e-5,
    )
    manifest = json.loads((smollm_mlx / "impetus.json").read_text())
    assert (
        manifest["source"]["sha256"]
        == "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"
    )
    assert manifest["source"]["size"] == smollm_gguf.stat().st_size
    # the Q8_0 embedding of this Q4_1 file stays 8-bit (mlx-lm infers it from the packed width)
    import mlx.core as mx

    w = mx.load(str(smollm_mlx / "model.safetensors"))
    assert isinstance(w, dict)
    assert w["model.embed_tokens.weight"].shape == (49152, 576 * 8 // 32)
    assert w["model.layers.0.self_attn.q_proj.weight"].shape == (576, 576 * 4 // 32)
    tok_cfg = json.loads((smollm_mlx / "tokenizer_config.json").read_text())
    assert tok_cfg["eos_token"] == "<|im_end|>" and "im_start" in tok_cfg["chat_template"]


@pytest.mark.slow
def test_default_model_logits_match_numpy_reference(smollm_mlx: Path, smollm_gguf: Path) -> None:
    """Top token equal at every position of a fixed prompt, against a numpy llama that reads the
    GGUF with the `gguf` package, un-permutes Q/K and uses the rotate-half rotary embedding."""
    import mlx.core as mx
    import mlx_lm

    model, tok = mlx_lm.load(str(smollm_mlx))
    ids = tok.encode(
        "The quick brown fox jumps over the lazy dog. In 1969, Neil Armstrong walked on the Moon; "
        "the capital of France is Paris."
    )
    assert len(ids) >= 30
    ref = NumpyLlama(str(smollm_gguf)).logits(ids)
    got = np.array(model(mx.array([ids]))[0].astype(mx.float32))
    assert got.shape == ref.shape
    np.testing.assert_array_equal(got.argmax(-1), ref.argmax(-1))
    assert np.abs(got - ref).max() < 0.05 * np.abs(ref).max()


REFERENCE = Path(__file__).parent / "data" / "smollm2_tokenizer_reference.json"


@pytest.mark.slow
def test_default_model_tokenizer_matches_transformers(smollm_mlx: Path, smollm_gguf: Path) -> None:
    """The rebuilt tokenizer against transformers' own GGUF tokenizer (independent code: its ids,
    stored once with their provenance by make_smollm_tokenizer_reference.py, since its GGUF
    reader needs PyTorch), and the way mlx-lm loads it."""
    import hashlib
    import json

    from tokenizers import Tokenizer
    from transformers import AutoTokenizer

    reference = json.loads(REFERENCE.read_text())
    assert reference["provenance"]["gguf_sha256"] == hashlib.sha256(smollm_gguf.read_bytes()).hexdigest()
    assert set(reference["ids"]) == set(TRICKY)
    mine = Tokenizer.from_file(str(smollm_mlx / "tokenizer.json"))
    loaded = AutoTokenizer.from_pretrained(str(smollm_mlx))  # what mlx_lm.load uses
    for s in TRICKY:
        expected = reference["ids"][s]
        assert mine.encode(s).ids == expected, s
        assert loaded.encode(s, add_special_tokens=False) == expected, s
        assert mine.decode(expected, skip_special_tokens=False) == s
    # known-good facts of SmolLM2's tokenizer: digits one by one, chat markers are single tokens
    assert mine.encode("12345").ids == [33, 34, 35, 36, 37]
    assert mine.encode("<|im_start|>user\nhi<|im_end|>").ids == [1, 4093, 198, 6004, 2]
    assert loaded.encode("hi") == [6004]  # add_bos_token is false in this GGUF


# --- crafted files: every supported type, against the numpy reference -----------------------


@pytest.mark.parametrize(
    ("weight_type", "tied", "types"),
    [
        (Q.Q8_0, True, {}),
        (Q.Q4_0, False, {}),
        (Q.Q4_1, True, {"token_embd.weight": Q.Q8_0}),
        (Q.F16, False, {}),
        (Q.F32, True, {}),
        (Q.BF16, False, {"blk.0.attn_q.weight": Q.Q4_1}),
    ],
)
def test_crafted_types_match_reference(
    tmp_path: Path, weight_type: Q, tied: bool, types: dict[str, Q]
) -> None:
    import mlx.core as mx
    import mlx_lm

    src = write_llama_gguf(tmp_path / "tiny.gguf", weight_type=weight_type, tied=tied, types=types)
    out = convert_gguf(src, tmp_path / "tiny")
    config = json.loads((out / "config.json").read_text())
    assert config["tie_word_embeddings"] is tied
    assert ("quantization" in config) == (weight_type in (Q.Q8_0, Q.Q4_0, Q.Q4_1) or bool(types))
    model, tok = mlx_lm.load(str(out))
    ids = tok.encode("Hello, world! The quick brown fox 123.")
    ref = NumpyLlama(str(src)).logits(ids)
    got = np.array(model(mx.array([ids]))[0].astype(mx.float32))
    np.testing.assert_array_equal(got.argmax(-1), ref.argmax(-1))
    assert np.abs(got - ref).max() < 1e-2 * max(1.0, float(np.abs(ref).max()))
    assert _leftovers(tmp_path) == []


def test_crafted_tokenizer_round_trips(tmp_path: Path) -> None:
    """tests/tiny_model's tokenizer -> GGUF metadata -> rebuilt: the same ids as the original."""
    from tokenizers import Tokenizer

    src = write_llama_gguf(tmp_path / "tiny.gguf")
    original = Tokenizer.from_str(tokenizer_metadata()["json"])
    rebuilt = build_tokenizer(read_gguf(src).metadata)
    for s in TRICKY:
        assert rebuilt.encode(s).ids == original.encode(s).ids, s


def test_spm_tokenizer_matches_sentencepiece() -> None:
    """A SentencePiece BPE vocabulary as llama GGUF stores it (pieces, scores, types, no merges)
    tokenizes as sentencepiece itself does, byte fallback included."""
    sentencepiece = pytest.importorskip("sentencepiece")
    from sentencepiece import sentencepiece_model_pb2

    corpus = [
        "The quick brown fox jumps over the lazy dog.",
        "What is the capital of France? Paris is the capital of France.",
        "Hello, world! How are you today? Numbers 0 1 2 3 42 1000.",
        "Unicode: café naïve über. def main():\n    print(1)",
        "the then there these those other another brother",
    ] * 40
    buf = io.BytesIO()
    sentencepiece.SentencePieceTrainer.train(
        sentence_iterator=iter(corpus), model_writer=buf, vocab_size=420, model_type="bpe",
        byte_fallback=True, character_coverage=1.0, split_digits=True, allow_whitespace_only_pieces=True,
        remove_extra_whitespaces=False, normalization_rule_name="identity", minloglevel=2,
    )  # fmt: skip
    sp = sentencepiece.SentencePieceProcessor(model_proto=buf.getvalue())
    proto = sentencepiece_model_pb2.ModelProto()
    proto.ParseFromString(buf.getvalue())
    meta = {
        "tokenizer.ggml.model": "llama",
        "tokenizer.ggml.tokens": [p.piece for p in proto.pieces],
        "tokenizer.ggml.scores": [p.score for p in proto.pieces],
        "tokenizer.ggml.token_type": [int(p.type) for p in proto.pieces],
        "tokenizer.ggml.bos_token_id": 1,
        "tokenizer.ggml.eos_token_id": 2,
        "tokenizer.ggml.unknown_token_id": 0,
        "tokenizer.ggml.add_bos_token": True,
    }
    tok = build_tokenizer(meta)
    for s in [*TRICKY[:6], "another brother there", "theother", "The capital of France is Paris."]:
        assert tok.encode(s, add_special_tokens=False).ids == sp.encode(s), s
        assert tok.decode(sp.encode(s)) == sp.decode(sp.encode(s)), s
    assert tok.encode("Hello").ids[0] == 1  # add_bos_token: the bos comes first


def test_llama3_rope_scaling_is_recovered(tmp_path: Path) -> None:
    head_dim, base = 16, 500000.0
    inv = base ** (np.arange(0, head_dim, 2) / head_dim)
    wavelen = 2 * math.pi * inv
    factor, low, high, orig = 8.0, 1.0, 4.0, 8192
    scaled = np.where(wavelen > orig / low, inv * factor, inv)
    smooth = (orig / wavelen - low) / (high - low)
    mid = (wavelen > orig / high) & (wavelen < orig / low)
    scaled = np.where(mid, scaled / ((1 - smooth) / factor + smooth), scaled)
    src = write_llama_gguf(
        tmp_path / "l3.gguf",
        rope_freqs=scaled / inv,
        extra_metadata={"llama.rope.freq_base": base},
    )
    cfg = build_config(read_gguf(src))
    assert cfg["rope_scaling"] == {
        "rope_type": "llama3",
        "factor": 8.0,
        "low_freq_factor": 1.0,
        "high_freq_factor": 4.0,
        "original_max_position_embeddings": 8192,
    }
    bad = write_llama_gguf(tmp_path / "bad.gguf", rope_freqs=np.linspace(1, 3, head_dim // 2))
    with pytest.raises(ModelError, match="rope_freqs"):
        build_config(read_gguf(bad))


# --- files it must refuse --------------------------------------------------------------------


def test_k_quant_is_refused_by_name(tmp_path: Path) -> None:
    src = write_llama_gguf(
        tmp_path / "k.gguf",
        hidden=256,
        ffn=512,
        types={"blk.0.ffn_down.weight": Q.Q6_K, "blk.1.attn_q.weight": Q.Q4_K},
    )
    with pytest.raises(ModelError) as e:
        convert_gguf(src, tmp_path / "k")
    assert e.value.code == "model_load_failed"
    assert (
        "Q6_K" in e.value.message
        and "Q4_K" in e.value.message
        and "blk.0.ffn_down.weight" in e.value.message
    )
    assert not (tmp_path / "k").exists() and _leftovers(tmp_path) == []


def test_other_architecture_is_refused(tmp_path: Path) -> None:
    src = write_llama_gguf(tmp_path / "q.gguf", arch="qwen2")
    with pytest.raises(ModelError, match="architecture 'qwen2'"):
        convert_gguf(src, tmp_path / "q")
    assert not (tmp_path / "q").exists()


def test_unknown_pre_tokenizer_is_refused(tmp_path: Path) -> None:
    src = write_llama_gguf(tmp_path / "p.gguf", pre="deepseek-coder")
    with pytest.raises(ModelError, match="pre-tokenizer 'deepseek-coder'"):
        convert_gguf(src, tmp_path / "p")
    assert not (tmp_path / "p").exists() and _leftovers(tmp_path) == []


def test_truncated_file(tmp_path: Path) -> None:
    src = write_llama_gguf(tmp_path / "t.gguf")
    data = src.read_bytes()
    src.write_bytes(data[: len(data) - 1000])
    with pytest.raises(ModelError, match="truncated") as e:
        convert_gguf(src, tmp_path / "t")
    assert e.value.code == "model_load_failed"
    src.write_bytes(data[:300])  # cut inside the header
    with pytest.raises(ModelError, match="truncated|header"):
        convert_gguf(src, tmp_path / "t")
    assert not (tmp_path / "t").exists() and _leftovers(tmp_path) == []


def test_not_a_gguf_file(tmp_path: Path) -> None:
    junk = tmp_path / "junk.gguf"
    junk.write_bytes(b"PK\x03\x04" + bytes(range(256)) * 4)
    with pytest.raises(ModelError, match="not a GGUF file"):
        convert_gguf(junk, tmp_path / "junk")
    damaged = tmp_path / "damaged.gguf"  # the magic, then an absurd tensor count
    damaged.write_bytes(
        b"GGUF" + (3).to_bytes(4, "little") + (1 << 40).to_bytes(8, "little") + bytes(64)
    )
    with pytest.raises(ModelError, match="damaged header"):
        convert_gguf(damaged, tmp_path / "damaged")
    assert not (tmp_path / "junk").exists() and not (tmp_path / "damaged").exists()


def test_sha256_mismatch_is_refused_and_keeps_the_old_folder(tmp_path: Path) -> None:
    src = write_llama_gguf(tmp_path / "s.gguf")
    out = convert_gguf(src, tmp_path / "s")
    before = (out / "impetus.json").read_text()
    with pytest.raises(ModelError, match="corrupted or not the expected file"):
        convert_gguf(src, out, expected_sha256="0" * 64)
    assert (out / "impetus.json").read_text() == before  # the previous conversion is untouched
    assert _leftovers(tmp_path) == []


def test_reconversion_replaces_atomically(tmp_path: Path) -> None:
    src = write_llama_gguf(tmp_path / "r.gguf", weight_type=Q.Q8_0)
    out = convert_gguf(src, tmp_path / "r")
    write_llama_gguf(src, weight_type=Q.F16, seed=1)
    convert_gguf(src, out)
    assert "quantization" not in json.loads((out / "config.json").read_text())
    assert json.loads((out / "impetus.json").read_text())["source"]["weight_type"] == "F16"
    assert _leftovers(tmp_path) == []
