"""Time-major frames (written by compaction): one (block, group of steps) per zstd frame, the group's first step
raw, then each lane's residuals over time, element-major, so a lane's trajectory is contiguous."""

from __future__ import annotations

from typing import Any

import numpy as np
import zstandard

from netlapse.core.tape.lanes import (
    MODE_D1,
    MODE_D2,
    _choose_mode,
    _from_planes,
    _lanes_of_signed,
    _unzigzag,
    _zigzag,
    shuffle_bytes,
)
from netlapse.core.tape.util import _dctx


def encode_time_major_chunk(m: np.ndarray, lanes_dtype: np.dtype[Any], level: int) -> tuple[bytes, int]:
    """One (block, group) frame from lanes ``m`` [steps, lanes]: the first step raw, then each lane's residuals
    over time (lane-major), zigzagged, byte-shuffled. Returns (frame, mode)."""
    lanes = _lanes_of_signed(lanes_dtype)
    g, n = m.shape
    parts = [shuffle_bytes(m[0])]
    mode = MODE_D1
    if g > 1:
        d = np.diff(m, axis=0)  # wraps like the decoder's cumsum
        if g > 2 and _choose_mode(m[2:].reshape(-1), m[1:-1].reshape(-1), m[:-2].reshape(-1)) == MODE_D2:
            mode = MODE_D2
            d[1:] = np.diff(d, axis=0)
        r = np.ascontiguousarray(d.T)
        parts.append(shuffle_bytes(_zigzag(r, lanes)))
    raw = b"".join(p.tobytes() for p in parts)
    return zstandard.ZstdCompressor(level=level).compress(raw), mode


def decode_time_major_chunk(
    frame: bytes | memoryview,
    lanes_dtype: np.dtype[Any],
    steps: int,
    n: int,
    mode: int,
    upto: int | None = None,
    out: np.ndarray | None = None,
) -> np.ndarray:
    """Inverse of encode_time_major_chunk: lanes [upto+1 (default: all steps), n], written into ``out``."""
    lanes = _lanes_of_signed(lanes_dtype)
    w = lanes.signed.itemsize
    raw = _dctx().decompress(frame)
    if len(raw) != steps * n * w:
        raise ValueError(f"time-major chunk has {len(raw)} bytes, expected {steps * n * w}")
    last = steps - 1 if upto is None else upto
    if out is None:
        out = np.empty((last + 1, n), dtype=lanes.signed)
    out[0] = _from_planes(memoryview(raw)[: n * w], lanes.unsigned, n).view(lanes.signed)
    if last >= 1:
        planes = np.frombuffer(raw, dtype=np.uint8, offset=n * w).reshape(w, n, steps - 1)
        u = np.empty((last, n, w), dtype=np.uint8)
        for i in range(w):  # only the steps asked for
            u[:, :, i] = planes[i, :, :last].T
        r = _unzigzag(u.view(lanes.unsigned).reshape(last, n), lanes)
        # Row-by-row running sums: ~3x faster than numpy's cumsum over short or strided axes.
        if mode == MODE_D2:
            for j in range(1, last):
                np.add(r[j], r[j - 1], out=r[j])
        for j in range(1, last + 1):
            np.add(out[j - 1], r[j - 1], out=out[j])
    return out


def decode_time_major_lanes(
    frame: bytes | memoryview, lanes_dtype: np.dtype[Any], steps: int, n: int, mode: int, sel: np.ndarray
) -> np.ndarray:
    """Only lanes ``sel`` of a time-major frame over all its steps: [steps, len(sel)] (for trajectories)."""
    lanes = _lanes_of_signed(lanes_dtype)
    w = lanes.signed.itemsize
    raw = _dctx().decompress(frame)
    if len(raw) != steps * n * w:
        raise ValueError(f"time-major chunk has {len(raw)} bytes, expected {steps * n * w}")
    buf = np.frombuffer(raw, dtype=np.uint8)
    out = np.empty((steps, sel.size), dtype=lanes.signed)
    out[0] = np.ascontiguousarray(buf[: n * w].reshape(w, n)[:, sel].T).view(lanes.signed).reshape(-1)
    if steps > 1:
        res = buf[n * w :].reshape(w, n, steps - 1)[:, sel, :]
        u = np.ascontiguousarray(res.transpose(2, 1, 0)).view(lanes.unsigned).reshape(steps - 1, sel.size)
        r = _unzigzag(u, lanes)
        if mode == MODE_D2:
            np.cumsum(r, axis=0, dtype=lanes.signed, out=r)
        np.cumsum(r, axis=0, dtype=lanes.signed, out=out[1:])
        out[1:] += out[0]
    return out
