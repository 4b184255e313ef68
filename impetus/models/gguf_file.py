"""Reading the header of a GGUF file: metadata and tensor directory, no tensor data.

`mx.load` reads GGUF tensors but does not say which GGML type each one had, so an unsupported type
(a K-quant) would come back as silently wrong float16 or as an opaque error. This reader walks the
header in pure Python so that the converter can name the problem, the registry can describe a GGUF
file (parameters, context, quantization) without MLX, and a truncated download is caught before
any tensor is read. Format: https://github.com/ggml-org/ggml/blob/master/docs/gguf.md
"""

from __future__ import annotations

import math
import struct
from collections import Counter
from dataclasses import dataclass
from enum import IntEnum
from pathlib import Path
from typing import Any, BinaryIO

GGUF_MAGIC = b"GGUF"


class GGMLType(IntEnum):
    F32 = 0
    F16 = 1
    Q4_0 = 2
    Q4_1 = 3
    Q5_0 = 6
    Q5_1 = 7
    Q8_0 = 8
    Q8_1 = 9
    Q2_K = 10
    Q3_K = 11
    Q4_K = 12
    Q5_K = 13
    Q6_K = 14
    Q8_K = 15
    IQ2_XXS = 16
    IQ2_XS = 17
    IQ3_XXS = 18
    IQ1_S = 19
    IQ4_NL = 20
    IQ3_S = 21
    IQ2_S = 22
    IQ4_XS = 23
    I8 = 24
    I16 = 25
    I32 = 26
    I64 = 27
    F64 = 28
    IQ1_M = 29
    BF16 = 30
    TQ1_0 = 34
    TQ2_0 = 35
    MXFP4 = 39


_QK_K = 256
# type -> (elements per block, bytes per block), as in ggml's type traits
BLOCK_SIZES: dict[GGMLType, tuple[int, int]] = {
    GGMLType.F32: (1, 4),
    GGMLType.F16: (1, 2),
    GGMLType.BF16: (1, 2),
    GGMLType.F64: (1, 8),
    GGMLType.I8: (1, 1),
    GGMLType.I16: (1, 2),
    GGMLType.I32: (1, 4),
    GGMLType.I64: (1, 8),
    GGMLType.Q4_0: (32, 18),
    GGMLType.Q4_1: (32, 20),
    GGMLType.Q5_0: (32, 22),
    GGMLType.Q5_1: (32, 24),
    GGMLType.Q8_0: (32, 34),
    GGMLType.Q8_1: (32, 40),
    GGMLType.Q2_K: (_QK_K, 2 + 2 + _QK_K // 16 + _QK_K // 4),
    GGMLType.Q3_K: (_QK_K, 2 + _QK_K // 4 + _QK_K // 8 + 12),
    GGMLType.Q4_K: (_QK_K, 2 + 2 + _QK_K // 2 + 12),
    GGMLType.Q5_K: (_QK_K, 2 + 2 + _QK_K // 2 + _QK_K // 8 + 12),
    GGMLType.Q6_K: (_QK_K, 2 + _QK_K // 2 + _QK_K // 4 + _QK_K // 16),
    GGMLType.Q8_K: (_QK_K, 4 + _QK_K + _QK_K // 8),
    GGMLType.IQ2_XXS: (_QK_K, 2 + _QK_K // 4),
    GGMLType.IQ2_XS: (_QK_K, 2 + _QK_K // 4 + _QK_K // 32),
    GGMLType.IQ3_XXS: (_QK_K, 2 + _QK_K // 4 + _QK_K // 8),
    GGMLType.IQ1_S: (_QK_K, 2 + _QK_K // 8 + _QK_K // 16),
    GGMLType.IQ4_NL: (32, 18),
    GGMLType.IQ3_S: (_QK_K, 2 + _QK_K // 4 + _QK_K // 8 + _QK_K // 32 + 4),
    GGMLType.IQ2_S: (_QK_K, 2 + _QK_K // 4 + _QK_K // 16),
    GGMLType.IQ4_XS: (_QK_K, 2 + 2 + _QK_K // 2 + _QK_K // 64),
    GGMLType.IQ1_M: (_QK_K, _QK_K // 8 + _QK_K // 16 + _QK_K // 32),
    GGMLType.TQ1_0: (_QK_K, 2 + 4 * 13),
    GGMLType.TQ2_0: (_QK_K, 2 + 64),
    GGMLType.MXFP4: (32, 17),
}


def type_name(ggml_type: int) -> str:
    try:
        return GGMLType(ggml_type).name
    except ValueError:
        return f"type {ggml_type}"


class GGUFFormatError(ValueError):
    """The file is not a GGUF file, or its header is damaged or truncated."""


@dataclass(frozen=True)
class GGUFTensorInfo:
    name: str
    shape: tuple[
        int, ...
    ]  # row-major (numpy / MLX) order: GGUF stores ne[0] (the row length) first
    ggml_type: int
    offset: int  # from the start of the tensor data section
    nbytes: int | None  # None for a type this reader does not know

    @property
    def type_name(self) -> str:
        return type_name(self.ggml_type)

    @property
    def n_elements(self) -> int:
        return math.prod(self.shape)


@dataclass
class GGUFFile:
    path: Path
    version: int
    metadata: dict[str, Any]
    tensors: dict[str, GGUFTensorInfo]
    data_offset: int
    file_size: int
    alignment: int = 32

    @property
    def architecture(self) -> str:
        return str(self.metadata.get("general.architecture", ""))

    def arch_value(self, key: str, default: Any = None) -> Any:
        """`{architecture}.{key}` from the metadata, e.g. `arch_value("context_length")`."""
        return self.metadata.get(f"{self.architecture}.{key}", default)

    @property
    def n_parameters(self) -> int:
        return sum(t.n_elements for t in self.tensors.values())

    def type_counts(self) -> Counter[str]:
        """How many tensors of each GGML type; the quantization of a file at a glance."""
        return Counter(t.type_name for t in self.tensors.values())

    @property
    def weight_type(self) -> str:
        """The most common type among the 2-D tensors: what people call the file's quantization."""
        counts = Counter(t.type_name for t in self.tensors.values() if len(t.shape) >= 2)
        return counts.most_common(1)[0][0] if counts else ""


# GGUF metadata value types
_UINT8, _INT8, _UINT16, _INT16, _UINT32, _INT32, _FLOAT32, _BOOL = range(8)
_STRING, _ARRAY, _UINT64, _INT64, _FLOAT64 = range(8, 13)
_SCALAR_FORMATS = {
    _UINT8: "B",
    _INT8: "b",
    _UINT16: "H",
    _INT16: "h",
    _UINT32: "I",
    _INT32: "i",
    _FLOAT32: "f",
    _BOOL: "?",
    _UINT64: "Q",
    _INT64: "q",
    _FLOAT64: "d",
}


class _Reader:
    def __init__(self, f: BinaryIO, size: int) -> None:
        self.f = f
        self.size = size

    def read(self, n: int) -> bytes:
        data = self.f.read(n)
        if len(data) != n:
            raise GGUFFormatError("the file ends inside its header (truncated download?)")
        return data

    def unpack(self, fmt: str) -> Any:
        fmt = "<" + fmt
        return struct.unpack(fmt, self.read(struct.calcsize(fmt)))[0]

    def count(self, what: str, item_bytes: int = 1) -> int:
        # Counts come from the file: bound them by the bytes left so that a damaged header gives a
        # clear error instead of a multi-gigabyte allocation.
        n = int(self.unpack("Q"))
        if n * item_bytes > self.size - self.f.tell():
            raise GGUFFormatError(f"damaged header: {what} of {n} items is larger than the file")
        return n

    def string(self) -> str:
        raw = self.read(self.count("a string"))
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError as e:
            raise GGUFFormatError(f"damaged header: a string is not UTF-8 ({e})") from e

    def value(self, vtype: int) -> Any:
        if vtype in _SCALAR_FORMATS:
            return self.unpack(_SCALAR_FORMATS[vtype])
        if vtype == _STRING:
            return self.string()
        if vtype == _ARRAY:
            item_type = int(self.unpack("I"))
            if item_type in _SCALAR_FORMATS:
                fmt = _SCALAR_FORMATS[item_type]
                width = struct.calcsize(fmt)
                n = self.count("an array", width)
                return list(struct.unpack(f"<{n}{fmt}", self.read(n * width)))
            n = self.count("an array")
            return [self.value(item_type) for _ in range(n)]
        raise GGUFFormatError(f"damaged header: unknown metadata value type {vtype}")


def read_gguf(path: str | Path) -> GGUFFile:
    """Parse the header of `path`; raise `GGUFFormatError` if it is not a complete GGUF file."""
    path = Path(path)
    size = path.stat().st_size
    with open(path, "rb") as f:
        r = _Reader(f, size)
        if size < 24 or r.read(4) != GGUF_MAGIC:
            raise GGUFFormatError(f"{path.name} is not a GGUF file (no GGUF magic number)")
        version = int(r.unpack("I"))
        if version not in (2, 3):
            raise GGUFFormatError(f"GGUF version {version} is not supported (2 and 3 are)")
        n_tensors = r.count("the tensor directory", 24)
        n_kv = r.count("the metadata", 12)
        metadata: dict[str, Any] = {}
        for _ in range(n_kv):
            key = r.string()
            metadata[key] = r.value(int(r.unpack("I")))
        tensors: dict[str, GGUFTensorInfo] = {}
        for _ in range(n_tensors):
            name = r.string()
            n_dims = int(r.unpack("I"))
            if n_dims > 8:
                raise GGUFFormatError(f"damaged header: tensor {name!r} has {n_dims} dimensions")
            dims = [int(r.unpack("Q")) for _ in range(n_dims)]
            ggml_type = int(r.unpack("I"))
            offset = int(r.unpack("Q"))
            tensors[name] = GGUFTensorInfo(
                name=name,
                shape=tuple(reversed(dims)),
                ggml_type=ggml_type,
                offset=offset,
                nbytes=_nbytes(ggml_type, dims),
            )
        alignment = int(metadata.get("general.alignment", 32))
        if alignment <= 0 or alignment & (alignment - 1):
            raise GGUFFormatError(f"damaged header: alignment {alignment} is not a power of two")
        data_offset = -(-f.tell() // alignment) * alignment
    for t in tensors.values():
        if t.nbytes is not None and data_offset + t.offset + t.nbytes > size:
            raise GGUFFormatError(
                f"tensor {t.name!r} extends past the end of {path.name} "
                f"({size} bytes): the file is truncated or corrupted"
            )
    return GGUFFile(
        path=path,
        version=version,
        metadata=metadata,
        tensors=tensors,
        data_offset=data_offset,
        file_size=size,
        alignment=alignment,
    )


def _nbytes(ggml_type: int, dims: list[int]) -> int | None:
    try:
        block, block_bytes = BLOCK_SIZES[GGMLType(ggml_type)]
    except (ValueError, KeyError):
        return None
    n = math.prod(dims)
    if dims and dims[0] % block:
        raise GGUFFormatError(
            f"damaged header: a row of {dims[0]} is not whole {type_name(ggml_type)} blocks"
        )
    return n // block * block_bytes
