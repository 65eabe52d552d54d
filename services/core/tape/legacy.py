"""Reading the legacy ``tensor-major`` segments of format 1 (XOR deltas restarting at every segment, no
lanes), which early versions wrote; nothing writes them any more."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from netlapse.core.tape.container import TapeCorrupt, TensorInfo
from netlapse.core.tape.lanes import _wide, unshuffle_bytes

if TYPE_CHECKING:
    from netlapse.core.tape.reader import TapeReader
    from netlapse.core.tape.readparts import _Segment


def _chunk(r: TapeReader, seg: _Segment, t: int, k: int, data: memoryview, base: int) -> np.ndarray:
    table = r._seg_table(seg).reshape(len(r._tensors), len(seg.steps), 3)
    raw = r._check_chunk(
        seg, table[t, k], data, base, f"tensor {r._tensors[t].name!r} at step {seg.steps[k]}"
    )
    if len(raw) != r._tensors[t].nbytes:
        raise TapeCorrupt(f"segment {seg.key}: chunk of {r._tensors[t].name!r} has the wrong size")
    return np.frombuffer(raw, dtype=np.uint8)


def _range(r: TapeReader, seg: _Segment, t: int, last: int) -> tuple[memoryview, int]:
    table = r._seg_table(seg).reshape(len(r._tensors), len(seg.steps), 3)
    lo = int(table[t, 0, 0])
    hi = int(table[t, last, 0] + table[t, last, 1])
    return memoryview(r._get_range(seg, lo, hi - lo)), lo


def read(r: TapeReader, t: int, info: TensorInfo, pos: int) -> np.ndarray:
    seg, k = r._segment_at(pos)
    ckey = ("legacy", seg.id, t, k)
    with r._lock:
        state = r._blocks.get(ckey)
    if state is None:
        data, base = _range(r, seg, t, k)
        for i in range(k + 1):
            d = _chunk(r, seg, t, i, data, base)
            if state is None:
                state = d.copy()
            else:
                np.bitwise_xor(_wide(state), _wide(d), out=_wide(state))
        assert state is not None
        state.setflags(write=False)
        with r._lock:
            r._blocks.put(ckey, state, state.nbytes)
    return unshuffle_bytes(state, np.dtype(info.dtype), info.shape)


def trajectory(r: TapeReader, seg: _Segment, t: int, info: TensorInfo, idx: np.ndarray) -> list[np.ndarray]:
    dt = np.dtype(info.dtype)
    k, n = dt.itemsize, info.numel
    last = len(seg.steps) - 1
    data, base = _range(r, seg, t, last)
    out: list[np.ndarray] = []
    sel: np.ndarray | None = None
    for i in range(last + 1):
        planes = _chunk(r, seg, t, i, data, base).reshape(k, n)[:, idx]
        sel = planes if sel is None else np.bitwise_xor(sel, planes)
        out.append(np.ascontiguousarray(sel.T).view(dt).reshape(-1))
    return out
