"""Converting a llama-architecture GGUF file into an MLX model folder that `mlx_lm.load` reads.

The folder holds config.json, model.safetensors, tokenizer.json, tokenizer_config.json (with the
chat template) and impetus.json (where it came from: the GGUF's sha256, size and mtime).

* Tensors come from `mx.load`, which reads GGUF natively: Q4_0 / Q4_1 / Q8_0 arrive as MLX affine
  quantized triples (packed uint32 weight, scales, biases; group size 32) and stay quantized in
  the folder, F16 / F32 arrive plain. BF16 is read here (mx.load would narrow it to float16).
  Every other type (K-quants, IQ*) is refused by name: mx.load would return wrong numbers.
* llama.cpp's converter permutes the rows of Q and K so that its rotary embedding rotates adjacent
  pairs; MLX's RoPE does the same with `traditional=True`, so the rows stay as they are and the
  config says `rope_traditional: true`.
* No `output.weight` means the output projection is the embedding (tied).
* The folder is written next to the destination under a hidden name and renamed into place, so an
  interrupted or failed conversion never leaves a folder that looks usable.
"""

from __future__ import annotations

import errno
import hashlib
import json
import math
import os
import re
import shutil
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from impetus.models.errors import ModelError
from impetus.models.gguf_file import GGMLType, GGUFFile, GGUFFormatError, read_gguf
from impetus.models.gguf_tokenizer import build_tokenizer, eos_token_ids, tokenizer_config

if TYPE_CHECKING:
    import mlx.core as mx

MANIFEST = "impetus.json"
SUPPORTED_TYPES = {
    GGMLType.F32,
    GGMLType.F16,
    GGMLType.BF16,
    GGMLType.Q4_0,
    GGMLType.Q4_1,
    GGMLType.Q8_0,
}
SUPPORTED_ARCHITECTURES = {"llama"}
_CHUNK = 1 << 20

_LAYER_NAMES = {
    "attn_q": "self_attn.q_proj",
    "attn_k": "self_attn.k_proj",
    "attn_v": "self_attn.v_proj",
    "attn_output": "self_attn.o_proj",
    "ffn_gate": "mlp.gate_proj",
    "ffn_up": "mlp.up_proj",
    "ffn_down": "mlp.down_proj",
    "attn_norm": "input_layernorm",
    "ffn_norm": "post_attention_layernorm",
}
_TOP_NAMES = {"token_embd": "model.embed_tokens", "output_norm": "model.norm", "output": "lm_head"}
_BLOCK = re.compile(r"blk\.(\d+)\.([a-z_]+)\.(weight|bias)$")


def file_sha256(path: str | Path, cancel: Callable[[], bool] | None = None) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            if cancel is not None and cancel():
                raise ModelError("cancelled", f"hashing {Path(path).name} was cancelled")
            h.update(chunk)
    return h.hexdigest()


def mlx_name(gguf_name: str) -> str:
    """`blk.3.attn_q.weight` -> `model.layers.3.self_attn.q_proj.weight`; unknown names raise."""
    m = _BLOCK.fullmatch(gguf_name)
    if m and m.group(2) in _LAYER_NAMES:
        return f"model.layers.{m.group(1)}.{_LAYER_NAMES[m.group(2)]}.{m.group(3)}"
    base, _, suffix = gguf_name.rpartition(".")
    if base in _TOP_NAMES and suffix in ("weight", "bias"):
        return f"{_TOP_NAMES[base]}.{suffix}"
    raise ModelError("model_load_failed", f"unexpected tensor {gguf_name!r} in a llama GGUF file")


def _num(x: Any) -> float:
    # GGUF stores float32: 1e-5 reads back as 9.999999747378752e-06; keep float32's precision
    return float(f"{float(x):.7g}")


def _llama3_rope_scaling(
    freq_factors: np.ndarray, head_dim: int, base: float, meta_factor: float | None
) -> dict[str, Any]:
    """Recover Llama 3 rope scaling from llama.cpp's `rope_freqs` tensor.

    llama.cpp stores the per-frequency divisors; HF configs store the four parameters of the
    formula. Try the published parameter sets and keep the one that reproduces the tensor.
    """
    inv = base ** (np.arange(0, head_dim, 2, dtype=np.float64) / head_dim)
    wavelen = 2 * math.pi * inv
    factors = [meta_factor] if meta_factor else [8.0, 32.0, 16.0, 4.0, 2.0]
    for factor in factors:
        for orig in (8192, 4096, 2048, 16384):
            low, high = 1.0, 4.0
            low_wl, high_wl = orig / low, orig / high
            scaled = np.where(wavelen > low_wl, inv * factor, inv)
            smooth = (orig / wavelen - low) / (high - low)
            mid = (wavelen > high_wl) & (wavelen < low_wl)
            scaled = np.where(mid, scaled / ((1 - smooth) / factor + smooth), scaled)
            if np.allclose(scaled / inv, freq_factors, rtol=1e-3):
                return {
                    "rope_type": "llama3",
                    "factor": factor,
                    "low_freq_factor": low,
                    "high_freq_factor": high,
                    "original_max_position_embeddings": orig,
                }
    raise ModelError(
        "model_load_failed",
        "the GGUF file has rope frequency factors (rope_freqs) that match no Llama 3 rope scaling",
    )


def build_config(gg: GGUFFile) -> dict[str, Any]:
    """config.json (mlx-lm / transformers llama keys) from the GGUF metadata, checked against shapes."""
    meta = gg.metadata

    def need(key: str) -> Any:
        v = gg.arch_value(key)
        if v is None:
            raise ModelError("model_load_failed", f"the GGUF file lacks {gg.architecture}.{key}")
        return v

    hidden = int(need("embedding_length"))
    heads = int(need("attention.head_count"))
    kv_heads = gg.arch_value("attention.head_count_kv", heads)
    if isinstance(kv_heads, list):
        if len(set(kv_heads)) != 1:
            raise ModelError(
                "model_load_failed", "per-layer key/value head counts are not supported"
            )
        kv_heads = kv_heads[0]
    head_dim = int(gg.arch_value("attention.key_length", hidden // heads))
    rope_dims = int(gg.arch_value("rope.dimension_count", head_dim))
    if rope_dims != head_dim:
        raise ModelError(
            "model_load_failed",
            f"partial rotary embeddings ({rope_dims} of {head_dim}) are not supported",
        )
    embd = gg.tensors.get("token_embd.weight")
    if embd is None:
        raise ModelError("model_load_failed", "the GGUF file has no token_embd.weight")
    vocab = int(gg.arch_value("vocab_size", embd.shape[0]))
    if embd.shape != (vocab, hidden):
        raise ModelError(
            "model_load_failed",
            f"token_embd.weight is {embd.shape}, the metadata says ({vocab}, {hidden})",
        )
    q = gg.tensors.get("blk.0.attn_q.weight")
    if q is None or q.shape != (heads * head_dim, hidden):
        raise ModelError(
            "model_load_failed", "blk.0.attn_q.weight is missing or does not match the head count"
        )
    base = _num(gg.arch_value("rope.freq_base", 10000.0))
    context = int(gg.arch_value("context_length", 2048))
    cfg: dict[str, Any] = {
        "model_type": "llama",
        "architectures": ["LlamaForCausalLM"],
        "hidden_size": hidden,
        "num_hidden_layers": int(need("block_count")),
        "intermediate_size": int(need("feed_forward_length")),
        "num_attention_heads": heads,
        "num_key_value_heads": int(kv_heads),
        "head_dim": head_dim,
        "rms_norm_eps": _num(need("attention.layer_norm_rms_epsilon")),
        "vocab_size": vocab,
        "max_position_embeddings": context,
        "rope_theta": base,
        # llama GGUF keeps Q/K rows in the order of an interleaved (traditional) rotary embedding
        "rope_traditional": True,
        "tie_word_embeddings": "output.weight" not in gg.tensors,
        "attention_bias": "blk.0.attn_q.bias" in gg.tensors,
        "mlp_bias": "blk.0.ffn_up.bias" in gg.tensors,
    }
    scaling = gg.arch_value("rope.scaling.type")
    factor = gg.arch_value("rope.scaling.factor")
    if scaling == "linear" and factor:
        cfg["rope_scaling"] = {"rope_type": "linear", "factor": _num(factor)}
    elif scaling not in (None, "none", "linear"):
        raise ModelError(
            "model_load_failed", f"rope scaling {scaling!r} is not supported for GGUF conversion"
        )
    if "rope_freqs.weight" in gg.tensors:
        freqs = _read_plain(gg, "rope_freqs.weight").astype(np.float64)
        cfg["rope_scaling"] = _llama3_rope_scaling(
            freqs, head_dim, base, _num(factor) if factor else None
        )
    ids = {r: meta.get(f"tokenizer.ggml.{r}_token_id") for r in ("bos", "eos")}
    if ids["bos"] is not None:
        cfg["bos_token_id"] = int(ids["bos"])
    eos = eos_token_ids(meta)
    if eos:
        cfg["eos_token_id"] = eos[0] if len(eos) == 1 else eos
    return cfg


def _read_plain(gg: GGUFFile, name: str) -> np.ndarray:
    """A float tensor read straight from the file (for types mx.load would change, and small ones)."""
    t = gg.tensors[name]
    dtype = {GGMLType.F32: np.float32, GGMLType.F16: np.float16, GGMLType.BF16: np.uint16}.get(
        GGMLType(t.ggml_type)
    )
    if dtype is None:
        raise ModelError("model_load_failed", f"{name} is {t.type_name}, expected a float tensor")
    arr = np.fromfile(gg.path, dtype=dtype, count=t.n_elements, offset=gg.data_offset + t.offset)
    return arr.reshape(t.shape)


def check_supported(gg: GGUFFile) -> None:
    """Refuse, by name, what the converter cannot do; before any tensor is read."""
    if gg.architecture not in SUPPORTED_ARCHITECTURES:
        raise ModelError(
            "model_load_failed",
            f"GGUF architecture {gg.architecture or '(none)'!r} is not supported; impetus converts "
            f"{', '.join(sorted(SUPPORTED_ARCHITECTURES))} GGUF files",
        )
    bad: Counter[str] = Counter()
    example: dict[str, str] = {}
    for t in gg.tensors.values():
        try:
            ok = GGMLType(t.ggml_type) in SUPPORTED_TYPES
        except ValueError:
            ok = False
        if not ok:
            bad[t.type_name] += 1
            example.setdefault(t.type_name, t.name)
    if bad:
        kinds = ", ".join(f"{k} ({n} tensors, e.g. {example[k]})" for k, n in bad.most_common())
        raise ModelError(
            "model_load_failed",
            f"unsupported GGUF tensor type {kinds}; impetus converts GGUF files quantized as "
            "Q4_0, Q4_1 or Q8_0, or stored as F16, BF16 or F32 (K-quants and IQ types are not supported)",
        )
    for name in gg.tensors:
        if name != "rope_freqs.weight":
            mlx_name(name)


def load_weights(gg: GGUFFile) -> tuple[dict[str, mx.array], dict[str, Any] | None]:
    """MLX weights under mlx-lm llama names, and the "quantization" config entry (or None)."""
    import mlx.core as mx

    try:
        raw = mx.load(str(gg.path))
    except (RuntimeError, ValueError) as e:
        raise ModelError(
            "model_load_failed", f"cannot read the tensors of {gg.path.name}: {e}"
        ) from e
    assert isinstance(raw, dict)
    weights: dict[str, mx.array] = {}
    bits_seen: Counter[int] = Counter()
    for name, info in gg.tensors.items():
        if name == "rope_freqs.weight":
            continue  # folded into config["rope_scaling"]
        target = mlx_name(name)
        ggml_type = GGMLType(info.ggml_type)
        if ggml_type == GGMLType.BF16:
            weights[target] = mx.array(_read_plain(gg, name)).view(mx.bfloat16)
            continue
        w = raw.get(name)
        if w is None:
            raise ModelError("model_load_failed", f"mx.load returned no tensor {name!r}")
        stem = name.rpartition(".")[0]
        if ggml_type in (GGMLType.Q4_0, GGMLType.Q4_1, GGMLType.Q8_0):
            scales, biases = raw.get(f"{stem}.scales"), raw.get(f"{stem}.biases")
            if scales is None or biases is None:
                raise ModelError(
                    "model_load_failed", f"{name}: quantized tensor without scales/biases"
                )
            in_dims = info.shape[-1]
            bits = 32 * w.shape[-1] // in_dims
            if in_dims // scales.shape[-1] != 32 or bits not in (4, 8):
                raise ModelError(
                    "model_load_failed",
                    f"{name}: unexpected quantized layout {w.shape}/{scales.shape}",
                )
            bits_seen[bits] += 1
            base = target.rpartition(".")[0]
            weights[target] = w
            weights[f"{base}.scales"] = scales
            weights[f"{base}.biases"] = biases
        else:
            if tuple(w.shape) != info.shape:
                raise ModelError(
                    "model_load_failed", f"{name}: shape {w.shape} != header {info.shape}"
                )
            weights[target] = w
    if not bits_seen:
        return weights, None
    # the most common width is the default; mlx-lm infers the others (e.g. a Q8_0 embedding in a
    # Q4_1 file) from each tensor's packed width
    return weights, {"group_size": 32, "bits": bits_seen.most_common(1)[0][0]}


def _check_layers(weights: dict[str, Any], n_layers: int, tied: bool) -> None:
    need = ["model.embed_tokens.weight", "model.norm.weight"] + ([] if tied else ["lm_head.weight"])
    for i in range(n_layers):
        need += [f"model.layers.{i}.{v}.weight" for v in _LAYER_NAMES.values()]
    missing = [n for n in need if n not in weights]
    if missing:
        raise ModelError(
            "model_load_failed", f"the GGUF file lacks {len(missing)} tensors, e.g. {missing[:3]}"
        )


def source_record(path: Path, sha256: str, gg: GGUFFile | None = None) -> dict[str, Any]:
    st = path.stat()
    rec: dict[str, Any] = {
        "type": "gguf",
        "file": path.name,
        "path": str(path.resolve()),
        "sha256": sha256,
        "size": st.st_size,
        "mtime": st.st_mtime,
    }
    if gg is not None:
        rec["tensor_types"] = dict(gg.type_counts())
        rec["weight_type"] = gg.weight_type
        rec["name"] = gg.metadata.get("general.name")
    return rec


def read_manifest(folder: Path) -> dict[str, Any] | None:
    try:
        data = json.loads((folder / MANIFEST).read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def is_current_conversion(folder: Path, src: Path) -> bool:
    """True when `folder` was converted from `src` as it is now (same file, size and mtime)."""
    manifest = read_manifest(folder)
    if not manifest or not (folder / "config.json").is_file():
        return False
    rec = manifest.get("source") or {}
    try:
        st = src.stat()
    except OSError:
        return False
    return (
        rec.get("path") == str(src.resolve())
        and rec.get("size") == st.st_size
        and rec.get("mtime") == st.st_mtime
    )


def convert_gguf(
    src: str | Path,
    dest: str | Path,
    *,
    expected_sha256: str | None = None,
    cancel: Callable[[], bool] | None = None,
    extra_manifest: dict[str, Any] | None = None,
) -> Path:
    """Convert the llama GGUF file `src` into the MLX folder `dest` (replaced atomically if present).

    `expected_sha256`: refuse a file whose hash differs (a corrupted or substituted download).
    `cancel`: polled while hashing; a cancelled conversion leaves `dest` as it was.
    Raises `ModelError` (`model_load_failed` for bad files, `model_not_found` for a missing one).
    """
    src, dest = Path(src), Path(dest)
    if not src.is_file():
        raise ModelError("model_not_found", f"GGUF file {src} does not exist")
    started = time.monotonic()
    sha = file_sha256(src, cancel)
    if expected_sha256 and sha != expected_sha256.lower():
        raise ModelError(
            "model_load_failed",
            f"{src.name} is corrupted or not the expected file: sha256 {sha}, expected {expected_sha256}",
        )
    try:
        gg = read_gguf(src)
    except GGUFFormatError as e:
        raise ModelError("model_load_failed", f"{src.name}: {e}") from e
    check_supported(gg)
    config = build_config(gg)
    tokenizer = build_tokenizer(gg.metadata)
    weights, quantization = load_weights(gg)
    _check_layers(weights, config["num_hidden_layers"], config["tie_word_embeddings"])
    if quantization:
        config["quantization"] = quantization
    if cancel is not None and cancel():
        raise ModelError("cancelled", f"conversion of {src.name} was cancelled")

    from impetus import __version__

    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", suffix=".partial", dir=dest.parent))
    except OSError as e:  # no permission to write there
        raise ModelError(
            "model_load_failed", f"cannot write the converted model to {dest.parent}: {e}"
        ) from e
    try:
        _save_weights(tmp / "model.safetensors", weights)
        del weights
        (tmp / "config.json").write_text(json.dumps(config, indent=2) + "\n")
        tokenizer.save(str(tmp / "tokenizer.json"))
        tok_cfg = tokenizer_config(gg.metadata, config["max_position_embeddings"])
        (tmp / "tokenizer_config.json").write_text(
            json.dumps(tok_cfg, indent=2, ensure_ascii=False) + "\n"
        )
        manifest = {
            "format": 1,
            "source": source_record(src, sha, gg),
            "converted_by": f"impetus {__version__}",
            "converted_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "convert_seconds": round(time.monotonic() - started, 3),
            **(extra_manifest or {}),
        }
        # the manifest is written last: a folder with it is a finished conversion
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
        replace_dir(tmp, dest)
    except OSError as e:  # disk full, permissions: nothing half-written stays behind
        shutil.rmtree(tmp, ignore_errors=True)
        raise ModelError(
            "model_load_failed", f"cannot write the converted model to {dest.parent}: {e}"
        ) from e
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return dest


def _save_weights(path: Path, weights: dict[str, Any]) -> None:
    import mlx.core as mx

    try:
        mx.save_safetensors(str(path), weights, metadata={"format": "mlx"})
    except RuntimeError as e:
        # MLX reports a failed write without its errno: name the likely cause from the free space
        need = sum(int(v.nbytes) for v in weights.values())
        free = shutil.disk_usage(path.parent).free
        if free < need:
            raise OSError(errno.ENOSPC, f"{os.strerror(errno.ENOSPC)} ({e})", str(path)) from e
        raise OSError(errno.EIO, str(e), str(path)) from e


def replace_dir(new: Path, dest: Path) -> None:
    """Put the folder `new` at `dest`, removing what was there; each step is a rename."""
    old = None
    if dest.exists() or dest.is_symlink():
        old = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", suffix=".old", dir=dest.parent))
        os.rename(dest, old / "x")
    try:
        os.rename(new, dest)
    except BaseException:
        if old is not None:
            os.rename(old / "x", dest)
        raise
    finally:
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
