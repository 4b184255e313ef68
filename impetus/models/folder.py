"""Inspecting an MLX model folder without loading it (and without importing MLX).

What the registry shows for a folder (architecture, parameters, quantization, memory when loaded)
comes from config.json and the safetensors headers, which are a few KB to read however large the
weights are.
"""

from __future__ import annotations

import contextlib
import fcntl
import importlib.util
import json
import math
import struct
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

from impetus.models.types import Kind

# model_types served as embedding models by the engine's encoder (impetus.engine.embeddings)
EMBEDDING_MODEL_TYPES = {"bert"}

_DTYPE_BYTES = {
    "F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "U32": 4,
    "I16": 2, "U16": 2, "I8": 1, "U8": 1, "BOOL": 1, "F8_E4M3": 1, "F8_E5M2": 1,
}  # fmt: skip
DTYPE_BYTES = {"float32": 4, "bfloat16": 2, "float16": 2}


def read_config(folder: Path) -> dict[str, Any] | None:
    try:
        cfg = json.loads((folder / "config.json").read_text())
    except (OSError, ValueError):
        return None
    return cfg if isinstance(cfg, dict) else None


@cache
def _mlx_lm_models_dir() -> Path | None:
    spec = importlib.util.find_spec("mlx_lm")
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations))) / "models"


@cache
def _mlx_lm_remapping() -> dict[str, str]:
    # importing mlx_lm.utils costs seconds (it imports transformers): only for names not found as
    # a module file, and once per process
    try:
        from mlx_lm.utils import MODEL_REMAPPING
    except ImportError:
        return {}
    return dict(MODEL_REMAPPING)


def supported_model_type(model_type: str) -> bool:
    """True when mlx-lm has an implementation for `model_type` (or the engine's encoder does)."""
    if not model_type or not model_type.replace("_", "").replace("-", "").isalnum():
        return False
    if model_type in EMBEDDING_MODEL_TYPES:
        return True
    models = _mlx_lm_models_dir()
    if models is None:
        return False
    if (models / f"{model_type}.py").is_file():
        return True
    target = _mlx_lm_remapping().get(model_type)
    return target is not None and (models / f"{target}.py").is_file()


def kind_of(config: dict[str, Any], folder: Path | None = None) -> Kind:
    if config.get("model_type") in EMBEDDING_MODEL_TYPES:
        return "embedding"
    if folder is not None and (folder / "modules.json").is_file():  # a sentence-transformers folder
        return "embedding"
    return "chat"


def weight_files(folder: Path) -> list[Path]:
    """The safetensors files mlx-lm loads (`model*.safetensors`), all shards present, or []."""
    index = folder / "model.safetensors.index.json"
    if index.is_file():
        try:
            shards = set(json.loads(index.read_text())["weight_map"].values())
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            return []
        files = [folder / s for s in sorted(shards)]
        return files if all(f.is_file() for f in files) else []
    return sorted(p for p in folder.glob("model*.safetensors") if p.is_file())


def problem(folder: Path) -> str | None:
    """Why `folder` is not a loadable MLX model folder, or None when it is."""
    if not folder.is_dir():
        return f"{folder} is not a folder"
    config = read_config(folder)
    if config is None:
        return "it has no readable config.json"
    model_type = str(config.get("model_type", ""))
    if not supported_model_type(model_type):
        return f"its model_type {model_type or '(none)'!r} is not supported by mlx-lm"
    if not weight_files(folder):
        return "it has no complete set of safetensors weights (model*.safetensors)"
    if not any(
        (folder / f).is_file()
        for f in ("tokenizer.json", "tokenizer.model", "tokenizer_config.json", "vocab.txt")
    ):
        return "it has no tokenizer files"
    return None


def is_model_folder(folder: Path) -> bool:
    return problem(folder) is None


def safetensors_header(path: Path) -> dict[str, Any]:
    with open(path, "rb") as f:
        head = f.read(8)
        if len(head) != 8:
            raise ValueError(f"{path.name} is not a safetensors file")
        (n,) = struct.unpack("<Q", head)
        if n > 100_000_000:
            raise ValueError(f"{path.name} has an implausible header")
        header = json.loads(f.read(n))
    if not isinstance(header, dict):
        raise ValueError(f"{path.name} has a damaged header")
    header.pop("__metadata__", None)
    return header


@dataclass
class WeightStats:
    parameters: int  # logical parameters (quantized weights counted unpacked)
    stored_bytes: int  # tensor bytes as stored
    float_bytes: dict[str, int]  # bytes if every tensor were this dtype (dequantized)
    quantized_tensors: int
    dtypes: dict[str, int]  # stored dtype -> tensor count


def weight_stats(folder: Path, config: dict[str, Any]) -> WeightStats | None:
    """Parameters and sizes from the safetensors headers; None if they cannot be read."""
    quant = config.get("quantization") or config.get("quantization_config") or {}
    group_default = int(quant.get("group_size", 64)) if isinstance(quant, dict) else 64
    tensors: dict[str, tuple[str, list[int]]] = {}
    try:
        for f in weight_files(folder):
            for name, meta in safetensors_header(f).items():
                tensors[name] = (str(meta["dtype"]), list(meta["shape"]))
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if not tensors:
        return None
    params = stored = quantized = 0
    dtypes: dict[str, int] = {}
    for name, (dtype, shape) in tensors.items():
        stored += math.prod(shape) * _DTYPE_BYTES.get(dtype, 4)
        dtypes[dtype] = dtypes.get(dtype, 0) + 1
        if name.endswith((".scales", ".biases")) and f"{name.rsplit('.', 1)[0]}.weight" in tensors:
            continue
        scales = (
            tensors.get(f"{name.rsplit('.', 1)[0]}.scales") if name.endswith(".weight") else None
        )
        if scales is not None and dtype == "U32":
            layer = name.rsplit(".", 1)[0]
            override = quant.get(layer) if isinstance(quant, dict) else None
            group = (
                int(override.get("group_size", group_default))
                if isinstance(override, dict)
                else group_default
            )
            params += math.prod(scales[1][:-1]) * scales[1][-1] * group
            quantized += 1
        else:
            params += math.prod(shape)
    return WeightStats(
        parameters=params,
        stored_bytes=stored,
        float_bytes={k: params * v for k, v in DTYPE_BYTES.items()},
        quantized_tensors=quantized,
        dtypes=dtypes,
    )


def context_length(config: dict[str, Any]) -> int | None:
    text = config.get("text_config")
    for cfg in (config, text if isinstance(text, dict) else {}):
        for key in (
            "max_position_embeddings",
            "max_sequence_length",
            "n_positions",
            "seq_length",
            "n_ctx",
        ):
            v = cfg.get(key)
            if isinstance(v, int) and v > 0:
                return v
    return None


def quantization_label(config: dict[str, Any]) -> str | None:
    q = config.get("quantization") or config.get("quantization_config")
    if not isinstance(q, dict):
        return None
    mode = q.get("mode", "affine")
    if "bits" in q:
        return f"{q['bits']}-bit {mode}, group {q.get('group_size', 64)}"
    return str(q.get("quant_method", "quantized"))


def folder_bytes(folder: Path) -> int:
    """Bytes on disk (symlinks followed once: the HF cache links snapshot files to blobs)."""
    seen: set[tuple[int, int]] = set()
    total = 0
    for p in folder.rglob("*"):
        try:
            st = p.stat()
        except OSError:
            continue
        if p.is_file() and (st.st_dev, st.st_ino) not in seen:
            seen.add((st.st_dev, st.st_ino))
            total += st.st_size
    return total


@contextlib.contextmanager
def exclusive_lock(
    models_path: Path, name: str, cancel: Callable[[], bool] | None = None
) -> Iterator[None]:
    """One writer per model at a time, across processes (the engine, the api, the CLI).

    Waits for the holder to finish; `cancel` is polled while waiting.
    """
    from impetus.models.errors import ModelError

    locks = models_path / ".locks"
    locks.mkdir(parents=True, exist_ok=True)
    with open(locks / f"{name.replace('/', '--')}.lock", "w") as f:
        while True:
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if cancel is not None and cancel():
                    raise ModelError(
                        "cancelled", f"cancelled while waiting for another pull of {name}"
                    ) from None
                time.sleep(0.1)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)
