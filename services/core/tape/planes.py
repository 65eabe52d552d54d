"""Format-2 chunks: a block's byte planes, each stored the cheapest way it can be.

A chunk is ``u8 planes | planes x (u8 kind, u32 length) | payloads``; a plane is all zero (kind 0, nothing
stored), raw (kind 1, its bytes as they are) or one standard zstd frame (kind 2). So a chunk never holds
more than its raw bytes plus 1 + 5 bytes per plane, whatever the data; planes that are all zero (the high
bytes of small residuals) cost nothing to encode or decode.

The encoder remembers, per (tensor, block, plane), how well the plane compressed last time: a plane that
barely shrank is stored raw for a few steps without trying zstd (then tried again), and one that shrank a
little gets a faster zstd level. Those choices only change how bytes are stored, never what they decode to.
"""

from __future__ import annotations

import struct
import threading
from collections.abc import Sequence

import numpy as np
import zstandard

PLANE_ZERO, PLANE_RAW, PLANE_ZSTD = 0, 1, 2
_HEAD = struct.Struct("<BI")
# Planes smaller than this are stored raw: a zstd frame's own header would eat the gain.
MIN_ZSTD_BYTES = 64
# A plane that compressed to more than this fraction of its size is stored raw for RAW_RETRY steps.
RAW_ABOVE = 0.985
RAW_RETRY = 16
# A plane that compressed to more than this fraction gets the fast zstd level (little to lose there).
FAST_ABOVE = 0.93
FAST_LEVEL = -1
_PLANE_PARAMS = zstandard.ZstdCompressionParameters(
    window_log=17,
    hash_log=6,
    chain_log=6,
    search_log=1,
    min_match=7,
    target_length=0,
    strategy=zstandard.STRATEGY_FAST,
    write_content_size=1,
)


class PlaneCoder:
    """Entropy coding of byte planes with zstd; one per writer, safe across its encoder threads."""

    def __init__(self, level: int, mt: zstandard.ZstdCompressor | None = None, mt_min_bytes: int = 0) -> None:
        self.level = level
        self._local = threading.local()
        self._mt = mt
        self._mt_min = mt_min_bytes
        # (tensor, block, plane) -> (last compressed fraction, steps until retry)
        self._hist: dict[tuple[int, int, int, int], tuple[float, int]] = {}
        self._lock = threading.Lock()

    def _cctx(self, fast: bool) -> zstandard.ZstdCompressor:
        name = "fast" if fast else "normal"
        c = getattr(self._local, name, None)
        if c is None:
            if fast:
                c = zstandard.ZstdCompressor(level=FAST_LEVEL, write_content_size=True)
            elif self.level == 1:
                # Level 1 with a 64-entry hash table: byte planes are nearly memoryless, so the usual table
                # finds few more matches and costs ~20 % of the time (measured on SGD and Adam planes).
                c = zstandard.ZstdCompressor(compression_params=_PLANE_PARAMS)
            else:
                c = zstandard.ZstdCompressor(level=self.level, write_content_size=True)
            setattr(self._local, name, c)
        return c

    def encode(
        self, planes: np.ndarray, key: tuple[int, int, int], nonzero: Sequence[bool] | None = None
    ) -> bytes:
        """One chunk from ``planes`` [k, n] uint8. ``key`` names the (tensor, block, kind) for the per-plane
        history; ``nonzero[j]`` False says plane j is all zero (its row is then never read)."""
        k, n = planes.shape
        heads: list[bytes] = [bytes([k])]
        bodies: list[bytes | memoryview] = []
        for j in range(k):
            p = planes[j]
            if not (nonzero[j] if nonzero is not None else bool(p.any())):
                heads.append(_HEAD.pack(PLANE_ZERO, 0))
                continue
            hk = (*key, j)
            with self._lock:
                last, wait = self._hist.get(hk, (0.0, 0))
            if n < MIN_ZSTD_BYTES or (last > RAW_ABOVE and wait > 0):
                with self._lock:
                    self._hist[hk] = (last, wait - 1)
                heads.append(_HEAD.pack(PLANE_RAW, n))
                bodies.append(p.data)
                continue
            if self._mt is not None and n >= self._mt_min:
                c = self._mt.compress(p.data)
            else:
                c = self._cctx(last > FAST_ABOVE).compress(p.data)
            frac = len(c) / n
            with self._lock:
                self._hist[hk] = (frac, RAW_RETRY if frac > RAW_ABOVE else 0)
            if len(c) >= n:
                heads.append(_HEAD.pack(PLANE_RAW, n))
                bodies.append(p.data)
            else:
                heads.append(_HEAD.pack(PLANE_ZSTD, len(c)))
                bodies.append(c)
        return b"".join([*heads, *bodies])


def decode_planes(chunk: bytes | memoryview, k: int, n: int, dctx: zstandard.ZstdDecompressor) -> np.ndarray:
    """The [k, n] uint8 planes of a chunk; ValueError when it is malformed (wrong sizes, kinds, frames)."""
    out = np.empty((k, n), dtype=np.uint8)
    _decode_into(chunk, k, n, dctx, out)
    return out


def decode_interleaved(
    chunk: bytes | memoryview, k: int, n: int, dctx: zstandard.ZstdDecompressor
) -> np.ndarray:
    """The chunk's bytes put back lane by lane: [n, k] uint8 (view it as the lanes' unsigned dtype)."""
    out = np.empty((n, k), dtype=np.uint8)
    _decode_into(chunk, k, n, dctx, out.T)
    return out


def _decode_into(
    chunk: bytes | memoryview, k: int, n: int, dctx: zstandard.ZstdDecompressor, out: np.ndarray
) -> None:
    """Planes of a chunk into ``out`` [k, n] (any strides)."""
    mv = memoryview(chunk)
    if len(mv) < 1 + k * _HEAD.size or mv[0] != k:
        raise ValueError(f"chunk header does not describe {k} byte planes")
    off = 1 + k * _HEAD.size
    for j in range(k):
        kind, length = _HEAD.unpack_from(mv, 1 + j * _HEAD.size)
        body = mv[off : off + length]
        if len(body) != length:
            raise ValueError("chunk is shorter than its plane lengths")
        off += length
        if kind == PLANE_ZERO:
            out[j] = 0
        elif kind == PLANE_RAW:
            if length != n:
                raise ValueError(f"raw plane has {length} bytes, expected {n}")
            out[j] = np.frombuffer(body, dtype=np.uint8)
        elif kind == PLANE_ZSTD:
            try:
                raw = dctx.decompress(body)
            except zstandard.ZstdError as e:
                raise ValueError(f"plane {j} does not decompress: {e}") from e
            if len(raw) != n:
                raise ValueError(f"plane {j} decompresses to {len(raw)} bytes, expected {n}")
            out[j] = np.frombuffer(raw, dtype=np.uint8)
        else:
            raise ValueError(f"unknown plane kind {kind}")
    if off != len(mv):
        raise ValueError("chunk has bytes after its planes")


def check_planes(chunk: bytes | memoryview, dctx: zstandard.ZstdDecompressor) -> None:
    """ValueError unless ``chunk`` is a well-formed format-2 chunk whose planes all have one length."""
    mv = memoryview(chunk)
    if len(mv) < 1:
        raise ValueError("empty chunk")
    k = mv[0]
    if len(mv) < 1 + k * _HEAD.size:
        raise ValueError("chunk is shorter than its header")
    off = 1 + k * _HEAD.size
    sizes = set()
    for j in range(k):
        kind, length = _HEAD.unpack_from(mv, 1 + j * _HEAD.size)
        body = mv[off : off + length]
        off += length
        if kind == PLANE_RAW:
            sizes.add(length)
        elif kind == PLANE_ZSTD:
            try:
                sizes.add(len(dctx.decompress(body)))
            except zstandard.ZstdError as e:
                raise ValueError(f"plane {j} does not decompress: {e}") from e
        elif kind != PLANE_ZERO:
            raise ValueError(f"unknown plane kind {kind}")
    if off != len(mv) or len(sizes) > 1:
        raise ValueError("chunk planes disagree in length or leave bytes over")
