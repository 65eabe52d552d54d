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
# Manifest and segment format written now; the reader reads every format in READ_FORMATS. Format 1 (netlapse
# 0.1.0): manifest.json rewritten after every segment, each chunk one zstd frame of all byte planes. Format 2:
# manifest.json written at the start and at close, one index part per segment between (index/), each chunk
# its byte planes stored one by one (see planes.py), keyframes and dense blocks as zigzagged lanes. Format 3:
# format 2 whose chunks may also be native ones (native.py: one coded block, first byte 0xA3), written when
# the native codec is built; a format-2 reader refuses it up front instead of failing chunk by chunk.
FORMAT = 2
FORMAT_NATIVE = 3
READ_FORMATS = (1, 2, 3)
INDEX_DIR = "index/"
KIND_TENSOR_MAJOR = "tensor-major"  # legacy (read-only)
KIND_STEP_MAJOR = "step-major"
KIND_TIME_MAJOR = "time-major"
CODEC_V1 = "xor-byteshuffle-zstd"
CODEC = "lanes-pred-zigzag-byteshuffle-zstd"
CODEC_LOSSY = "lanes-grid-pred-zigzag-byteshuffle-zstd"
CODEC2 = "lanes-pred-zigzag-planes-zstd"
CODEC2_LOSSY = "lanes-grid-pred-zigzag-planes-zstd"
CODEC3 = "lanes-pred-native"
CODEC3_LOSSY = "lanes-grid-pred-native"
LOSSY_CODECS = (CODEC_LOSSY, CODEC2_LOSSY, CODEC3_LOSSY)
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


@dataclass(frozen=True)
class Placed:
    """A chunk already written into pack_object's ``out`` buffer, at ``offset`` (before ``start``)."""

    offset: int
    length: int

    def __len__(self) -> int:
        return self.length


def pack_object(
    chunks: Sequence[bytes | memoryview | Placed],
    rows: np.ndarray,
    header: dict[str, Any],
    crcs_known: bool = False,
    digest: bool = True,
    out: np.ndarray | None = None,
    start: int = 0,
) -> tuple[bytes | memoryview, dict[str, Any]]:
    """Chunks + index + trailer; rows[:, 0:2] (offset, length) are filled in here, and rows[:, 2] (crc32)
    too, except, with ``crcs_known``, where the encoder already put it (>= 0: the native codec computes it
    while the chunk is in cache). ``digest``: the info holds the object's SHA-256 (else no "sha256").
    ``out``: the object is assembled in this buffer when it is large enough (a view of it is returned), so a
    writer that reuses its buffers writes into pages it already has instead of a fresh allocation's.
    ``start``: ``out[:start]`` already holds the ``Placed`` chunks (the tape writer encodes its largest
    tensor there, so the bulk of a segment is never copied); the other chunks follow from ``start``. Each
    tensor's chunks stay one ascending run of bytes either way, which is all readers rely on."""
    if start and (out is None or start > out.size):
        raise ValueError("pack_object: placed chunks need the buffer that holds them")
    off = start
    copied: list[bytes | memoryview] = []
    for i, c in enumerate(chunks):
        if isinstance(c, Placed):
            if c.offset < 0 or c.offset + c.length > start or not crcs_known or rows[i, 2] < 0:
                raise ValueError("pack_object: a placed chunk lies outside out[:start] or has no crc32")
            rows[i, 0], rows[i, 1] = c.offset, c.length
            continue
        rows[i, 0], rows[i, 1] = off, len(c)
        if not crcs_known or rows[i, 2] < 0:
            rows[i, 2] = zlib.crc32(c)
        off += len(c)
        copied.append(c)
    hdr = json.dumps(header, separators=(",", ":")).encode()
    index = zstandard.ZstdCompressor(level=3).compress(
        struct.pack("<I", len(hdr)) + hdr + rows.astype("<i8").tobytes()
    )
    index_crc = zlib.crc32(index)
    parts = [*copied, index, _TRAILER.pack(_TRAILER_MAGIC, off, len(index), index_crc, 0)]
    size = off + len(index) + _TRAILER.size
    data: bytes | memoryview
    if out is not None and out.size >= size:
        view, pos = out.data, start
        for c in parts:
            view[pos : pos + len(c)] = c
            pos += len(c)
        data = view[:size]
    else:
        data = b"".join([bytes(out.data[:start]) if start and out is not None else b"", *parts])
    info: dict[str, Any] = {"size": size}
    if digest:
        info["sha256"] = hashlib.sha256(data).hexdigest()
    info.update(index_offset=off, index_length=len(index), index_crc32=index_crc)
    return data, info


# --- the growing index (format 2) -----------------------------------------------------------------------------


def _digest(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def index_part_key(seq: int) -> str:
    """Key (under the tape prefix) of the index part listing segment number ``seq`` (0-based)."""
    return f"{INDEX_DIR}{seq:08d}.json"


def index_part(seq: int, entry: Mapping[str, Any]) -> dict[str, Any]:
    """The index part of one committed segment: its manifest entry, fenced by a digest of that entry."""
    return {"seq": seq, "segment": dict(entry), "sha256": _digest(entry)}


def merged_segments(store: Any, prefix: str, manifest: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The manifest's segments followed by those of index parts written since it (format 2).

    Parts are read in order from the first one the manifest does not hold, up to the first one missing; a
    part whose digest or number disagrees is TapeCorrupt. A complete manifest already lists everything."""
    segments = [dict(s) for s in manifest.get("segments", [])]
    if manifest.get("format") == 1 or manifest.get("complete"):
        return segments
    listed = set(store.list(prefix + INDEX_DIR))
    seq = len(segments)
    while prefix + index_part_key(seq) in listed:
        key = prefix + index_part_key(seq)
        part = store.get_json(key)
        entry = part.get("segment") if isinstance(part, dict) else None
        if not isinstance(entry, dict) or part.get("seq") != seq or part.get("sha256") != _digest(entry):
            raise TapeCorrupt(f"{store.url}/{key}: index part fails its digest (or is not part {seq})")
        segments.append(entry)
        seq += 1
    return segments


def manifest_totals(segments: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """The manifest's summary fields over ``segments``."""
    return {
        "raw_bytes": sum(int(s.get("raw_bytes", 0)) for s in segments),
        "stored_bytes": sum(int(s["size"]) for s in segments),
        "steps_count": sum(len(s["steps"]) for s in segments),
        "last_step": segments[-1]["last_step"] if segments else None,
    }
