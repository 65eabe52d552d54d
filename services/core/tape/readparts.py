"""The pieces a TapeReader is built from: the objects it lists (segments, time-major parts and units), the
decoded state of one tensor at one position, the buffers decoded lanes go into, and the per-block decoders
(native chunks, format-1/2 plane chunks)."""

from __future__ import annotations

import json
import math
import mmap
import struct
import zlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import zstandard

from netlapse.core.store import ObjectNotFound, Store
from netlapse.core.tape import native
from netlapse.core.tape.container import (
    _TRAILER,
    _TRAILER_MAGIC,
    KIND_TENSOR_MAJOR,
    LOSSY_CODECS,
    TapeCorrupt,
    _SegmentGone,
)
from netlapse.core.tape.lanes import (
    MODE_D2,
    MODE_DENSE,
    MODE_KEY,
    MODE_NATIVE,
    _Lanes,
    _mono,
    _unmono,
    _unzigzag,
)
from netlapse.core.tape.options import TapeOptions
from netlapse.core.tape.util import _dctx

DEFAULT_BLOCK_LANES = TapeOptions.block_lanes

# Buffers at least this big are mapped with huge pages declined (see _lane_buffer).
_NO_HUGE_BYTES = 8 << 20


def _lane_buffer(shape: int | tuple[int, ...], dtype: Any) -> np.ndarray:
    """A fresh writable array for decoded lanes or values; a big one in its own anonymous mapping whose
    pages stay normal-sized.

    numpy asks for transparent huge pages on every array of 4 MB or more. On a VM that hands freed memory
    back to its host (virtio-balloon free page reporting, the usual cloud setup) a free 2 MB block is exactly
    what went back, and the first write into each one is slow: a fresh 100 MB array (wide-cnn's fc1) took
    0.35-0.45 s to fill on the 2-core dev VM against 0.05-0.09 s with normal pages, and a cold read of fc1 at
    two steps spent 46 % of its CPU zeroing huge pages (perf: clear_page_erms). Decoding streams through
    these buffers once per step, so huge pages buy nothing back. Freed with the array (munmap)."""
    dt = np.dtype(dtype)
    dims = (shape,) if isinstance(shape, int) else tuple(shape)
    count = math.prod(int(d) for d in dims)
    nbytes = count * dt.itemsize
    if nbytes < _NO_HUGE_BYTES:
        return np.empty(dims, dtype=dt)
    mm = mmap.mmap(-1, nbytes, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    if hasattr(mm, "madvise") and hasattr(mmap, "MADV_NOHUGEPAGE"):
        try:
            mm.madvise(mmap.MADV_NOHUGEPAGE)  # also where THP is "always"
        except OSError:
            pass
    return np.frombuffer(mm, dtype=dt, count=count).reshape(dims)


class _Object:
    """A listed object (segment or time-major part): its entry and, once loaded, its table."""

    def __init__(self, entry: Mapping[str, Any], prefix: str, obj_id: int) -> None:
        self.entry = entry
        self.id = obj_id
        self.key = prefix + str(entry["key"])
        self.size = int(entry["size"])
        self.sha256 = str(entry.get("sha256", ""))
        self.table: np.ndarray | None = None
        self.header: dict[str, Any] = {}
        self.version = int(entry.get("format", 1))  # chunk layout: 1 = one frame of all planes, 2 = planes.py


class _Segment(_Object):
    """A step-major or legacy segment of manifest.json."""

    def __init__(self, entry: Mapping[str, Any], prefix: str, obj_id: int, first_pos: int) -> None:
        super().__init__(entry, prefix, obj_id)
        self.kind = str(entry.get("kind", KIND_TENSOR_MAJOR))
        self.steps: list[int] = [int(s) for s in entry["steps"]]
        self.first_pos = first_pos
        self.block_lanes = int(entry.get("block_lanes", DEFAULT_BLOCK_LANES))
        self.lossy = str(entry.get("codec", "")) in LOSSY_CODECS


class _Unit:
    """A time-major compaction unit of compaction.json: whole replaced segments, in parts along blocks."""

    def __init__(
        self, entry: Mapping[str, Any], prefix: str, ids: Callable[[Mapping[str, Any]], int]
    ) -> None:
        self.entry = entry
        self.steps: list[int] = [int(s) for s in entry["steps"]]
        self.replaces: list[str] = [str(k) for k in entry["replaces"]]
        self.group_steps = int(entry["group_steps"])
        self.block_lanes = int(entry["block_lanes"])
        self.first_pos = 0
        self.parts = [_Object(p, prefix, ids(p)) for p in entry["parts"]]
        self.part_lo = [int(p["block_lo"]) for p in entry["parts"]]
        self.size = sum(p.size for p in self.parts)

    @property
    def n_groups(self) -> int:
        return -(-len(self.steps) // self.group_steps)


@dataclass
class _State:
    """Decoded lanes of one tensor at one position (read-only), with what decoding the next one needs."""

    m: np.ndarray
    prev: np.ndarray | None  # lanes one position earlier in the same chain (None right after a keyframe)
    key_bits: np.ndarray | None = None  # set on keyframes: the exact stored bits
    key64: np.ndarray | None = None  # lossy: keyframe values as float64
    q: float = 0.0


def _pieces(rows: np.ndarray, limit: int) -> list[tuple[int, int, int, int]]:
    """Runs of consecutive chunks of one position's index ``rows``: (first block, end block, first byte, end
    byte), each spanning at most ``limit`` bytes (one chunk at least)."""
    offs = rows[:, 0].tolist()
    ends = (rows[:, 0] + rows[:, 1]).tolist()
    out: list[tuple[int, int, int, int]] = []
    b0, n = 0, len(offs)
    while b0 < n:
        lo, hi, b1 = offs[b0], ends[b0], b0 + 1
        while b1 < n and offs[b1] >= lo and ends[b1] - lo <= limit:
            hi = max(hi, ends[b1])
            b1 += 1
        out.append((b0, b1, int(lo), int(hi)))
        b0 = b1
    return out


def _native_block(
    obj: _Object,
    mode: int,
    raw: bytes | memoryview,
    lanes: _Lanes,
    m1: np.ndarray | None,
    m2: np.ndarray | None,
    out: np.ndarray,
    what: str,
    bits: bool = True,
) -> np.ndarray | None:
    """Lanes of one native chunk into ``out`` (as _apply_block: a keyframe block returns its stored bits,
    unless not ``bits``)."""
    if mode == MODE_NATIVE:
        if m1 is None:
            raise TapeCorrupt(f"segment {obj.key}: chunk of {what} needs earlier steps the chain lacks")
    elif mode in (MODE_KEY, MODE_DENSE):
        m1 = m2 = None
    else:
        raise TapeCorrupt(f"segment {obj.key}: native chunk of {what} has unknown mode {mode}")
    try:
        native.decode_into(raw, m1, m2, out)
    except native.NativeCodecError as e:
        raise TapeCorrupt(f"segment {obj.key}: chunk of {what} is unreadable: {e}") from e
    return _unmono(out, lanes) if mode == MODE_KEY and bits else None


def _apply_block(
    obj: _Object,
    mode: int,
    u: np.ndarray,
    lanes: _Lanes,
    m1: np.ndarray | None,
    m2: np.ndarray | None,
    out: np.ndarray,
    what: str,
) -> np.ndarray | None:
    """Lanes of one block from its unsigned chunk lanes ``u`` (overwritten) into ``out``; on a keyframe
    block returns the stored bits (format 1: the bits; format 2: zigzagged monotone lanes)."""
    if mode == MODE_KEY:
        if obj.version >= 2:
            m = _unzigzag(u, lanes)
            out[...] = m
            return _unmono(m, lanes)
        bits = u.view(lanes.signed)
        _mono(bits, lanes, out=out)
        return bits
    if mode == MODE_DENSE and obj.version >= 2:
        out[...] = _unzigzag(u, lanes)
        return None
    if mode not in (1, MODE_D2):
        raise TapeCorrupt(f"segment {obj.key}: chunk of {what} has unknown mode {mode}")
    if m1 is None or (mode == MODE_D2 and m2 is None):
        raise TapeCorrupt(f"segment {obj.key}: chunk of {what} needs earlier steps the chain lacks")
    r = _unzigzag(u, lanes)
    np.add(r, m1, out=out)
    if mode == MODE_D2:
        assert m2 is not None
        np.add(out, m1, out=out)
        np.subtract(out, m2, out=out)
    return None


def get_range(store: Store, obj: _Object, off: int, length: int) -> bytes:
    """``length`` bytes of ``obj`` from ``off``; a vanished object is _SegmentGone, a short read TapeCorrupt."""
    try:
        data = store.get_range(obj.key, off, length)
    except ObjectNotFound as e:
        raise _SegmentGone(obj.key) from e
    if len(data) != length:
        raise TapeCorrupt(f"segment {obj.key}: short read (truncated object?)")
    return data


def load_table(store: Store, obj: _Object, n_cols: int, tensor_names: list[str]) -> np.ndarray:
    """``obj``'s chunk index (rows of ``n_cols``), loaded once and kept on it: size, index position, CRC,
    header (the tape's tensors; a segment's steps) and chunk bounds checked against its listing."""
    if obj.table is not None:
        return obj.table
    try:
        actual = store.size(obj.key)
    except ObjectNotFound as e:
        raise _SegmentGone(obj.key) from e
    if actual != obj.size:
        raise TapeCorrupt(f"segment {obj.key} is {actual} bytes, the manifest says {obj.size}")
    ent = obj.entry
    if "index_offset" in ent:
        off, length, crc = int(ent["index_offset"]), int(ent["index_length"]), int(ent["index_crc32"])
    else:  # e.g. a segment written by a tool that only fills the trailer
        tr = get_range(store, obj, obj.size - _TRAILER.size, _TRAILER.size)
        magic, off, length, crc, _ = _TRAILER.unpack(tr)
        if magic != _TRAILER_MAGIC:
            raise TapeCorrupt(f"segment {obj.key}: bad trailer magic {magic!r}")
    if off + length + _TRAILER.size != obj.size:
        raise TapeCorrupt(f"segment {obj.key}: index position disagrees with the segment size")
    raw = get_range(store, obj, off, length)
    if zlib.crc32(raw) != crc:
        raise TapeCorrupt(f"segment {obj.key}: index fails its crc32")
    try:
        body = _dctx().decompress(raw)
        (hlen,) = struct.unpack_from("<I", body, 0)
        header = json.loads(body[4 : 4 + hlen])
        table = np.frombuffer(body, dtype="<i8", offset=4 + hlen).reshape(-1, n_cols)
    except (zstandard.ZstdError, ValueError, struct.error) as ex:
        raise TapeCorrupt(f"segment {obj.key}: unreadable index: {ex}") from ex
    if header.get("tensors") != tensor_names:
        raise TapeCorrupt(f"segment {obj.key}: its index disagrees with the manifest (tensors)")
    if isinstance(obj, _Segment) and header.get("steps") != obj.steps:
        raise TapeCorrupt(f"segment {obj.key}: its index disagrees with the manifest (steps or tensors)")
    ends = table[:, 0] + table[:, 1]
    if table.size and (table[:, 0].min() < 0 or ends.max() > off):
        raise TapeCorrupt(f"segment {obj.key}: index points outside the chunk area")
    obj.header, obj.table = header, table
    return table
