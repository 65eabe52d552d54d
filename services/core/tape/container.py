"""The tape's container: object layout, format versions, the index of every object, errors, TensorInfo.

Every object (step-major segment or time-major part) ends with an index and a fixed trailer::

    [chunks][index = zstd(u32 header_len | header JSON | int64 table[rows, 5])][trailer]
    table row = (offset, length, crc32 of the compressed chunk, mode, param)
    trailer = b"NLTSEG01" | u64 index_offset | u64 index_length | u32 index_crc32 | u32 reserved
"""

from __future__ import annotations

import hashlib
import json
import struct
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import zstandard

MANIFEST_NAME = "manifest.json"
COMPACTION_NAME = "compaction.json"
SEGMENTS_DIR = "segments/"
COMPACT_DIR = "compact/"
FORMAT = 1
KIND_TENSOR_MAJOR = "tensor-major"  # legacy (read-only)
KIND_STEP_MAJOR = "step-major"
KIND_TIME_MAJOR = "time-major"
CODEC_V1 = "xor-byteshuffle-zstd"
CODEC = "lanes-pred-zigzag-byteshuffle-zstd"
CODEC_LOSSY = "lanes-grid-pred-zigzag-byteshuffle-zstd"
_TRAILER = struct.Struct("<8sQQII")
_TRAILER_MAGIC = b"NLTSEG01"
_SUPPORTED_KINDS = (KIND_TENSOR_MAJOR, KIND_STEP_MAJOR)
_ROW = 5
DEFAULT_TM_BLOCK_LANES = 4096


class TapeCorrupt(Exception):
    """The tape's stored bytes disagree with its manifest or index (size, checksum, format)."""


class UnknownTensor(KeyError):
    """A tensor name the tape does not hold."""

    def __str__(self) -> str:  # KeyError would repr() the message, adding quotes
        return str(self.args[0]) if self.args else ""


class StepNotCaptured(IndexError, ValueError):
    """A step the tape does not hold (never captured, or not committed yet)."""


class _SegmentGone(Exception):
    """A listed object is missing: compaction may have replaced it since the indexes were read."""

    def __init__(self, key: str) -> None:
        super().__init__(key)
        self.key = key


@dataclass(frozen=True)
class TensorInfo:
    """One captured tensor: its state_dict name, shape and numpy dtype name (e.g. "float32")."""

    name: str
    shape: tuple[int, ...]
    dtype: str

    @property
    def numel(self) -> int:
        """Number of elements."""
        return int(np.prod(self.shape, dtype=np.int64))

    @property
    def nbytes(self) -> int:
        """Size of one raw snapshot of this tensor in bytes."""
        return self.numel * np.dtype(self.dtype).itemsize

    def to_json(self) -> dict[str, Any]:
        """The manifest form: ``{"name", "shape", "dtype"}``."""
        return {"name": self.name, "shape": list(self.shape), "dtype": self.dtype}

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> TensorInfo:
        """Inverse of to_json."""
        return cls(str(d["name"]), tuple(int(x) for x in d["shape"]), str(d["dtype"]))


def _check_tensor_infos(tensors: Sequence[TensorInfo]) -> list[TensorInfo]:
    out: list[TensorInfo] = []
    seen: set[str] = set()
    for t in tensors:
        if not isinstance(t, TensorInfo):
            raise TypeError(f"tensors must be TensorInfo, got {type(t).__name__}")
        if not t.name:
            raise ValueError("tensor names must be non-empty")
        if t.name in seen:
            raise ValueError(f"duplicate tensor name {t.name!r}")
        seen.add(t.name)
        if any((not isinstance(d, int)) or d < 0 for d in t.shape):
            raise ValueError(f"tensor {t.name!r}: shape must be non-negative ints, got {t.shape!r}")
        try:
            dt = np.dtype(t.dtype)
        except TypeError as e:
            raise ValueError(f"tensor {t.name!r}: unknown numpy dtype {t.dtype!r}") from e
        if dt.kind not in "biufc" or dt.name != t.dtype:
            raise ValueError(
                f"tensor {t.name!r}: dtype must be a numeric numpy dtype name like 'float32', got {t.dtype!r}"
            )
        out.append(t)
    if not out:
        raise ValueError("a tape needs at least one tensor")
    return out


def pack_object(
    chunks: list[bytes], rows: np.ndarray, header: dict[str, Any]
) -> tuple[bytes, dict[str, Any]]:
    """Chunks + index + trailer; rows[:, 0:3] (offset, length, crc) are filled in here."""
    off = 0
    for i, c in enumerate(chunks):
        rows[i, 0], rows[i, 1], rows[i, 2] = off, len(c), zlib.crc32(c)
        off += len(c)
    hdr = json.dumps(header, separators=(",", ":")).encode()
    index = zstandard.ZstdCompressor(level=3).compress(
        struct.pack("<I", len(hdr)) + hdr + rows.astype("<i8").tobytes()
    )
    index_crc = zlib.crc32(index)
    data = b"".join([*chunks, index, _TRAILER.pack(_TRAILER_MAGIC, off, len(index), index_crc, 0)])
    info = {
        "size": len(data),
        "sha256": hashlib.sha256(data).hexdigest(),
        "index_offset": off,
        "index_length": len(index),
        "index_crc32": index_crc,
    }
    return data, info
