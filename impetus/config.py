"""One settings object for the whole of impetus.

`impetus serve` fills it from CLI flags, the Jupyter extension from its traitlets, tests build it
directly. Environment variables (IMPETUS_*) give the defaults so that a kernel, a script and the
engine process started by either agree on where models live.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

import psutil
from pydantic import BaseModel, Field

DType = Literal["auto", "native", "float32", "bfloat16", "float16"]


def impetus_home() -> Path:
    return Path(os.environ.get("IMPETUS_HOME", Path.home() / ".cache" / "impetus"))


def default_memory_budget() -> int:
    """A fraction of the machine's memory that loaded models may take (weights + KV cache)."""
    return int(
        psutil.virtual_memory().total * float(os.environ.get("IMPETUS_MEMORY_FRACTION", 0.6))
    )


class Settings(BaseModel):
    """Every knob of the engine and the api layer. Field names are the CLI flags (`--max-queue`)."""

    home: Path = Field(
        default_factory=impetus_home, description="impetus state: models, keys, bench db"
    )
    model_dir: Path | None = Field(
        None, description="where converted / downloaded models live (default: HOME/models)"
    )
    models: list[str] = Field(
        default_factory=lambda: [
            m for m in os.environ.get("IMPETUS_MODELS", "").split(",") if m.strip()
        ],
        description="models to load at start-up (default: $IMPETUS_MODELS, comma-separated)",
    )
    dtype: DType = Field(
        "auto", description="serving dtype: auto picks the fastest for the backend"
    )
    memory_budget: int = Field(
        default_factory=default_memory_budget, description="bytes loaded models may use"
    )
    keep_alive: float = Field(
        300.0, description="seconds an idle, unpinned model stays loaded (<0: forever)"
    )
    max_batch: int = Field(64, ge=1, description="sequences decoded together")
    prefill_batch: int = Field(8, ge=1, description="prompts prefilled together")
    prefill_step: int = Field(
        512, ge=16, description="prompt tokens per engine step (chunked prefill)"
    )
    prompt_cache_bytes: int = Field(1 << 30, ge=0, description="bytes of KV cache kept for reuse")
    max_queue: int = Field(512, ge=1, description="requests waiting or running before 429")
    max_tokens_default: int = Field(4096, ge=1, description="max_tokens when a request sets none")
    request_timeout: float = Field(600.0, gt=0, description="seconds a request may run")
    max_body_bytes: int = Field(8 << 20, description="largest request body")
    allow_model_paths: bool = Field(
        False,
        description="requests may name any model folder on disk by its path (admin loads always may)",
    )
    blas: Literal["auto", "off"] = Field(
        "auto", description="load an optimized BLAS into the engine (Linux CPU)"
    )
    engine_start_timeout: float = Field(120.0, description="seconds to wait for the engine process")
    # --- the HTTP surface (impetus serve, the Jupyter extension) ---
    host: str = Field("127.0.0.1", description="address `impetus serve` listens on")
    port: int = Field(
        8000, ge=0, le=65535, description="port `impetus serve` listens on (0: any free port)"
    )
    # exclude: never serialized, so never on the engine process's command line or in a dump
    api_keys: list[str] = Field(
        default_factory=list,
        repr=False,
        exclude=True,
        description="keys with full access to `impetus serve` (admin included)",
    )
    no_auth: bool = Field(
        False, description="serve without keys (refused unless host is a loopback address)"
    )
    shutdown_grace: float = Field(
        30.0, ge=0, description="seconds in-flight requests get to finish on SIGTERM"
    )
    allow_origin: str = Field(
        "", description="CORS: an origin (or *) browsers may call the API from"
    )

    @property
    def models_path(self) -> Path:
        return self.model_dir or (self.home / "models")

    def env_for_engine(self) -> dict[str, str]:
        env = dict(os.environ)
        env["IMPETUS_HOME"] = str(self.home)
        return env
