"""Token counting with the model's own tokenizer, for endpoints that send no `usage`.

Only ever true token counts: a benchmark that divides characters by four measures nothing.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any, Protocol


class Tokenizer(Protocol):
    """What the bench needs of a Hugging Face tokenizer."""

    all_special_ids: list[int]

    def encode(self, text: str, add_special_tokens: bool = ...) -> list[int]: ...

    def decode(self, ids: list[int], skip_special_tokens: bool = ...) -> str: ...

    def __len__(self) -> int: ...


def tokenizer_folder(ref: str | Path) -> Path:
    """A local folder, or an id impetus' model registry knows (`smollm2-135m`: its converted
    folder, made on first use). Never downloads."""
    folder = Path(ref).expanduser()
    if folder.is_dir():
        return folder
    from impetus.config import Settings
    from impetus.models.registry import resolve

    try:
        return Path(resolve(str(ref), Settings()).path)
    except Exception as exc:
        raise FileNotFoundError(
            f"no tokenizer at {ref!r}: not a folder, nor a model id ({exc})"
        ) from exc


def load_tokenizer(path: str | Path) -> Any:
    """transformers' AutoTokenizer from a local folder (tokenizer.json / tokenizer_config.json)
    or from the folder of an impetus model id.

    Local files only: a benchmark must not stall on the network. transformers warns at import
    that PyTorch is missing; tokenizers don't need it, so that advice is silenced.
    """
    folder = tokenizer_folder(path)
    os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
    logging.getLogger("transformers").setLevel(logging.ERROR)
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(folder), local_files_only=True)


def count_tokens(tokenizer: Tokenizer, text: str) -> int:
    """Tokens of generated text, without the BOS/EOS the tokenizer may add around a prompt."""
    return len(tokenizer.encode(text, add_special_tokens=False))
