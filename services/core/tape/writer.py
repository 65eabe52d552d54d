"""The step-major writer: what training calls once per captured step.

A segment holds consecutive captured steps. Each (tensor, step) is cut into blocks of at most
``block_lanes`` lanes, each block one zstd frame ("chunk"), laid out tensor-major then step then block, so
one tensor over a run of steps is one range read. A chunk is either a keyframe (the raw bits, byte-shuffled)
or a delta: the residual ``m_t - p`` against a prediction ``p = m_{t-1}`` (mode D1) or
``p = 2 m_{t-1} - m_{t-2}`` (D2, linear extrapolation, which suits momentum optimizers), zigzag-mapped and
split into byte planes. Keyframes come every ``keyframe_interval`` captured steps for all tensors,
independent of segment boundaries: deltas chain across segments.

Lossy mode (opt-in): keyframes stay lossless; later steps of a float tensor are stored as the integer grid
index ``K = round((x - key) / q)`` with ``q = 2 * rel_error * max|key|``, ``key`` the tensor at its last
keyframe, so a quantization error never accumulates. The ``K`` lanes then take the same path.
"""

from __future__ import annotations

import logging
import threading
import time
import zlib
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np
import zstandard

from netlapse.core.store import Store, aligned_empty
from netlapse.core.tape import native
from netlapse.core.tape.container import (
    _ROW,
    CODEC2,
    CODEC2_LOSSY,
    CODEC3,
    CODEC3_LOSSY,
    COMPACT_DIR,
    COMPACTION_NAME,
    FORMAT,
    FORMAT_NATIVE,
    INDEX_DIR,
    KIND_STEP_MAJOR,
    MANIFEST_NAME,
    READ_FORMATS,
    SEGMENTS_DIR,
    Placed,
    TapeCorrupt,
    TensorInfo,
    _check_tensor_infos,
    index_part,
    index_part_key,
    manifest_totals,
    merged_segments,
    pack_object,
)
from netlapse.core.tape.lanes import MODE_D1, MODE_DENSE, MODE_KEY, MODE_NATIVE, _lanes_of, _lanes_view, _mono
from netlapse.core.tape.options import TapeOptions
from netlapse.core.tape.planes import PlaneCoder
from netlapse.core.tape.transform import (
    NUMPY_TRANSFORM,
    NumpyTransform,
    TorchTransform,
    make_transform,
    use_native,
)
from netlapse.core.tape.util import _block_slices, _norm_prefix, _parallel, _set_thread_nice

log = logging.getLogger(__name__)

# Lossy grid indexes beyond this fall back to a keyframe (int32 lanes with headroom for the predictor).
_GRID_LIMIT = float(1 << 29)
# zstd's multi-threaded mode splits input into jobs of this size.
_MT_JOB_BYTES = 1 << 20
# Delta steps between two D1/D2 votes of a block.
_VOTE_EVERY = 4
# A delta block that compressed to more than this fraction of its raw bytes is also tried as a dense block.
_DENSE_TRY = 0.9
# ... when it holds at least this many bytes. A smaller one (a bias vector) would gain a few bytes at most and
# its retry cost ~5 % of the writer's time per snapshot; its chunk never exceeds its lanes plus a header (the
# codec stores a block that does not shrink as it is).
_DENSE_MIN_BYTES = 4096


@dataclass(frozen=True)
class SealedSegment:
    """A segment packed by TapeWriter.seal(), waiting for publish(): its bytes (a view of ``buffer`` when
    the writer assembled it in one of its reused buffers) and its manifest entry."""

    data: bytes | memoryview
    entry: dict[str, Any]
    buffer: np.ndarray | None = None


@dataclass
class _TensorState:
    """What the writer remembers of one tensor: lanes of the last two steps and, in lossy mode, the key."""

    m1: np.ndarray | None = None
    m2: np.ndarray | None = None
    key64: np.ndarray | None = None  # lossy: the keyframe's values as float64
    q: float = 0.0  # lossy: grid step; 0 = lossless


class TapeWriter:
    """Encodes snapshots into step-major segments and uploads them; each upload is listed by a new index part.

    ``raw_bytes`` counts every appended snapshot; ``stored_bytes`` counts uploaded segments plus the
    compressed bytes of the open one. ``last_committed_step`` is the last step a reader can see.
    ``encode_seconds`` is the wall time spent in append() (encoding), ``commit_seconds`` in sealing
    (packing a segment) and uploads.
    One thread appends, seals and commits (the capture pipeline's writer thread, or the training thread in
    inline mode); publish() may run on another, one at a time. ``threads`` > 1 encodes the blocks of each
    snapshot on that many helper threads; with one, every block of a snapshot is one native call."""

    def __init__(
        self,
        store: Store,
        prefix: str,
        tensors: Sequence[TensorInfo],
        options: TapeOptions | None = None,
        *,
        on_commit: Callable[[int], None] | None = None,
        resume: bool = False,
        overwrite: bool = False,
        **overrides: Any,
    ) -> None:
        """Start a tape at ``prefix`` encoded as ``options`` says (TapeOptions' defaults if None; keyword
        ``overrides`` change single fields, e.g. ``segment_max_steps=4``). An existing tape there is an error
        unless ``resume`` (append after its last committed step, same tensors required; the first appended
        step is a keyframe) or ``overwrite`` (delete it first). ``on_commit(last step)`` runs after each
        segment is listed."""
        opts = (options or TapeOptions()).with_(**overrides)
        self.options = opts
        self.store = store
        self.prefix = _norm_prefix(prefix)
        self.tensors = _check_tensor_infos(tensors)
        self._names = [t.name for t in self.tensors]
        self.segment_target_bytes = opts.segment_target_bytes
        self.segment_max_steps = opts.segment_max_steps
        self.zstd_level = opts.zstd_level
        self.keyframe_interval = opts.effective_keyframe_interval
        self.block_lanes = opts.block_lanes
        self.lossy_rel_error = opts.lossy_rel_error
        self.on_commit = on_commit
        self._dtypes = [np.dtype(t.dtype) for t in self.tensors]
        self._lanes = [_lanes_of(dt) for dt in self._dtypes]
        self._n_lanes = [t.numel * ln.per_elem for t, ln in zip(self.tensors, self._lanes, strict=True)]
        self._nbytes = [t.nbytes for t in self.tensors]
        self._largest = int(np.argmax(self._nbytes))  # its chunks open every segment (_encode_snapshot)
        self._slices = [_block_slices(n, self.block_lanes) for n in self._n_lanes]
        self.zstd_threads = opts.zstd_threads
        mt: zstandard.ZstdCompressor | None = None
        if self.zstd_threads > 0:
            params = zstandard.ZstdCompressionParameters.from_level(
                self.zstd_level, threads=self.zstd_threads, job_size=_MT_JOB_BYTES, write_content_size=1
            )
            mt = zstandard.ZstdCompressor(compression_params=params)
        self._coder = PlaneCoder(self.zstd_level, mt, 2 * _MT_JOB_BYTES)
        self._transform: NumpyTransform | TorchTransform = make_transform(opts)
        self.encoder = self._transform.name
        # The native codec takes the numpy encoder's blocks of 2/4/8-byte lanes (others: zstd byte planes).
        self._native = use_native(opts, self._transform)
        self._format = FORMAT_NATIVE if self._native else FORMAT
        self.threads = max(1, opts.threads)
        # > 1: append() codes each snapshot on that many threads of the calling thread's OpenMP team (the
        # capture's inline mode sets it to torch's thread count; see native.BlockBatch.encode).
        self.team = 1
        self.thread_nice = opts.thread_nice
        self._pool: ThreadPoolExecutor | None = None
        if self.threads > 1:
            self._pool = ThreadPoolExecutor(
                max_workers=self.threads,
                thread_name_prefix="tape-encode",
                initializer=_set_thread_nice,
                initargs=(self.thread_nice,),
            )

        self._segments: list[dict[str, Any]] = []
        self._committed_raw = 0
        self._committed_stored = 0
        self.raw_bytes = 0
        self.stored_bytes = 0
        self.encode_seconds = 0.0
        self.commit_seconds = 0.0
        self.last_committed_step: int | None = None
        # Segments sealed but not yet uploaded, oldest first (seal() on the appending thread, publish() on
        # any one thread); _lock guards them and the committed totals.
        self._sealed: list[SealedSegment] = []
        self._free_buffers: list[np.ndarray] = []  # segment buffers whose segment was published
        self._lock = threading.Lock()
        self._publish_lock = threading.Lock()
        self._last_step: int | None = None
        self._position = 0  # captured steps appended over the tape's life
        self._closed = False
        self._state = [_TensorState() for _ in self.tensors]
        # Reused per-tensor buffers: lanes of three steps in rotation; residual and scratch lanes; planes.
        self._ring: list[list[Any]] = [[] for _ in self.tensors]
        self._scratch: list[tuple[Any, Any, np.ndarray] | None] = [None] * len(self.tensors)
        self._dense: list[np.ndarray | None] = [None] * len(self.tensors)
        # Float bits of the step being appended, where the native codec maps them to lanes itself.
        self._bits: list[np.ndarray | None] = [None] * len(self.tensors)
        # Their addresses, and those of the lanes they are predicted from, for the native codec (_plan).
        self._addrs: list[tuple[int, int, int | None, int | None] | None] = [None] * len(self.tensors)
        self._ring_addrs: dict[int, int] = {}
        # _encode_snapshot: per block (tensor, lanes, byte offset, width), their summed bound, the chunk arena.
        self._batch: np.ndarray | None = None
        self._batch_bound = 0
        self._batch_blocks: list[tuple[int, int]] = []  # (tensor, block) per row of _batch
        self._batch_args: native.BlockBatch | None = None  # its job rows, sizes and CRCs, reused
        self._placed_rows = (0, 0, 0)  # rows of the largest tensor in _batch, and their summed bound
        self._arena: np.ndarray | None = None
        self._arena_addr = 0
        self._modes: dict[
            tuple[int, int], tuple[int, int]
        ] = {}  # (tensor, block) -> (mode, steps since vote)
        self._reset_open_segment()

        manifest_key = self.prefix + MANIFEST_NAME
        if store.exists(manifest_key):
            if resume:
                self._load_for_resume(store.get_json(manifest_key))
            elif overwrite:
                # An empty prefix would mean the whole store; then only the tape's own objects go.
                if self.prefix:
                    store.delete_prefix(self.prefix)
                else:
                    for p in (SEGMENTS_DIR, COMPACT_DIR, INDEX_DIR, COMPACTION_NAME):
                        if store.list(p):
                            store.delete_prefix(p)
            else:
                raise FileExistsError(
                    f"a tape already exists at {store.url}/{self.prefix}; pass resume=True or overwrite=True"
                )
        # The manifest up front lets readers list tensors of a live run before its first segment; segments
        # committed later are listed by index parts, and close() writes them all into the manifest again.
        self._write_manifest(complete=False)

    def _reset_open_segment(self) -> None:
        self._open_steps: list[int] = []
        # [t][k][block]; views into the chunk arena (_encode_snapshot), which the next segment then reuses.
        self._open_chunks: list[list[list[bytes | memoryview | Placed]]] = [[] for _ in self.tensors]
        self._arena_used = 0
        # The open segment's buffer, whose first _placed_used bytes hold the largest tensor's chunks
        # (_encode_snapshot writes them there: seal() copies only the others). None until the first append.
        self._segbuf: np.ndarray | None = None
        self._segbuf_addr = 0
        self._placed_used = 0
        self._open_rows: list[list[np.ndarray]] = [[] for _ in self.tensors]  # [t][k] -> [blocks, 5]
        self._open_keyframes: list[int] = []
        self._open_bytes = 0
        self._open_raw = 0

    def _load_for_resume(self, m: Mapping[str, Any]) -> None:
        if m.get("format") not in READ_FORMATS:
            raise TapeCorrupt(
                f"cannot resume tape at {self.prefix!r}: unsupported format {m.get('format')!r}"
            )
        theirs = [TensorInfo.from_json(t) for t in m.get("tensors", [])]
        if theirs != self.tensors:
            raise ValueError(f"cannot resume tape at {self.prefix!r}: its tensors differ from the ones given")
        self._segments = merged_segments(self.store, self.prefix, m)
        totals = manifest_totals(self._segments)
        self._committed_raw = int(totals["raw_bytes"])
        self._committed_stored = int(totals["stored_bytes"])
        self.raw_bytes, self.stored_bytes = self._committed_raw, self._committed_stored
        self._position = int(totals["steps_count"])
        if self._segments:
            self.last_committed_step = int(self._segments[-1]["last_step"])
            self._last_step = self.last_committed_step

    # -- appending

    def _check(self, step: int, arrays: Mapping[str, Any]) -> list[Any]:
        if self._closed:
            raise RuntimeError("append on a closed TapeWriter")
        if isinstance(step, bool) or not isinstance(step, int | np.integer):
            raise TypeError(f"step must be an int, got {type(step).__name__}")
        step = int(step)
        if step < 0:
            raise ValueError(f"step must be >= 0, got {step}")
        if self._last_step is not None and step <= self._last_step:
            raise ValueError(f"steps must strictly increase: got step {step} after step {self._last_step}")
        names = self._names
        if len(arrays) != len(names) or not all(n in arrays for n in names):
            missing = [n for n in names if n not in arrays]
            extra = sorted(set(arrays) - set(names))
            raise ValueError(
                f"snapshot at step {step} must hold exactly the tape's tensors; "
                f"missing: {missing or 'none'}, unexpected: {extra or 'none'}"
            )
        torch_ok = isinstance(self._transform, TorchTransform)
        checked: list[Any] = []
        for info, dt in zip(self.tensors, self._dtypes, strict=True):
            a = arrays[info.name]
            if isinstance(a, np.generic):  # numpy arithmetic on 0-d arrays returns scalars
                a = np.asarray(a)
            if isinstance(a, np.ndarray) and a.dtype == dt and a.shape == info.shape:
                checked.append(a)  # the common case, without building dtype names
                continue
            if torch_ok and _is_torch(a):
                got_dt = str(a.dtype).removeprefix("torch.")
                shape = tuple(a.shape)
            elif isinstance(a, np.ndarray):
                got_dt, shape = str(a.dtype), a.shape
            else:
                raise TypeError(
                    f"tensor {info.name!r} at step {step}: expected a numpy array, got {type(a).__name__}"
                )
            if shape != info.shape or got_dt != dt.name:
                raise ValueError(
                    f"tensor {info.name!r} at step {step}: expected shape {info.shape} dtype {info.dtype}, "
                    f"got shape {shape} dtype {got_dt}"
                )
            checked.append(a)
        return checked

    def append(self, step: int, arrays: Mapping[str, Any], *, commit: bool = True) -> None:
        """Add the snapshot at ``step`` (strictly after the previous one). ``arrays`` maps every tensor name
        to an array of its shape and dtype (numpy; torch tensors too, on any device, with the torch
        encoder); they may be views into a buffer reused after this returns. A full segment is committed
        here, unless ``commit`` is False: then the caller seals it (``segment_full``, seal()) and publishes
        it, e.g. on another thread, so this thread never waits for storage."""
        checked = self._check(step, arrays)
        t0 = time.perf_counter()
        step = int(step)
        key_step = self._position % self.keyframe_interval == 0 or any(s.m1 is None for s in self._state)
        jobs: list[tuple[int, int]] = []
        plans: list[tuple[bool, Any, Any]] = []
        for i, a in enumerate(checked):
            plans.append(self._plan(i, a, key_step))
            jobs.extend((i, b) for b in range(len(self._slices[i])))

        def run(j: int) -> tuple[bytes | memoryview, int, float, int]:
            i, b = jobs[j]
            return self._encode_block(i, b, plans[i])

        try:
            if self._pool is None and jobs and all(a is not None for a in self._addrs):
                results = self._encode_snapshot(plans)  # one native call for every block
            else:
                results = _parallel(run, len(jobs), self._pool)
        finally:
            self._bits = [None] * len(self.tensors)
            self._addrs = [None] * len(self.tensors)
        chunks: list[list[bytes | memoryview]] = [[] for _ in self.tensors]
        cols: list[list[tuple[int, int, int]]] = [[] for _ in self.tensors]  # crc, mode, param's bits
        for (i, _), (chunk, mode, param, crc) in zip(jobs, results, strict=True):  # jobs: tensor-major
            chunks[i].append(chunk)
            cols[i].append((crc, mode, int(np.float64(param).view(np.int64)) if param else 0))
            self._open_bytes += len(chunk)
        for i, c in enumerate(cols):
            self._open_chunks[i].append(chunks[i])
            rows = np.zeros((len(c), _ROW), dtype=np.int64)
            rows[:, 2:] = c
            self._open_rows[i].append(rows)
        for i, (is_key, m, _) in enumerate(plans):
            st = self._state[i]
            st.m2, st.m1 = (None, m) if is_key else (st.m1, m)
            self._open_raw += self._nbytes[i]
        if all(p[0] for p in plans):
            self._open_keyframes.append(step)
        self._open_steps.append(step)
        self._last_step = step
        self._position += 1
        self._update_totals()
        self.encode_seconds += time.perf_counter() - t0
        if commit and self.segment_full:
            self.commit()

    @property
    def team_capable(self) -> bool:
        """Whether append() can code snapshots on the calling thread's OpenMP team (``team`` > 1): every
        tensor on the native codec's float-bits path, no helper threads of its own, an OpenMP runtime loaded."""
        return (
            self._pool is None
            and self._native
            and all(ln.monotone and ln.signed.itemsize in native.WIDTHS for ln in self._lanes)
            and native.omp_team() is not None
        )

    @property
    def team_cpu_seconds(self) -> float:
        """CPU time that other threads of the appending thread's OpenMP team spent coding snapshots (``team``
        > 1); the appending thread's own is not in it."""
        return float(self._batch_args.helper_cpu_ns[0]) / 1e9 if self._batch_args is not None else 0.0

    @property
    def segment_full(self) -> bool:
        """Whether the open segment has reached its size or step bound (append() then commits it, unless
        told not to: then seal() and publish() it)."""
        return (
            self._open_bytes >= self.segment_target_bytes or len(self._open_steps) >= self.segment_max_steps
        )

    @property
    def pending_segments(self) -> int:
        """Segments sealed and not yet published."""
        with self._lock:
            return len(self._sealed)

    def _update_totals(self) -> None:
        with self._lock:
            sealed_raw = sum(s.entry["raw_bytes"] for s in self._sealed)
            sealed_stored = sum(len(s.data) for s in self._sealed)
            self.raw_bytes = self._committed_raw + sealed_raw + self._open_raw
            self.stored_bytes = self._committed_stored + sealed_stored + self._open_bytes

    def _plan(self, i: int, a: Any, key_step: bool) -> tuple[bool, Any, Any]:
        """Keyframe or delta for tensor i: (is_key, new lanes state, lanes whose zigzag a keyframe stores)."""
        lanes = self._lanes[i]
        if self.lossy_rel_error is not None and lanes.lossy_ok:
            return self._plan_lossy(i, a, key_step)
        if self._native and lanes.monotone and lanes.signed.itemsize in native.WIDTHS:
            # The native codec maps float bits to lanes block by block while it encodes (native.encode_bits).
            m = self._slot(i)
            bits = self._bits[i] = np.ascontiguousarray(a).reshape(-1).view(np.uint8).view(lanes.signed)
            st = self._state[i]
            self._addrs[i] = (
                native.address(bits),
                self._address(m),
                self._address(st.m1) if st.m1 is not None and not key_step else None,
                self._address(st.m2) if st.m2 is not None and not key_step else None,
            )
            return key_step, m, (m if key_step else None)
        _, tmp, _ = self._bufs(i)
        m = self._transform.lanes_into(a, lanes, self._slot(i), tmp)
        return key_step, m, (m if key_step else None)

    def _plan_lossy(self, i: int, a: np.ndarray, key_step: bool) -> tuple[bool, Any, Any]:
        lanes, st = self._lanes[i], self._state[i]
        if not key_step and st.key64 is not None:
            x = np.ascontiguousarray(a).reshape(-1).astype(np.float64)
            with np.errstate(invalid="ignore", over="ignore"):
                grid = np.subtract(x, st.key64)
                np.divide(grid, st.q, out=grid)
                np.rint(grid, out=grid)
            if bool(np.isfinite(grid).all()) and (grid.size == 0 or float(np.abs(grid).max()) < _GRID_LIMIT):
                return False, grid.astype(lanes.signed), None
            key_step = True  # diverged or non-finite: store it whole, exactly
        x = np.ascontiguousarray(a).reshape(-1).astype(np.float64)
        finite = x[np.isfinite(x)]
        scale = float(np.abs(finite).max()) if finite.size else 0.0
        assert self.lossy_rel_error is not None
        # Slightly under 2*eps so the float rounding of key + K*q stays inside the bound.
        st.q = 2.0 * self.lossy_rel_error * (scale if scale > 0 else 1.0) * (1 - 2.0**-10)
        st.key64 = x
        _, tmp, _ = self._bufs(i)
        key_lanes = _mono(_lanes_view(a, lanes), lanes, out=np.empty(self._n_lanes[i], lanes.signed), tmp=tmp)
        return True, np.zeros(self._n_lanes[i], dtype=lanes.signed), key_lanes

    def _address(self, a: np.ndarray) -> int:
        """native.address of one of the writer's own lane buffers (they live as long as the writer), cached."""
        addr = self._ring_addrs.get(id(a))
        if addr is None:
            addr = self._ring_addrs[id(a)] = native.address(a)
        return addr

    def _slot(self, i: int) -> Any:
        """A lanes buffer for tensor i that holds neither of the two remembered steps."""
        st, ring = self._state[i], self._ring[i]
        for a in ring:
            if a is not st.m1 and a is not st.m2:
                return a
        a = self._transform.new_lanes(self._n_lanes[i], self._lanes[i])
        ring.append(a)
        return a

    def _bufs(self, i: int) -> tuple[Any, Any, np.ndarray]:
        """(residual lanes, scratch lanes, byte planes [k, n]) of tensor i; blocks use disjoint slices."""
        b = self._scratch[i]
        if b is None:
            n, lanes = self._n_lanes[i], self._lanes[i]
            lossy = self.lossy_rel_error is not None and lanes.lossy_ok
            tr = NumpyTransform() if lossy else self._transform
            b = self._scratch[i] = (
                tr.new_lanes(n, lanes),
                tr.new_lanes(n, lanes),
                np.empty((lanes.signed.itemsize, n), np.uint8),
            )
        return b

    def _encode_block(
        self, i: int, b: int, plan: tuple[bool, Any, Any]
    ) -> tuple[bytes | memoryview, int, float, int]:
        """Block b of tensor i: (chunk, mode, param, the chunk's crc32 or -1 where pack_object computes it)."""
        is_key, m, key_lanes = plan
        sl = self._slices[i][b]
        lanes, st = self._lanes[i], self._state[i]
        lossy = self.lossy_rel_error is not None and lanes.lossy_ok
        q = st.q if lossy else 0.0
        if self._native and lanes.signed.itemsize in native.WIDTHS:
            chunk, mode, crc = self._encode_native(i, sl, is_key, m, key_lanes)
            return chunk, mode, q, crc
        tr = NUMPY_TRANSFORM if lossy else self._transform
        res, tmp, out = self._bufs(i)
        rs, ts, os_ = res[sl], tmp[sl], out[:, sl]
        if is_key:
            bp = tr.planes(key_lanes[sl], None, None, MODE_KEY, lanes, rs, ts, os_)
            return self._coder.encode(bp.planes, (i, b, 0), bp.nonzero), MODE_KEY, q, -1
        assert st.m1 is not None
        m2 = st.m2[sl] if st.m2 is not None else None
        # The D1/D2 vote is repeated every _VOTE_EVERY delta steps of a block (the better predictor changes
        # slowly: it follows the optimizer's momentum); a step right after a keyframe has only D1.
        last_mode, age = self._modes.get((i, b), (MODE_D1, 0))
        if m2 is None:
            mode, age = MODE_D1, 0
        elif age == 0:
            mode = tr.mode(m[sl], st.m1[sl], m2)
        else:
            mode = last_mode
        self._modes[(i, b)] = (mode, (age + 1) % _VOTE_EVERY if m2 is not None else 0)
        bp = tr.planes(m[sl], st.m1[sl], m2, mode, lanes, rs, ts, os_)
        chunk = self._coder.encode(bp.planes, (i, b, 1), bp.nonzero)
        if len(chunk) > _DENSE_TRY * os_.size:
            # The residual does not shrink (random weights, a huge step): try the values themselves, whose
            # exponent byte still compresses; keep whichever is smaller.
            dense = self._dense[i]
            if dense is None:
                dense = self._dense[i] = np.empty_like(out)
            bd = tr.planes(m[sl], None, None, MODE_DENSE, lanes, rs, ts, dense[:, sl])
            alt = self._coder.encode(bd.planes, (i, b, 2), bd.nonzero)
            if len(alt) < len(chunk):
                return alt, MODE_DENSE, q, -1
        return chunk, mode, q, -1

    def _encode_snapshot(
        self, plans: list[tuple[bool, Any, Any]]
    ) -> list[tuple[memoryview | bytes, int, float, int]]:
        """Every block of the snapshot (all tensors on the native float-bits path, one thread) in at most
        three native calls: the largest tensor's blocks into the open segment's buffer, the others into the
        chunk arena. The same chunks, in the same order, as _encode_block gives one by one, without a call, an
        allocation and a copy per block."""
        if self._batch is None:
            blocks = [(i, b, sl) for i in range(len(self.tensors)) for b, sl in enumerate(self._slices[i])]
            width = [ln.signed.itemsize for ln in self._lanes]
            # per block: tensor, lanes, byte offset, lane width (fixed for the tape)
            self._batch = np.array(
                [(i, sl.stop - sl.start, sl.start * width[i], width[i]) for i, _, sl in blocks],
                dtype=np.int64,
            ).reshape(-1, 4)
            self._batch_bound = sum(native.bound(int(w), int(n)) for _, n, _, w in self._batch)
            self._batch_blocks = [(i, b) for i, b, _ in blocks]
            self._batch_args = native.BlockBatch(len(self._batch))
            rows = np.flatnonzero(self._batch[:, 0] == self._largest)
            self._placed_rows = (
                int(rows[0]),
                int(rows[-1]) + 1,
                sum(native.bound(int(w), int(n)) for _, n, _, w in self._batch[rows]),
            )
        static, batch = self._batch, self._batch_args
        assert batch is not None
        ti, off, nj = static[:, 0], static[:, 2], len(static)
        addrs = np.array([[x or 0 for x in a] for a in self._addrs if a is not None], dtype=np.int64)
        key = np.array([p[0] for p in plans], dtype=bool)[ti]
        base = addrs[ti]
        jobs = batch.jobs
        jobs[:, 0], jobs[:, 1] = static[:, 3], static[:, 1]
        jobs[:, 2], jobs[:, 3] = base[:, 0] + off, base[:, 1] + off
        for col, a in ((4, base[:, 2]), (5, base[:, 3])):
            jobs[:, col] = np.where(key | (a == 0), 0, a + off)
        jobs[:, 6] = key
        # The largest tensor's blocks (rows p0..p1) go straight into the open segment's buffer, after its
        # chunks of the steps before: seal() then copies only the other tensors' (paper-cnn: 2 % of a
        # segment instead of all of it). The rest, and everything when that buffer has no room, go to the arena.
        p0, p1, pneed = self._placed_rows
        seg = self._open_segment_buffer(pneed)
        if seg is None:
            p0 = p1 = 0
        need = self._batch_bound
        if self._arena is None or self._arena.size - self._arena_used < need:
            # Chunks of this segment already in the old arena keep it alive until the segment is sealed.
            # Pages are touched only as chunks land (a segment's worth), not the room reserved for the bound.
            self._arena = np.empty(self.segment_target_bytes + 2 * need, dtype=np.uint8)
            self._arena_addr = native.address(self._arena)
            self._arena_used = 0
        start, pstart = self._arena_used, self._placed_used
        if p1 > p0:
            assert seg is not None
            batch.encode(p1 - p0, self._segbuf_addr + pstart, seg.size - pstart, first=p0, team=self.team)
        if p0 > 0:
            self._arena_used += batch.encode(
                p0, self._arena_addr + self._arena_used, self._arena.size - start, team=self.team
            )
        if p1 < nj:
            at = self._arena_used
            self._arena_used += batch.encode(
                nj - p1, self._arena_addr + at, self._arena.size - at, first=p1, team=self.team
            )
        sizes, crcs = batch.sizes[:nj].tolist(), batch.crcs[:nj].tolist()
        view = self._arena.data
        results: list[tuple[memoryview | bytes | Placed, int, float, int]] = []
        pos, ppos, cursor = start, pstart, pstart
        for k, (i, b) in enumerate(self._batch_blocks):
            size, crc = sizes[k], crcs[k]
            placed = p0 <= k < p1
            chunk: memoryview | bytes
            if placed:
                assert seg is not None
                chunk = seg.data[ppos : ppos + size]
                ppos += size
            else:
                chunk = view[pos : pos + size]
                pos += size
            mode = MODE_KEY
            if not plans[i][0]:
                chunk, mode, crc = _native_or_dense(chunk, crc, plans[i][1][self._slices[i][b]])
            if not placed:
                results.append((chunk, mode, 0.0, crc))
                continue
            # A placed block kept as coded sits at cursor already; a dense one (never longer) or one after
            # it moves down, so the placed chunks stay one run of bytes.
            n = len(chunk)
            if ppos - size != cursor or mode == MODE_DENSE:
                assert seg is not None
                seg[cursor : cursor + n] = np.frombuffer(chunk, dtype=np.uint8)
            results.append((Placed(cursor, n), mode, 0.0, crc))
            cursor += n
        self._placed_used = cursor
        return results

    def _open_segment_buffer(self, need: int) -> np.ndarray | None:
        """The open segment's buffer when it has ``need`` bytes of room after its placed chunks (taken from
        the published segments' buffers or allocated at its first append), else None."""
        if not need:
            return None
        if self._segbuf is None:
            size = self.segment_target_bytes + 2 * self._batch_bound + (1 << 16)
            with self._lock:
                buf = self._free_buffers.pop() if self._free_buffers else None
            if buf is None or len(buf) < size:
                # Not zeroed (every byte used is written); page-aligned, so a LocalStore writes it with O_DIRECT.
                buf = aligned_empty(size)
            self._segbuf, self._segbuf_addr = buf, native.address(buf)
        if self._segbuf.size - self._placed_used < need:
            return None
        return self._segbuf

    def _encode_native(
        self, i: int, sl: slice, is_key: bool, m: Any, key_lanes: Any
    ) -> tuple[bytes | memoryview, int, int]:
        """One block through the native codec: (chunk, mode, the chunk's crc32). The codec picks the
        predictor itself and computes the crc while the chunk is in cache."""
        bits = self._bits[i]
        addrs = self._addrs[i]
        if is_key:
            if bits is not None and addrs is not None:
                wb, off = bits.itemsize, (sl.start or 0) * bits.itemsize
                n = len(range(*sl.indices(bits.size)))
                chunk, crc = native.encode_bits_at(
                    wb, n, addrs[0] + off, addrs[1] + off, None, None, values=True
                )
            else:
                chunk, crc = native.encode_crc(key_lanes[sl], None, None, values=True)
            return chunk, MODE_KEY, crc
        st = self._state[i]
        assert st.m1 is not None
        cur = m[sl]
        m2 = st.m2[sl] if st.m2 is not None else None
        if bits is not None and addrs is not None:
            # Addresses of this tensor's arrays, found once per snapshot (_plan), plus the block's offset.
            wb, off = bits.itemsize, (sl.start or 0) * bits.itemsize
            a1, a2 = addrs[2], addrs[3]
            chunk, crc = native.encode_bits_at(
                wb,
                cur.size,
                addrs[0] + off,
                addrs[1] + off,
                a1 + off if a1 is not None else None,
                a2 + off if a2 is not None else None,
                values=False,
            )
        else:
            chunk, crc = native.encode_crc(cur, st.m1[sl], m2, values=False)
        return _native_or_dense(chunk, crc, cur)

    # -- committing

    def _build_segment(
        self, out: np.ndarray | None = None, placed: int = 0
    ) -> tuple[bytes | memoryview, dict[str, Any]]:
        steps = self._open_steps
        if out is not None:
            placed = self._place_rest(out, placed)
        chunks: list[bytes | memoryview | Placed] = []
        rows: list[np.ndarray] = []
        for t in range(len(self.tensors)):
            for k in range(len(steps)):
                chunks.extend(self._open_chunks[t][k])
                rows.append(self._open_rows[t][k])
        table = np.concatenate(rows).astype(np.int64)
        codec = self._codec
        header = {
            "format": self._format,
            "kind": KIND_STEP_MAJOR,
            "codec": codec,
            "steps": steps,
            "tensors": [t.name for t in self.tensors],
            "block_lanes": self.block_lanes,
        }
        data, info = pack_object(
            chunks, table, header, crcs_known=True, digest=self.options.segment_digest, out=out, start=placed
        )
        first, last = steps[0], steps[-1]
        entry = {
            "key": f"{SEGMENTS_DIR}{first:012d}-{last:012d}.seg",
            "format": self._format,
            "kind": KIND_STEP_MAJOR,
            "codec": codec,
            "first_step": first,
            "last_step": last,
            "steps": list(steps),
            "keyframes": list(self._open_keyframes),
            "block_lanes": self.block_lanes,
            **info,
            "raw_bytes": self._open_raw,
            "stored_bytes": info["size"],
        }
        return data, entry

    def _place_rest(self, out: np.ndarray, placed: int) -> int:
        """Copy the largest tensor's chunks that _encode_snapshot did not write in place (helper threads, the
        planes codec, a buffer without room) right after those it did: a segment always opens with that
        tensor's chunks, whichever path coded them. Returns where the placed chunks end."""
        t = self._largest
        for k, blocks in enumerate(self._open_chunks[t]):
            for b, c in enumerate(blocks):
                if isinstance(c, Placed):
                    continue
                n = len(c)
                if placed + n > out.size:
                    return placed  # (the rest is copied with the other tensors' chunks)
                out[placed : placed + n] = np.frombuffer(c, dtype=np.uint8)
                row = self._open_rows[t][k][b]
                if row[2] < 0:
                    row[2] = zlib.crc32(c)
                blocks[b] = Placed(placed, n)
                placed += n
        return placed

    @property
    def _codec(self) -> str:
        if self._native:
            return CODEC3_LOSSY if self.lossy_rel_error is not None else CODEC3
        return CODEC2_LOSSY if self.lossy_rel_error is not None else CODEC2

    def _manifest(self, complete: bool, segments: list[dict[str, Any]]) -> dict[str, Any]:
        return {
            "format": self._format,
            "tensors": [t.to_json() for t in self.tensors],
            "segments": segments,
            "complete": complete,
            **manifest_totals(segments),
            "writer": {"codec": self._codec, "encoder": self.encoder, **self.options.describe()},
            "updated_at": time.time(),
        }

    def _write_manifest(self, complete: bool) -> None:
        self.store.put_json(self.prefix + MANIFEST_NAME, self._manifest(complete, self._segments))

    def seal(self) -> SealedSegment | None:
        """Close the open segment for appends and pack it (chunks, index, digest: CPU work, no I/O); None if
        it is empty. It is then pending: publish() uploads it. Call on the appending thread."""
        if self._closed or not self._open_steps:
            return None
        t0 = time.perf_counter()
        # Segments are assembled in reused buffers (one per segment in flight): a fresh ~8 MB allocation
        # per segment costs page faults and zeroing (~10 % of the writer's CPU, measured with perf).
        need = self._open_bytes + (1 << 16)  # chunks, plus room for the index and trailer
        buf = self._segbuf  # holds the placed chunks, if any
        if buf is not None and len(buf) < need:  # appended past a full segment without sealing (commit=False)
            bigger = aligned_empty(need + need // 4)
            bigger[: self._placed_used] = buf[: self._placed_used]
            buf = bigger
        if buf is None:
            with self._lock:
                buf = self._free_buffers.pop() if self._free_buffers else None
            if buf is None or len(buf) < need:
                # Not zeroed (every byte used is written); page-aligned: a LocalStore writes it with O_DIRECT.
                buf = aligned_empty(need + need // 4)
        data, entry = self._build_segment(buf, self._placed_used)
        sealed = SealedSegment(data, entry, buf if isinstance(data, memoryview) else None)
        self._reset_open_segment()
        with self._lock:
            self._sealed.append(sealed)
            self.commit_seconds += time.perf_counter() - t0
        self._update_totals()
        return sealed

    def publish(self) -> None:
        """Upload every sealed segment, oldest first, each followed by its index part (only then does it
        exist for readers); calls on_commit(last committed step) after each. On a failure the segment stays
        pending and a later publish() (or commit()) retries it. One thread at a time; it may differ from the
        appending one."""
        with self._publish_lock:
            while True:
                with self._lock:
                    if not self._sealed:
                        return
                    sealed = self._sealed[0]
                self._upload(sealed)

    def _upload(self, sealed: SealedSegment) -> None:
        t0 = time.perf_counter()
        entry = sealed.entry
        try:
            self.store.put(self.prefix + entry["key"], sealed.data)
            seq = len(self._segments)
            self.store.put_json(self.prefix + index_part_key(seq), index_part(seq, entry))
            # The index part made the segment durable; its page-cache copy is not needed for capture (a
            # LocalStore drops it so the next segment reuses those pages: see LocalStore.drop_cached).
            drop = getattr(self.store, "drop_cached", None)
            if drop is not None:
                drop(self.prefix + entry["key"])
        finally:
            with self._lock:
                self.commit_seconds += time.perf_counter() - t0
        with self._lock:
            self._sealed.pop(0)
            if sealed.buffer is not None and len(self._free_buffers) < 2:
                self._free_buffers.append(sealed.buffer)
            self._segments = [*self._segments, entry]
            self._committed_raw += entry["raw_bytes"]
            self._committed_stored += len(sealed.data)
            self.last_committed_step = entry["last_step"]
        self._update_totals()
        if self.on_commit is not None:
            try:
                self.on_commit(entry["last_step"])
            except Exception:  # a notification failure must not lose or stall the tape itself
                log.exception("on_commit callback failed for step %s", entry["last_step"])

    def commit(self) -> None:
        """Seal the open segment (if any) and publish it, with any still pending: upload, then index part.

        The index part is written last: only then does the segment exist for readers. On an upload failure
        the segment stays pending, so a later commit() retries it."""
        if self._closed:
            return
        self.seal()
        self.publish()

    def close(self, complete: bool = True) -> None:
        """Commit what is open, write the whole index into the manifest, marked complete (or not), and
        remove the index parts it replaces. A second close does nothing."""
        if self._closed:
            return
        self.commit()
        self._write_manifest(complete=complete)
        # The manifest now lists every segment: the index parts are redundant (readers skip them).
        if self._segments and self.store.list(self.prefix + INDEX_DIR):
            try:
                self.store.delete_prefix(self.prefix + INDEX_DIR)
            except Exception:  # leftovers are harmless: a manifest written at close is read alone
                log.warning("could not remove the index parts of %s", self.prefix, exc_info=True)
        self._closed = True
        if self._pool is not None:
            self._pool.shutdown(wait=True)

    @property
    def stream(self) -> Any:
        """The CUDA stream the device path encodes on (wait on it before reusing appended buffers); None for
        the numpy encoder and on a CPU."""
        return getattr(self._transform, "stream", None)

    @property
    def closed(self) -> bool:
        """Whether close() has finished."""
        return self._closed


def _native_or_dense(
    chunk: bytes | memoryview, crc: int, lanes: np.ndarray
) -> tuple[bytes | memoryview, int, int]:
    """(chunk, mode, crc) of a native delta block of ``lanes``: the delta chunk, unless its residual did not
    shrink (random weights, a huge step) and the values themselves, whose exponent byte still compresses,
    code smaller."""
    if len(chunk) > _DENSE_TRY * lanes.nbytes and lanes.nbytes >= _DENSE_MIN_BYTES:
        alt, alt_crc = native.encode_crc(lanes, None, None, values=True)
        if len(alt) < len(chunk):
            return alt, MODE_DENSE, alt_crc
    return chunk, MODE_NATIVE, crc


def _is_torch(a: Any) -> bool:
    t = type(a)
    return t.__module__.startswith("torch") and t.__name__ in ("Tensor", "Parameter")
