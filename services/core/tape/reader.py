"""Random access to a tape: any tensor at any committed step, and element trajectories, from step-major
segments, time-major compaction parts and legacy tensor-major segments alike."""

from __future__ import annotations

import bisect
import functools
import hashlib
import os
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import zstandard

from netlapse.core.store import ObjectNotFound, Store
from netlapse.core.tape import legacy, native, trajectories
from netlapse.core.tape.container import (
    _ROW,
    _SUPPORTED_KINDS,
    COMPACTION_NAME,
    KIND_STEP_MAJOR,
    KIND_TENSOR_MAJOR,
    MANIFEST_NAME,
    READ_FORMATS,
    StepNotCaptured,
    TapeCorrupt,
    TensorInfo,
    UnknownTensor,
    _SegmentGone,
    manifest_totals,
    merged_segments,
)
from netlapse.core.tape.lanes import (
    MODE_KEY,
    _join_planes,
    _Lanes,
    _lanes_of,
    _unmono,
)
from netlapse.core.tape.planes import check_planes, decode_interleaved, decode_planes
from netlapse.core.tape.readparts import (
    _apply_block,
    _lane_buffer,
    _native_block,
    _Object,
    _pieces,
    _Segment,
    _State,
    _Unit,
    get_range,
    load_table,
)
from netlapse.core.tape.timemajor import decode_time_major_chunk
from netlapse.core.tape.util import (
    _block_slices,
    _ByteLRU,
    _dctx,
    _describe_steps,
    _n_blocks,
    _norm_prefix,
    _parallel,
    _read_pool,
)

# A cold read fetches compressed chunks in batches of at most this many bytes.
_FETCH_BYTES = 64 << 20
# A step of one tensor with more compressed bytes than this (a wide layer) is read in pieces of at most this
# many bytes by the threads that decode it: reads overlap decoding, and a piece's buffer is memory the
# allocator hands out again for the next one instead of ~75 MB of fresh pages per step.
_PIECE_BYTES = 8 << 20


class TapeReader:
    """Random access to a tape: any tensor at any committed step, and element trajectories.

    Safe to share between threads. Decoded states are kept in a byte-bounded LRU (``cache_bytes``), so
    reading the same tensor at nearby steps is cheap; decoding uses a process-wide thread pool."""

    def __init__(self, store: Store, prefix: str, *, cache_bytes: int = 384 << 20) -> None:
        """Open the tape at ``prefix``; ObjectNotFound if it has no manifest."""
        self.store = store
        self.prefix = _norm_prefix(prefix)
        self._lock = threading.RLock()
        self._states = _ByteLRU(cache_bytes // 2)
        self._blocks = _ByteLRU(cache_bytes // 2)  # decoded time-major groups and legacy states
        self._obj_ids: dict[tuple[str, str], int] = {}
        self.complete = False
        self.manifest: dict[str, Any] = {}
        self.compaction: dict[str, Any] = {}
        self._checked_at = 0.0
        self.refresh()

    # -- indexes

    def _obj_id(self, e: Mapping[str, Any]) -> int:
        # Same key and same content digest = same bytes; without a SHA-256 (segment_digest off) the index's
        # CRC-32, which covers every chunk's offset, length and CRC, and the size stand in for it.
        ident = (str(e["key"]), str(e.get("sha256") or f"{e.get('size')}:{e.get('index_crc32')}"))
        with self._lock:
            return self._obj_ids.setdefault(ident, len(self._obj_ids))

    def refresh(self) -> None:
        """Re-read the manifest and the compaction index, e.g. to see segments a live run committed since."""
        where = f"{self.store.url}/{self.prefix}{MANIFEST_NAME}"
        m = self.store.get_json(self.prefix + MANIFEST_NAME)
        if not isinstance(m, dict) or m.get("format") not in READ_FORMATS:
            fmt = m.get("format") if isinstance(m, dict) else None
            known = " and ".join(str(f) for f in READ_FORMATS)
            raise TapeCorrupt(f"{where}: unsupported tape format {fmt!r} (this reader knows formats {known})")
        try:
            listed = merged_segments(self.store, self.prefix, m)
        except (AttributeError, KeyError, TypeError, ValueError) as ex:
            raise TapeCorrupt(f"{where}: malformed index part: {ex!r}") from ex
        if len(listed) != len(m.get("segments", [])):
            m = {**m, "segments": listed, **manifest_totals(listed)}
        try:
            comp = self.store.get_json(self.prefix + COMPACTION_NAME)
        except ObjectNotFound:
            comp = {}
        try:
            tensors = [TensorInfo.from_json(t) for t in m["tensors"]]
            segments: list[_Segment] = []
            pos = 0
            for e in m["segments"]:
                seg = _Segment(e, self.prefix, self._obj_id(e), pos)
                segments.append(seg)
                pos += len(seg.steps)
            units = [_Unit(u, self.prefix, self._obj_id) for u in comp.get("units", [])]
        except (KeyError, TypeError, ValueError) as e:
            raise TapeCorrupt(f"{where}: malformed manifest or compaction index: {e!r}") from e
        for s in segments:
            if s.kind not in _SUPPORTED_KINDS:
                raise TapeCorrupt(f"segment {s.key}: kind {s.kind!r} is not supported by this reader")
        steps: list[int] = [st for s in segments for st in s.steps]
        if any(b <= a for a, b in zip(steps, steps[1:], strict=False)):
            raise TapeCorrupt(f"{where}: steps are not strictly increasing")
        by_key = {str(s.entry["key"]): s for s in segments}
        covered: dict[int, _Unit] = {}  # position -> unit
        for u in units:
            reps = [by_key.get(k) for k in u.replaces]
            if any(r is None for r in reps):
                continue  # replaces segments this manifest does not list: not for this tape's view
            rsteps = [st for r in reps if r is not None for st in r.steps]
            if rsteps != u.steps:
                raise TapeCorrupt(
                    f"{self.prefix}{COMPACTION_NAME}: a unit's steps differ from the segments it replaces"
                )
            u.first_pos = reps[0].first_pos if reps[0] is not None else 0
            for p in range(u.first_pos, u.first_pos + len(u.steps)):
                covered[p] = u
        with self._lock:
            # Objects already loaded keep their table: same key and digest (_obj_id) means same bytes.
            old = {o.id: o for o in self._all_objects()}
            for o in [*segments, *(p for u in units for p in u.parts)]:
                if o.id in old:
                    o.table, o.header = old[o.id].table, old[o.id].header
            self.manifest = m
            self.compaction = comp
            self._tensors = tensors
            self._tensor_index = {t.name: i for i, t in enumerate(tensors)}
            self._lanes = [_lanes_of(t.dtype) for t in tensors]
            self._segments = segments
            self._units = units
            self._covered = covered
            self._steps = steps
            self._pos_of = {s: i for i, s in enumerate(steps)}
            self._seg_first = [s.first_pos for s in segments]
            self.complete = bool(m.get("complete", False))
            self._checked_at = time.monotonic()

    def _all_objects(self) -> list[_Object]:
        segs: list[_Object] = list(getattr(self, "_segments", []))
        return segs + [p for u in getattr(self, "_units", []) for p in u.parts]

    def _maybe_refresh(self, max_age_s: float = 2.0) -> None:
        """A complete tape only changes by compaction; look for it now and then."""
        if self.complete and time.monotonic() - self._checked_at > max_age_s and not self.fully_compacted:
            self.refresh()

    @property
    def fully_compacted(self) -> bool:
        """Whether every committed step is served from time-major parts."""
        return bool(self._steps) and len(self._covered) == len(self._steps)

    def steps(self) -> list[int]:
        """Every committed step, ascending."""
        return list(self._steps)

    def tensors(self) -> list[TensorInfo]:
        """The tape's tensors in capture (state_dict) order."""
        return list(self._tensors)

    def tensor(self, name: str) -> TensorInfo:
        """The TensorInfo of ``name``; UnknownTensor (a KeyError) if the tape has no such tensor."""
        i = self._tensor_index.get(name)
        if i is None:
            raise UnknownTensor(f"unknown tensor {name!r}; the tape holds: {', '.join(self._tensor_index)}")
        return self._tensors[i]

    @property
    def raw_bytes(self) -> int:
        """Raw size of every committed snapshot."""
        return int(self.manifest.get("raw_bytes", 0))

    @property
    def stored_bytes(self) -> int:
        """Bytes of the objects that serve the tape now (time-major parts replace the segments they cover)."""
        replaced = {k for u in self._units if u.first_pos in self._covered for k in u.replaces}
        seg = sum(s.size for s in self._segments if str(s.entry["key"]) not in replaced)
        tm = sum(u.size for u in set(self._covered.values()))
        return seg + tm

    @property
    def lossy(self) -> bool:
        """Whether any segment was written in lossy mode."""
        return any(s.lossy for s in self._segments)

    # -- object access

    def _get_range(self, obj: _Object, off: int, length: int) -> bytes:
        return get_range(self.store, obj, off, length)

    def _load_table(self, obj: _Object, n_cols: int) -> np.ndarray:
        return load_table(self.store, obj, n_cols, [t.name for t in self._tensors])

    def _seg_table(self, seg: _Segment) -> np.ndarray:
        if seg.kind == KIND_TENSOR_MAJOR:
            t = self._load_table(seg, 3)
            return t
        table = self._load_table(seg, _ROW)
        want = sum(_n_blocks(self._n_lanes(t), seg.block_lanes) for t in range(len(self._tensors))) * len(
            seg.steps
        )
        if table.shape[0] != want:
            raise TapeCorrupt(f"segment {seg.key}: index has {table.shape[0]} chunks, expected {want}")
        return table

    def _n_lanes(self, t: int) -> int:
        return self._tensors[t].numel * self._lanes[t].per_elem

    def _seg_rows(self, seg: _Segment, t: int) -> tuple[int, int]:
        """(first row of tensor t in seg, blocks per step)."""
        base = 0
        for u in range(t):
            base += _n_blocks(self._n_lanes(u), seg.block_lanes) * len(seg.steps)
        return base, _n_blocks(self._n_lanes(t), seg.block_lanes)

    def _checked(self, obj: _Object, row: np.ndarray, data: memoryview, base: int, what: str) -> memoryview:
        """The chunk of index row ``row`` in ``data`` (fetched from offset ``base``), its crc32 verified."""
        off, length, crc = int(row[0]), int(row[1]), int(row[2])
        c = data[off - base : off - base + length]
        if native.crc32(c) != crc:  # zlib's CRC-32, 2-3x faster where the codec is built
            raise TapeCorrupt(f"segment {obj.key}: chunk of {what} fails its crc32")
        return c

    def _check_chunk(self, obj: _Object, row: np.ndarray, data: memoryview, base: int, what: str) -> bytes:
        c = self._checked(obj, row, data, base, what)
        if obj.version >= 2:
            return bytes(c)
        try:
            return _dctx().decompress(c)
        except zstandard.ZstdError as e:
            raise TapeCorrupt(f"segment {obj.key}: chunk of {what} does not decompress") from e

    def _chunk_planes(
        self, obj: _Object, row: np.ndarray, data: memoryview, base: int, what: str, w: int, width: int
    ) -> np.ndarray:
        """The byte planes [w, width] of a step-major chunk, whatever its format."""
        raw = self._check_chunk(obj, row, data, base, what)
        if obj.version >= 2:
            try:
                return decode_planes(raw, w, width, _dctx())
            except ValueError as e:
                raise TapeCorrupt(f"segment {obj.key}: chunk of {what} is unreadable: {e}") from e
        if len(raw) != width * w:
            raise TapeCorrupt(f"segment {obj.key}: chunk of {what} has the wrong size")
        return np.frombuffer(raw, dtype=np.uint8).reshape(w, width)

    def _chunk_lanes(
        self,
        obj: _Object,
        row: np.ndarray,
        data: memoryview,
        base: int,
        what: str,
        lanes: _Lanes,
        width: int,
        m1: np.ndarray | None,
        m2: np.ndarray | None,
        out: np.ndarray,
        bits: bool = True,
    ) -> np.ndarray | None:
        """Decode one block into lanes ``out``; returns the stored bits on a keyframe block (else None; a
        native keyframe block returns None too unless ``bits``: they are the inverse monotone map of ``out``)."""
        w = lanes.signed.itemsize
        if obj.version >= 2:
            c = self._checked(obj, row, data, base, what)
            if native.is_native(c):  # decoded where it lies in the fetched range
                return _native_block(obj, int(row[3]), c, lanes, m1, m2, out, what, bits=bits)
            raw = bytes(c)
            try:
                u = decode_interleaved(raw, w, width, _dctx()).reshape(-1).view(lanes.unsigned)
            except ValueError as e:
                raise TapeCorrupt(f"segment {obj.key}: chunk of {what} is unreadable: {e}") from e
        else:
            u = _join_planes(self._chunk_planes(obj, row, data, base, what, w, width), lanes)
        return _apply_block(obj, int(row[3]), u, lanes, m1, m2, out, what)

    # -- positions

    def _locate(self, step: int) -> int:
        if isinstance(step, bool) or not isinstance(step, int | np.integer):
            raise TypeError(f"step must be an int, got {type(step).__name__}")
        with self._lock:
            pos = self._pos_of.get(int(step))
            steps = self._steps
        if pos is None:
            raise StepNotCaptured(f"step {int(step)} is not on the tape: {_describe_steps(steps)}")
        return pos

    def _segment_at(self, pos: int) -> tuple[_Segment, int]:
        i = bisect.bisect_right(self._seg_first, pos) - 1
        seg = self._segments[i]
        return seg, pos - seg.first_pos

    # -- decoding states

    def _state(self, t: int, pos: int) -> _State:
        """Decoded lanes of tensor t at a position (cached)."""
        with self._lock:
            hit = self._states.get((t, pos))
        if hit is not None:
            return hit
        unit = self._covered.get(pos)
        if unit is not None:
            return self._tm_state(t, pos, unit)
        seg, _ = self._segment_at(pos)
        if seg.kind == KIND_TENSOR_MAJOR:
            raise AssertionError("legacy segments are decoded elsewhere")
        # Walk back to a cached state, a time-major position or a keyframe; then decode forward.
        j = pos
        start: _State | None = None
        while True:
            with self._lock:
                hit = self._states.get((t, j))
            if hit is not None and j < pos:
                start = hit
                j += 1
                break
            if j in self._covered and j < pos:
                start = self._tm_state(t, j, self._covered[j], need_prev=True)
                j += 1
                break
            s, k = self._segment_at(j)
            if s.kind != KIND_STEP_MAJOR:
                raise TapeCorrupt(f"segment {s.key}: a delta chain reaches a segment of kind {s.kind!r}")
            base, nb = self._seg_rows(s, t)
            if int(self._seg_table(s)[base + k * nb, 3]) == MODE_KEY:
                break
            if j == 0:
                raise TapeCorrupt(
                    f"segment {s.key}: tensor {self._tensors[t].name!r} has no keyframe to start from"
                )
            j -= 1
        return self._decode_chain(t, j, pos, start)

    def _decode_chain(self, t: int, first: int, last: int, start: _State | None) -> _State:
        """Decode positions first..last of step-major tensor t, continuing from ``start`` (at first-1).

        Position by position (blocks in parallel), so memory is a few states plus one batch of compressed
        chunks (<= _FETCH_BYTES; a wide position's pieces of <= _PIECE_BYTES, read by the decoding threads)
        however wide the tensor and however long the chain. Every decoded state is cached when the whole
        chain fits a quarter of the cache; otherwise only the last two."""
        lanes = self._lanes[t]
        n = self._n_lanes(t)
        w = lanes.signed.itemsize
        name = self._tensors[t].name
        keep_all = (last - first + 1) * n * w <= self._states.max_bytes // 4
        m1 = start.m if start is not None else None
        m2 = start.prev if start is not None else None
        key64 = start.key64 if start is not None else None
        q = start.q if start is not None else 0.0
        state: _State | None = None
        spare: np.ndarray | None = None
        # Lanes decoded here and not cached, by id (held, so an id is never reused): overwritten two steps on.
        uncached: dict[int, np.ndarray] = {}
        pool = _read_pool()
        p = first
        while p <= last:
            seg, k0 = self._segment_at(p)
            k1 = min(len(seg.steps) - 1, k0 + (last - p))
            table = self._seg_table(seg)
            base, nb = self._seg_rows(seg, t)
            slices = _block_slices(n, seg.block_lanes)

            def end_of(k: int, table: np.ndarray = table, base: int = base, nb: int = nb) -> int:
                row = table[base + (k + 1) * nb - 1]
                return int(row[0] + row[1])

            k = k0
            while k <= k1:
                lo = int(table[base + k * nb, 0])
                ke = k
                wide = end_of(k) - lo > _PIECE_BYTES
                while not wide and ke < k1 and end_of(ke + 1) - lo <= _FETCH_BYTES:
                    ke += 1
                data = None if wide else memoryview(self._get_range(seg, lo, end_of(ke) - lo))
                for kk in range(k, ke + 1):
                    pos = seg.first_pos + kk
                    rows = table[base + kk * nb : base + (kk + 1) * nb]
                    what = f"tensor {name!r} at step {seg.steps[kk]}"
                    is_key = int(rows[0, 3]) == MODE_KEY
                    qk = float(np.int64(rows[0, 4]).view(np.float64))
                    # A state two positions back that nobody holds is overwritten (no fresh pages per step).
                    out = spare if spare is not None else _lane_buffer(n, lanes.signed)
                    spare = None
                    # A lossless keyframe's stored bits are the inverse monotone map of its lanes (_values
                    # derives them), so its state is one array, not two: a wide tensor's keyframe fits the
                    # cache and read_many's chain goes on from it. Lossy keyframes keep their bits (lanes 0).
                    kb = _lane_buffer(n, lanes.signed) if is_key and qk > 0 else None
                    if not is_key and m1 is None:
                        raise TapeCorrupt(
                            f"segment {seg.key}: chunk of {what} needs earlier steps the chain lacks"
                        )

                    # Jobs: runs of blocks (first block, end block, byte range, bytes if already read).
                    jobs: list[tuple[int, int, int, int, memoryview | None]] = (
                        [(b0, b1, plo, phi, None) for b0, b1, plo, phi in _pieces(rows, _PIECE_BYTES)]
                        if data is None
                        else [(b, b + 1, lo, -1, data) for b in range(len(slices))]
                    )
                    run = functools.partial(
                        self._decode_job,
                        jobs=jobs,
                        seg=seg,
                        rows=rows,
                        slices=slices,
                        lanes=lanes,
                        what=what,
                        is_key=is_key,
                        out=out,
                        key_bits=kb,
                        m1=m1,
                        m2=m2,
                    )
                    _parallel(run, len(jobs), pool if len(jobs) > 1 else None)
                    if is_key:
                        q = qk
                        key64 = self._bits_to_f64(kb, t) if kb is not None else None
                        prev = None
                    else:
                        prev = m1
                    out.setflags(write=False)
                    state = _State(out, prev, kb, key64, q)
                    if keep_all or pos >= last - 1:
                        with self._lock:
                            self._states.put(
                                (t, pos), state, out.nbytes + (kb.nbytes if kb is not None else 0)
                            )
                    if m2 is not None and id(m2) in uncached:
                        spare = uncached.pop(id(m2))
                        spare.setflags(write=True)
                    if not (keep_all or pos >= last - 1):
                        uncached[id(out)] = out
                    m1, m2 = out, prev
                k = ke + 1
            p = seg.first_pos + k1 + 1
        assert state is not None
        return state

    def _decode_job(
        self, i: int, *, jobs: list[tuple[int, int, int, int, memoryview | None]], seg: _Segment, **kw: Any
    ) -> None:
        """Blocks b0..b1-1 of job i of one step-major position (reading their bytes first if not read)."""
        b0, b1, lo, hi, data = jobs[i]
        if data is None:
            data = memoryview(self._get_range(seg, lo, hi - lo))
        for b in range(b0, b1):
            self._decode_block_into(b, seg=seg, data=data, base=lo, **kw)

    def _decode_block_into(
        self,
        b: int,
        *,
        seg: _Segment,
        rows: np.ndarray,
        data: memoryview,
        base: int,
        slices: list[slice],
        lanes: _Lanes,
        what: str,
        is_key: bool,
        out: np.ndarray,
        key_bits: np.ndarray | None,
        m1: np.ndarray | None,
        m2: np.ndarray | None,
    ) -> None:
        """Decode block b of one step-major position into ``out`` (and, on a lossy keyframe, its stored bits
        into ``key_bits``, its lanes 0)."""
        sl = slices[b]
        o = out[sl]
        if int(rows[b, 3]) == MODE_KEY and not is_key:
            raise TapeCorrupt(f"segment {seg.key}: chunk of {what} mixes keyframe and delta blocks")
        bits = self._chunk_lanes(
            seg,
            rows[b],
            data,
            base,
            what,
            lanes,
            sl.stop - sl.start,
            m1[sl] if m1 is not None else None,
            m2[sl] if m2 is not None else None,
            o,
            bits=key_bits is not None,
        )
        if bits is not None and key_bits is not None:
            key_bits[sl] = bits
            o[...] = 0

    def _bits_to_f64(self, bits: np.ndarray, t: int) -> np.ndarray:
        return bits.view(np.dtype(self._tensors[t].dtype)).astype(np.float64)

    def _tm_group(
        self,
        t: int,
        unit: _Unit,
        g: int,
        upto: int | None = None,
        last_two: bool = False,
        rows: Sequence[int] | None = None,
    ) -> np.ndarray:
        """Lanes of tensor t over group g of a time-major unit: [steps in group (or upto+1), lanes], cached.

        ``last_two``: only rows upto-1 and upto ([2, lanes], not cached), for tensors too wide to hold a
        group of; ``rows``: only those rows ([len(rows), lanes], not cached; upto = their largest): a group
        is decoded once for several steps of a wide tensor. A wide tensor's chunks are read in pieces
        (<= _PIECE_BYTES) by the threads that decode them."""
        if rows is not None:
            upto = max(rows)
        g0 = g * unit.group_steps
        gl = min(unit.group_steps, len(unit.steps) - g0)
        need = gl - 1 if upto is None else min(upto, gl - 1)
        ckey = ("tm", unit.parts[0].id, t, g)
        if last_two:
            rows = [max(0, need - 1), need]
        if rows is None:
            with self._lock:
                hit = self._blocks.get(ckey)
            if hit is not None and hit.shape[0] > need:
                return hit
        lanes = self._lanes[t]
        n = self._n_lanes(t)
        b0, nbt = self._tm_block0(t, unit.block_lanes), _n_blocks(n, unit.block_lanes)
        slices = _block_slices(n, unit.block_lanes)
        out = _lane_buffer((len(rows) if rows is not None else need + 1, n), lanes.signed)
        name = self._tensors[t].name
        spans: list[tuple[_Object, np.ndarray, int]] = []  # (part, its rows for the tensor, first block)
        b = 0
        while b < nbt:  # the tensor's blocks may span parts
            gb = b0 + b
            part = unit.parts[bisect.bisect_right(unit.part_lo, gb) - 1]
            table = self._tm_table(part)
            lo_block, hi_block = int(part.entry["block_lo"]), int(part.entry["block_hi"])
            take = min(nbt - b, hi_block - gb)
            r0 = g * (hi_block - lo_block) + (gb - lo_block)
            spans.append((part, table[r0 : r0 + take], b))
            b += take
        jobs: list[tuple[_Object, np.ndarray, int, int, int, memoryview | None]] = []
        if sum(int(r[-1, 0] + r[-1, 1] - r[0, 0]) for _, r, _ in spans) > _PIECE_BYTES:
            # Wide: each job reads its own piece of a part (reads overlap decoding, small reused buffers).
            for part, trows, first in spans:
                for j0, j1, lo, hi in _pieces(trows, _PIECE_BYTES):
                    jobs.append((part, trows[j0:j1], first + j0, lo, hi, None))
        else:  # one range read per part, its blocks decoded a few per job
            per = max(1, -(-nbt // (2 * (os.cpu_count() or 2))))
            for part, trows, first in spans:
                lo, hi = int(trows[0, 0]), int(trows[-1, 0] + trows[-1, 1])
                data = memoryview(self._get_range(part, lo, hi - lo))
                for j in range(0, len(trows), per):
                    jobs.append((part, trows[j : j + per], first + j, lo, hi, data))
        run = functools.partial(
            self._tm_decode_job,
            jobs=jobs,
            slices=slices,
            lanes=lanes,
            steps=gl,
            need=need,
            out=out,
            rows=rows,
            name=name,
        )
        _parallel(run, len(jobs), _read_pool() if len(jobs) > 1 else None)
        out.setflags(write=False)
        if rows is None:
            with self._lock:
                self._blocks.put(ckey, out, out.nbytes)
        return out

    def _tm_decode_job(
        self,
        i: int,
        *,
        jobs: list[tuple[_Object, np.ndarray, int, int, int, memoryview | None]],
        slices: list[slice],
        lanes: _Lanes,
        steps: int,
        need: int,
        out: np.ndarray,
        rows: Sequence[int] | None,
        name: str,
    ) -> None:
        """Decode the blocks of job i into ``out`` (all rows up to ``need``, or just ``rows``), reading its
        piece first when the job has no bytes yet."""
        part, trows, first, base, hi, data = jobs[i]
        if data is None:
            data = memoryview(self._get_range(part, base, hi - base))
        for j, row in enumerate(trows):
            sl = slices[first + j]
            c = data[int(row[0]) - base : int(row[0]) - base + int(row[1])]
            if native.crc32(c) != int(row[2]):
                raise TapeCorrupt(f"segment {part.key}: chunk of tensor {name!r} fails its crc32")
            try:
                if rows is not None:
                    m = decode_time_major_chunk(
                        c, lanes.signed, steps, sl.stop - sl.start, int(row[3]), upto=need
                    )
                    for k, r in enumerate(rows):
                        out[k, sl] = m[r]
                else:
                    decode_time_major_chunk(
                        c, lanes.signed, steps, sl.stop - sl.start, int(row[3]), upto=need, out=out[:, sl]
                    )
            except (zstandard.ZstdError, ValueError) as e:
                raise TapeCorrupt(f"segment {part.key}: chunk of tensor {name!r} is unreadable: {e}") from e

    def _tm_block0(self, t: int, block_lanes: int) -> int:
        return sum(_n_blocks(self._n_lanes(u), block_lanes) for u in range(t))

    def _tm_table(self, part: _Object) -> np.ndarray:
        table = self._load_table(part, _ROW)
        return table

    def _tm_state(self, t: int, pos: int, unit: _Unit, need_prev: bool = False) -> _State:
        o = pos - unit.first_pos
        g, j = divmod(o, unit.group_steps)
        gl = min(unit.group_steps, len(unit.steps) - g * unit.group_steps)
        # A group of a very wide tensor would not fit the cache: decode just the rows asked for.
        narrow = gl * self._n_lanes(t) * self._lanes[t].signed.itemsize <= self._blocks.max_bytes // 2
        grp = (
            self._tm_group(t, unit, g, upto=j)
            if narrow
            else self._tm_group(t, unit, g, upto=j, last_two=True)
        )
        m = grp[j] if narrow else grp[1]
        if not need_prev:
            prev: np.ndarray | None = None
        elif j > 0:
            prev = grp[j - 1] if narrow else grp[0]
        elif o > 0:
            prev = self._tm_state(t, pos - 1, unit).m
        elif pos > 0:
            prev = self._state(t, pos - 1).m
        else:
            prev = None
        return _State(m, prev)

    # -- public reads

    def _with_retry(self, fn: Callable[[], Any]) -> Any:
        try:
            return fn()
        except _SegmentGone:
            # Compaction may have replaced it since our indexes were read: look again, once.
            self.refresh()
            try:
                return fn()
            except _SegmentGone as e:
                raise TapeCorrupt(
                    f"segment {e.key} is listed in the manifest but missing from the store"
                ) from None

    def read(self, name: str, step: int) -> np.ndarray:
        """Tensor ``name`` at ``step``, bit-exact (or within the lossy bound), as a new writable array."""
        info = self.tensor(name)
        t = self._tensor_index[name]
        pos = self._locate(step)
        return self._with_retry(lambda: self._read(t, info, pos))  # type: ignore[no-any-return]

    def _read(self, t: int, info: TensorInfo, pos: int) -> np.ndarray:
        if pos not in self._covered and self._segment_at(pos)[0].kind == KIND_TENSOR_MAJOR:
            return legacy.read(self, t, info, pos)
        st = self._state(t, pos)
        return self._values(t, info, st)

    def _values(self, t: int, info: TensorInfo, st: _State) -> np.ndarray:
        dt = np.dtype(info.dtype)
        lanes = self._lanes[t]
        if st.key_bits is not None:
            v = _lane_buffer(st.key_bits.size, st.key_bits.dtype)
            np.copyto(v, st.key_bits)
            return v.view(dt).reshape(info.shape)
        if st.q > 0:
            assert st.key64 is not None
            v = st.m.astype(np.float64)
            np.multiply(v, st.q, out=v)
            np.add(v, st.key64, out=v)
            return v.astype(dt).reshape(info.shape)
        return _unmono(st.m, lanes, out=_lane_buffer(st.m.size, st.m.dtype)).view(dt).reshape(info.shape)

    def _values_in_place(self, t: int, info: TensorInfo, m: np.ndarray) -> np.ndarray:
        """Values of lossless lanes ``m`` (a writable row nobody else holds), made in place: no fresh 100 MB
        for each of a wide tensor's steps."""
        lanes = self._lanes[t]
        if lanes.monotone:
            tmp = np.empty(min(m.size, 1 << 20), dtype=m.dtype)
            for i in range(0, m.size, tmp.size):
                part = m[i : i + tmp.size]
                part[...] = _unmono(part, lanes, out=tmp[: part.size])
        return m.view(np.dtype(info.dtype)).reshape(info.shape)

    def read_many(self, name: str, steps: Sequence[int]) -> list[np.ndarray]:
        """read() of several steps of one tensor, in the order given (each a fresh array). Steps in one
        time-major group of a tensor too wide to cache its group are decoded from that group once; the others
        are read one by one in the order given (a step-major chain goes on from the state before)."""
        info = self.tensor(name)
        t = self._tensor_index[name]
        positions = [self._locate(s) for s in steps]
        self._maybe_refresh()
        out: list[np.ndarray | None] = [None] * len(positions)
        shared: dict[tuple[int, int], list[int]] = {}
        for k, pos in enumerate(positions):
            unit = self._covered.get(pos)
            if unit is None:
                continue
            g = (pos - unit.first_pos) // unit.group_steps
            gl = min(unit.group_steps, len(unit.steps) - g * unit.group_steps)
            if gl * self._n_lanes(t) * self._lanes[t].signed.itemsize > self._blocks.max_bytes // 2:
                shared.setdefault((id(unit), g), []).append(k)
        for ks in shared.values():
            if len({positions[k] for k in ks}) < 2:
                continue
            unit = self._covered[positions[ks[0]]]
            g = (positions[ks[0]] - unit.first_pos) // unit.group_steps
            rows = sorted({positions[k] - unit.first_pos - g * unit.group_steps for k in ks})
            grp: np.ndarray = self._with_retry(functools.partial(self._tm_group, t, unit, g, rows=rows))
            grp.setflags(write=True)  # this call's own rows: their values are made where they lie
            made: dict[int, np.ndarray] = {}
            for k in ks:
                j = positions[k] - unit.first_pos - g * unit.group_steps
                i = rows.index(j)
                if i in made:  # the same step asked for twice: a copy of its own
                    out[k] = made[i].copy()
                else:
                    out[k] = made[i] = self._values_in_place(t, info, grp[i])
        return [o if o is not None else self.read(name, steps[k]) for k, o in enumerate(out)]

    def trajectory(self, name: str, flat_indices: Sequence[int]) -> tuple[list[int], np.ndarray]:
        """Values of the chosen elements (indices into the flattened tensor) at every committed step:
        ``(steps, values)`` with values of shape [len(steps), len(flat_indices)] (``trajectories.read``)."""
        return trajectories.read(self, name, flat_indices)

    # -- compaction support

    def uncovered_segments(self) -> list[dict[str, Any]]:
        """Listed segments not yet replaced by time-major parts, in order: key, kind, steps, first position,
        raw and stored bytes, block_lanes, whether lossy."""
        with self._lock:
            return [
                {
                    "key": str(s.entry["key"]),
                    "kind": s.kind,
                    "steps": list(s.steps),
                    "first_pos": s.first_pos,
                    "raw_bytes": int(s.entry.get("raw_bytes", 0)),
                    "size": s.size,
                    "block_lanes": s.block_lanes,
                    "lossy": s.lossy,
                }
                for s in self._segments
                if s.first_pos not in self._covered
            ]

    def lanes_layout(self, name: str) -> tuple[np.dtype[Any], int]:
        """(signed integer lane dtype, number of lanes) of a tensor."""
        t = self._tensor_index[self.tensor(name).name]
        return self._lanes[t].signed, self._n_lanes(t)

    def step_major_block(self, name: str, block: int, first_pos: int, last_pos: int) -> np.ndarray:
        """Lanes of one step-major block of a tensor at positions first..last: [positions, block lanes].

        Memory stays at one block per position however wide the tensor (what compaction needs)."""
        t = self._tensor_index[self.tensor(name).name]
        return self._with_retry(lambda: self._step_major_block(t, block, first_pos, last_pos))  # type: ignore[no-any-return]

    def _step_major_block(self, t: int, block: int, first: int, last: int) -> np.ndarray:
        lanes = self._lanes[t]
        n = self._n_lanes(t)
        seg, k = self._segment_at(first)
        sl = _block_slices(n, seg.block_lanes)[block]
        width = sl.stop - sl.start
        out = np.empty((last - first + 1, width), dtype=lanes.signed)
        base, nb = self._seg_rows(seg, t)
        m1: np.ndarray | None = None
        m2: np.ndarray | None = None
        if int(self._seg_table(seg)[base + k * nb, 3]) != MODE_KEY:
            st = self._state(t, first - 1)
            if st.prev is None and (first - 1) in self._covered:
                st = self._tm_state(t, first - 1, self._covered[first - 1], need_prev=True)
            m1 = st.m[sl]
            m2 = st.prev[sl] if st.prev is not None else None
        name = self._tensors[t].name
        for i, p in enumerate(range(first, last + 1)):
            seg, k = self._segment_at(p)
            if seg.kind != KIND_STEP_MAJOR or seg.lossy:
                raise ValueError(f"segment {seg.key} is not a lossless step-major segment")
            if _block_slices(n, seg.block_lanes)[block] != sl:
                raise ValueError(f"segment {seg.key} cuts tensor {name!r} into different blocks")
            table = self._seg_table(seg)
            base, nb = self._seg_rows(seg, t)
            row = table[base + k * nb + block]
            data = memoryview(self._get_range(seg, int(row[0]), int(row[1])))
            cur = out[i]
            what = f"tensor {name!r} at step {seg.steps[k]}"
            bits = self._chunk_lanes(seg, row, data, int(row[0]), what, lanes, width, m1, m2, cur)
            m1, m2 = (cur, None) if bits is not None else (cur, m1)
        return out

    # -- integrity

    def verify(self) -> None:
        """Download every object serving the tape and check its size, sha256 (where its entry has one),
        index and every chunk's crc32.

        Raises TapeCorrupt naming the first bad object."""
        with self._lock:
            replaced = {k for u in self._units if u.first_pos in self._covered for k in u.replaces}
            segments = [s for s in self._segments if str(s.entry["key"]) not in replaced]
            parts = [p for u in set(self._covered.values()) for p in u.parts]
        for obj in [*segments, *parts]:
            try:
                data = self.store.get(obj.key)
            except ObjectNotFound as e:
                raise TapeCorrupt(f"segment {obj.key} is listed in the manifest but missing") from e
            if len(data) != obj.size:
                raise TapeCorrupt(f"segment {obj.key} is {len(data)} bytes, the manifest says {obj.size}")
            if obj.sha256 and hashlib.sha256(data).hexdigest() != obj.sha256:
                raise TapeCorrupt(f"segment {obj.key} fails its sha256")
            table = self._seg_table(obj) if isinstance(obj, _Segment) else self._tm_table(obj)
            mv = memoryview(data)
            for row in table:
                raw = self._check_chunk(obj, row, mv, 0, "a tensor")
                if native.is_native(raw):
                    try:
                        native.kind_of(raw)
                    except native.NativeCodecError as e:
                        raise TapeCorrupt(f"segment {obj.key}: a chunk is unreadable: {e}") from e
                elif obj.version >= 2:
                    try:
                        check_planes(raw, _dctx())
                    except ValueError as e:
                        raise TapeCorrupt(f"segment {obj.key}: a chunk is unreadable: {e}") from e

    def clear_cache(self) -> None:
        """Drop cached decoded data (object tables are kept)."""
        with self._lock:
            self._states.clear()
            self._blocks.clear()
