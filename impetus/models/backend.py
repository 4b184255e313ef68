"""Which MLX backend this process runs on, and the dtype models are served in by default."""

from __future__ import annotations

from typing import Literal

from impetus.config import Settings

Backend = Literal["cpu", "cuda", "metal"]


def detect_backend() -> Backend:
    """The MLX backend this process would run on (imports mlx.core)."""
    import mlx.core as mx

    if mx.metal.is_available():
        return "metal"
    cuda = getattr(mx, "cuda", None)
    if cuda is not None and cuda.is_available():
        return "cuda"
    return "cpu"


def serving_dtype_for_backend(backend: str) -> str:
    """The dtype the engine serves in by default: float32 on CPU (BLAS-fast, and quantized kernels
    are slow there), bfloat16 on CUDA, the stored (native) weights on Metal."""
    return {"cpu": "float32", "cuda": "bfloat16", "metal": "native"}.get(backend, "float32")


def serving_dtype(settings: Settings, backend: str | None = None) -> str:
    """`settings.dtype`, or the backend's default when it is "auto"."""
    if settings.dtype != "auto":
        return settings.dtype
    return serving_dtype_for_backend(backend or detect_backend())
