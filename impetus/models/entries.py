"""Describing a model for listings: size, parameters, quantization, context, memory to serve.

Read from headers and configs only (nothing is loaded, converted or downloaded); a GGUF file's
summary is cached by path, mtime and size.
"""

from __future__ import annotations

from functools import lru_cache

from impetus.models import folder as mf
from impetus.models.gguf import is_current_conversion, read_manifest
from impetus.models.gguf_file import GGUFFormatError, read_gguf
from impetus.models.lookup import Found
from impetus.models.types import RegistryEntry


@lru_cache(maxsize=64)
def _gguf_summary(path: str, mtime: float, size: int) -> tuple[int, int | None, str, str]:
    """(parameters, context length, weight type, architecture) of a GGUF file; cached by mtime."""
    gg = read_gguf(path)
    ctx = gg.arch_value("context_length")
    return gg.n_parameters, int(ctx) if ctx else None, gg.weight_type, gg.architecture


def _bare(found: Found, dtype: str, description: str) -> RegistryEntry:
    """An entry with nothing on disk to read yet (a built-in whose package is not installed)."""
    assert found.builtin is not None
    b = found.builtin
    return RegistryEntry(
        id=b.id, kind=b.kind, source="builtin", description=description, serving_dtype=dtype
    )


def gguf_entry(found: Found, dtype: str, description: str = "") -> RegistryEntry:
    assert found.gguf is not None
    st = found.gguf.stat()
    entry = RegistryEntry(
        id=found.id,
        kind=found.builtin.kind if found.builtin else "chat",
        source=found.source,
        description=description,
        size_bytes=st.st_size,
        created=int(st.st_mtime),
        serving_dtype=dtype,
        downloaded=True,
        source_path=str(found.gguf),
    )
    try:
        params, ctx, wtype, arch = _gguf_summary(str(found.gguf), st.st_mtime, st.st_size)
    except (GGUFFormatError, OSError) as e:
        entry.description = f"{description} (unreadable GGUF: {e})".strip()
        return entry
    entry.parameters, entry.context_length, entry.architecture = params, ctx, arch
    entry.quantization = f"GGUF {wtype}"
    entry.memory_bytes = st.st_size if dtype == "native" else params * mf.DTYPE_BYTES.get(dtype, 4)
    return entry


def folder_entry(found: Found, dtype: str, description: str = "") -> RegistryEntry:
    folder = found.folder
    assert folder is not None
    config = mf.read_config(folder) or {}
    entry = RegistryEntry(
        id=found.id,
        kind=found.builtin.kind if found.builtin else mf.kind_of(config, folder),
        source=found.source,
        description=description,
        architecture=config.get("model_type"),
        quantization=mf.quantization_label(config),
        context_length=mf.context_length(config),
        size_bytes=mf.folder_bytes(folder),
        created=int(folder.stat().st_mtime),
        serving_dtype=dtype,
        downloaded=True,
        path=str(folder),
        source_path=str(found.gguf) if found.gguf else None,
    )
    manifest = read_manifest(folder) or {}
    src = manifest.get("source") or {}
    if src.get("type") == "gguf" and src.get("weight_type"):
        entry.quantization = f"GGUF {src['weight_type']} ({entry.quantization})"
    stats = mf.weight_stats(folder, config)
    if stats is not None:
        entry.parameters = stats.parameters
        entry.memory_bytes = (
            stats.stored_bytes
            if dtype == "native"
            else stats.float_bytes.get(dtype, stats.stored_bytes)
        )
    return entry


def entry(found: Found, dtype: str) -> RegistryEntry:
    """The entry of a found model, with memory estimates for serving in `dtype`."""
    b = found.builtin
    description = b.description if b else ""
    if b is not None and b.is_gguf:  # GGUF built-in: show the converted folder once it exists
        if found.folder is not None and mf.is_model_folder(found.folder):
            e = folder_entry(found, dtype, description)
        elif found.gguf is not None:
            e = gguf_entry(found, dtype, description)
        else:
            e = _bare(found, dtype, description)
        e.downloaded = found.gguf is not None or e.path is not None
        return e
    if b is not None and found.folder is None:
        return _bare(found, dtype, description)
    if found.gguf is not None and not (
        found.folder is not None and is_current_conversion(found.folder, found.gguf)
    ):
        return gguf_entry(found, dtype, description)
    return folder_entry(found, dtype, description)
