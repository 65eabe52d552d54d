"""Element trajectories: the values of chosen elements at every committed step of a tape, from time-major
compaction parts (a few small range reads per group, only the chosen lanes decoded), step-major segments
(every step's chunks of the blocks that hold the chosen lanes; native chunks decode whole blocks against
those blocks' previous steps) and legacy tensor-major segments alike. ``TapeReader.trajectory`` is ``read``."""

from __future__ import annotations

import bisect
import zlib
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
import zstandard

from netlapse.core.tape import legacy
from netlapse.core.tape.container import KIND_TENSOR_MAJOR, TapeCorrupt, TensorInfo
from netlapse.core.tape.lanes import MODE_D2, MODE_DENSE, MODE_KEY, _mono, _unmono, _unzigzag
from netlapse.core.tape.timemajor import decode_time_major_lanes
from netlapse.core.tape.util import _block_slices, _parallel, _read_pool

if TYPE_CHECKING:
    from netlapse.core.tape.reader import TapeReader
    from netlapse.core.tape.readparts import _Segment, _Unit


def read(reader: TapeReader, name: str, flat_indices: Sequence[int]) -> tuple[list[int], np.ndarray]:
    """Values of the chosen elements (indices into the flattened tensor) at every committed step:
    ``(steps, values)`` with values of shape [len(steps), len(flat_indices)]."""
    info = reader.tensor(name)
    t = reader._tensor_index[name]
    idx = np.asarray(flat_indices, dtype=np.int64).reshape(-1)
    n = info.numel
    if idx.size and (idx.min() < 0 or idx.max() >= n):
        bad = idx[(idx < 0) | (idx >= n)][0]
        raise IndexError(
            f"index {int(bad)} is out of range for tensor {name!r} with {n} elements (0..{n - 1})"
        )
    reader._maybe_refresh()
    return reader._with_retry(lambda: _read(reader, t, info, idx))  # type: ignore[no-any-return]


def _read(reader: TapeReader, t: int, info: TensorInfo, idx: np.ndarray) -> tuple[list[int], np.ndarray]:
    dt = np.dtype(info.dtype)
    lanes = reader._lanes[t]
    pe = lanes.per_elem
    lane_idx = (idx[:, None] * pe + np.arange(pe)[None, :]).reshape(-1)
    with reader._lock:
        steps = list(reader._steps)
        covered = dict(reader._covered)
    rows: list[np.ndarray] = []  # values per position, [len(idx)] of dt
    # Running selected-lane state for step-major chains: (m1, m2, key_bits_sel, key64_sel, q).
    m1: np.ndarray | None = None
    m2: np.ndarray | None = None
    key64: np.ndarray | None = None
    q = 0.0
    pos = 0
    done_units: set[int] = set()
    # Native segments: lanes of every touched block at the last two steps (None: not known yet).
    blocks: dict[int, tuple[np.ndarray, np.ndarray | None]] | None = None
    while pos < len(steps):
        unit = covered.get(pos)
        if unit is not None:
            blocks = None
            if id(unit) not in done_units:
                vals = _time_major(reader, t, unit, lane_idx)  # [steps, lanes]
                for r in vals:
                    rows.append(_unmono(r, lanes).view(dt) if pe == 1 else _unmono(r, lanes).view(dt))
                m1 = vals[-1]
                m2 = vals[-2] if len(vals) > 1 else None
                key64, q = None, 0.0
                done_units.add(id(unit))
            pos = unit.first_pos + len(unit.steps)
            continue
        seg, _ = reader._segment_at(pos)
        if seg.kind == KIND_TENSOR_MAJOR:
            rows.extend(legacy.trajectory(reader, seg, t, info, idx))
            m1 = m2 = None
            blocks = None
        elif seg.version >= 3:
            # Native chunks decode whole blocks against the block's previous steps: carry those.
            blocks, key64, q = _step_major_blocks(reader, seg, t, lane_idx, rows, blocks, key64, q)
            m1, m2 = _select_lanes(blocks, lane_idx, seg.block_lanes)
        else:
            m1, m2, key64, q = _step_major(reader, seg, t, lane_idx, rows, m1, m2, key64, q)
            blocks = None
        pos = seg.first_pos + len(seg.steps)
    values = np.stack([r.reshape(-1) for r in rows]) if rows else np.empty((0, idx.size), dtype=dt)
    return steps, values.reshape(len(steps), idx.size)


def _seg_tensor_rows(
    reader: TapeReader, seg: _Segment, t: int
) -> tuple[np.ndarray, int, int, int, memoryview]:
    """(index table, first row of tensor t, blocks per step, byte offset, the tensor's bytes) of a
    step-major segment: all of one tensor's chunks there are one range read."""
    table = reader._seg_table(seg)
    base, nb = reader._seg_rows(seg, t)
    lo = int(table[base, 0])
    last = base + len(seg.steps) * nb - 1
    hi = int(table[last, 0] + table[last, 1])
    return table, base, nb, lo, memoryview(reader._get_range(seg, lo, hi - lo))


def _step_major_blocks(
    reader: TapeReader,
    seg: _Segment,
    t: int,
    lane_idx: np.ndarray,
    rows: list[np.ndarray],
    blocks: dict[int, tuple[np.ndarray, np.ndarray | None]] | None,
    key64: np.ndarray | None,
    q: float,
) -> tuple[dict[int, tuple[np.ndarray, np.ndarray | None]], np.ndarray | None, float]:
    """_step_major for a segment that may hold native chunks: every step decodes the whole blocks that
    hold the chosen lanes (against those blocks' previous steps) and keeps the chosen lanes' values."""
    info = reader._tensors[t]
    dt = np.dtype(info.dtype)
    lanes = reader._lanes[t]
    n = reader._n_lanes(t)
    table, base, nb, lo, data = _seg_tensor_rows(reader, seg, t)
    ks = len(seg.steps)
    slices = _block_slices(n, seg.block_lanes)
    which = lane_idx // seg.block_lanes
    ub = [int(b) for b in np.unique(which)]
    if blocks is None or any(b not in blocks for b in ub):
        blocks = {}
        if int(table[base, 3]) != MODE_KEY:
            st = reader._state(t, seg.first_pos - 1)
            if st.prev is None and (seg.first_pos - 1) in reader._covered:
                st = reader._tm_state(
                    t, seg.first_pos - 1, reader._covered[seg.first_pos - 1], need_prev=True
                )
            for b in ub:
                blocks[b] = (
                    st.m[slices[b]].copy(),
                    st.prev[slices[b]].copy() if st.prev is not None else None,
                )
    for k in range(ks):
        row0 = table[base + k * nb]
        what = f"tensor {info.name!r} at step {seg.steps[k]}"
        is_key = int(row0[3]) == MODE_KEY
        sel_bits = np.empty(lane_idx.size, dtype=lanes.signed)
        sel = np.empty(lane_idx.size, dtype=lanes.signed)

        def decode(b: int, k: int = k, what: str = what) -> tuple[np.ndarray, np.ndarray | None]:
            sl = slices[b]
            prev = blocks.get(b) if blocks else None
            cur = np.empty(sl.stop - sl.start, dtype=lanes.signed)
            bits = reader._chunk_lanes(
                seg,
                table[base + k * nb + b],
                data,
                lo,
                what,
                lanes,
                sl.stop - sl.start,
                prev[0] if prev is not None else None,
                prev[1] if prev is not None else None,
                cur,
            )
            return cur, bits

        done = _parallel(lambda j: decode(ub[j]), len(ub), _read_pool() if len(ub) > 1 else None)
        for b, (cur, bits) in zip(ub, done, strict=True):
            mask = which == b
            local = lane_idx[mask] - b * seg.block_lanes
            if bits is not None:
                sel_bits[mask] = bits[local]
                prev_m = None
            else:
                prev_m = blocks[b][0] if b in blocks else None
            sel[mask] = cur[local]
            blocks[b] = (cur, prev_m)
        if is_key:
            q = float(np.int64(row0[4]).view(np.float64))
            if q > 0:
                key64 = (
                    sel_bits.copy().view(np.dtype(dt.str)).astype(np.float64) if lanes.per_elem == 1 else None
                )
                for b in ub:
                    blocks[b][0][...] = 0
                sel[...] = 0
            else:
                key64 = None
            rows.append(sel_bits.copy().view(dt))
            continue
        if q > 0 and key64 is not None:
            rows.append((key64 + sel.astype(np.float64) * q).astype(dt))
        else:
            rows.append(_unmono(sel, lanes).view(dt))
    return blocks, key64, q


def _step_major(
    reader: TapeReader,
    seg: _Segment,
    t: int,
    lane_idx: np.ndarray,
    rows: list[np.ndarray],
    m1: np.ndarray | None,
    m2: np.ndarray | None,
    key64: np.ndarray | None,
    q: float,
) -> tuple[np.ndarray | None, np.ndarray | None, np.ndarray | None, float]:
    """Append the selected lanes' values at every step of a step-major segment; returns the running state."""
    info = reader._tensors[t]
    dt = np.dtype(info.dtype)
    lanes = reader._lanes[t]
    w = lanes.signed.itemsize
    n = reader._n_lanes(t)
    table, base, nb, lo, data = _seg_tensor_rows(reader, seg, t)
    ks = len(seg.steps)
    blocks = lane_idx // seg.block_lanes
    ub = np.unique(blocks)
    slices = _block_slices(n, seg.block_lanes)

    def decode(job: int) -> np.ndarray:
        k, bi = divmod(job, len(ub))
        b = int(ub[bi])
        width = slices[b].stop - slices[b].start
        what = f"tensor {info.name!r} at step {seg.steps[k]}"
        return reader._chunk_planes(seg, table[base + k * nb + b], data, lo, what, w, width)

    raws = _parallel(decode, ks * len(ub), _read_pool() if ks * len(ub) > 2 else None)
    for k in range(ks):
        sel_u = np.empty(lane_idx.size, dtype=lanes.unsigned)
        for bi, b in enumerate(ub):
            mask = blocks == b
            local = lane_idx[mask] - int(b) * seg.block_lanes
            planes = raws[k * len(ub) + bi][:, local]  # [w, m]
            sel_u[mask] = np.ascontiguousarray(planes.T).view(lanes.unsigned).reshape(-1)
        row0 = table[base + k * nb]
        mode = int(row0[3])
        if mode == MODE_KEY:
            bits = sel_u.view(lanes.signed) if seg.version == 1 else _unmono(_unzigzag(sel_u, lanes), lanes)
            q = float(np.int64(row0[4]).view(np.float64))
            if q > 0:
                key64 = bits.copy().view(np.dtype(dt.str)).astype(np.float64) if lanes.per_elem == 1 else None
                cur = np.zeros(lane_idx.size, dtype=lanes.signed)
            else:
                key64 = None
                cur = _mono(bits, lanes)
            rows.append(bits.copy().view(dt))
            m1, m2 = cur, None
            continue
        r = _unzigzag(sel_u, lanes)
        modes = np.array([int(table[base + k * nb + int(b), 3]) for b in blocks])
        dense = modes == MODE_DENSE
        if m1 is None and not dense.all():
            raise TapeCorrupt(
                f"segment {seg.key}: a delta of {info.name!r} needs earlier steps the chain lacks"
            )
        cur = r.copy() if m1 is None else r + m1
        cur[dense] = r[dense]
        d2 = modes == MODE_D2
        if d2.any():
            if m1 is None or m2 is None:
                raise TapeCorrupt(
                    f"segment {seg.key}: a delta of {info.name!r} needs earlier steps the chain lacks"
                )
            cur[d2] += m1[d2] - m2[d2]
        if q > 0 and key64 is not None:
            rows.append((key64 + cur.astype(np.float64) * q).astype(dt))
        else:
            rows.append(_unmono(cur, lanes).view(dt))
        m1, m2 = cur, m1
    return m1, m2, key64, q


def _time_major(reader: TapeReader, t: int, unit: _Unit, lane_idx: np.ndarray) -> np.ndarray:
    """Selected lanes of tensor t over every step of a unit: [steps, lanes] (a few small reads)."""
    lanes = reader._lanes[t]
    n = reader._n_lanes(t)
    bl = unit.block_lanes
    b0 = reader._tm_block0(t, bl)
    slices = _block_slices(n, bl)
    blocks = lane_idx // bl
    ub = np.unique(blocks)
    out = np.empty((len(unit.steps), lane_idx.size), dtype=lanes.signed)
    jobs = [(g, int(b)) for g in range(unit.n_groups) for b in ub]

    def run(i: int) -> None:
        g, b = jobs[i]
        gb = b0 + b
        part = unit.parts[bisect.bisect_right(unit.part_lo, gb) - 1]
        table = reader._tm_table(part)
        nb_part = int(part.entry["block_hi"]) - int(part.entry["block_lo"])
        row = table[g * nb_part + gb - int(part.entry["block_lo"])]
        c = reader._get_range(part, int(row[0]), int(row[1]))
        if zlib.crc32(c) != int(row[2]):
            raise TapeCorrupt(
                f"segment {part.key}: chunk of tensor {reader._tensors[t].name!r} fails its crc32"
            )
        g0 = g * unit.group_steps
        gl = min(unit.group_steps, len(unit.steps) - g0)
        sl = slices[b]
        mask = blocks == b
        try:
            out[g0 : g0 + gl, mask] = decode_time_major_lanes(
                c, lanes.signed, gl, sl.stop - sl.start, int(row[3]), lane_idx[mask] - b * bl
            )
        except (zstandard.ZstdError, ValueError) as e:
            raise TapeCorrupt(f"segment {part.key}: unreadable chunk: {e}") from e

    _parallel(run, len(jobs), _read_pool() if len(jobs) > 8 else None)
    return out


def _select_lanes(
    blocks: dict[int, tuple[np.ndarray, np.ndarray | None]], lane_idx: np.ndarray, block_lanes: int
) -> tuple[np.ndarray | None, np.ndarray | None]:
    """The chosen lanes of the carried block states: (at the last step, at the one before or None)."""
    which = lane_idx // block_lanes
    m1 = np.empty(lane_idx.size, dtype=next(iter(blocks.values()))[0].dtype) if blocks else None
    m2 = m1.copy() if m1 is not None else None
    for b, (cur, prev) in blocks.items():
        mask = which == b
        local = lane_idx[mask] - b * block_lanes
        assert m1 is not None
        m1[mask] = cur[local]
        if prev is None:
            m2 = None
        elif m2 is not None:
            m2[mask] = prev[local]
    return m1, m2
