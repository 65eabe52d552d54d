"""The snapshot tape: every captured tensor at every captured step, lossless by default, with random access.

Layout under a tape prefix (a run's is ``runs/{id}/tape/``)::

    manifest.json                              the writer's index, rewritten (last) after each segment upload
    segments/{first:012d}-{last:012d}.seg      step-major segments, immutable once listed
    compaction.json                            the compactor's index, written last after its objects
    compact/{first:012d}-{last:012d}.{n}.tm    time-major parts, immutable once listed

**Lanes.** Every tensor is viewed as a flat array of integer *lanes*: float16/32/64 as int16/32/64 with the
order-preserving "monotone" map (flip the magnitude bits of negatives), so integer differences are distances
in ULPs; complex as two float lanes per element; ints and bools as themselves. All arithmetic on lanes is
integer arithmetic that wraps, so decoding is exact on every machine and NaN payloads, -0.0 and subnormals
round-trip bit-exact.

**Step-major segments** (``kind: "step-major"``, what training writes). A segment holds consecutive captured
steps. Each (tensor, step) is cut into blocks of at most ``block_lanes`` lanes, each block one zstd frame
("chunk"), laid out tensor-major then step then block, so one tensor over a run of steps is one range read.
A chunk is either a keyframe (the raw bits, byte-shuffled) or a delta: the residual ``m_t - p`` against a
prediction ``p = m_{t-1}`` (mode D1) or ``p = 2 m_{t-1} - m_{t-2}`` (D2, linear extrapolation, which suits
momentum optimizers), zigzag-mapped so small residuals of either sign have zero high bytes, byte-shuffled
(plane by plane) and zstd-compressed. Keyframes come every ``keyframe_interval`` captured steps for all
tensors, independent of segment boundaries: deltas chain across segments, and a reader walks back to the
nearest keyframe (or decoded state it has cached). Per-chunk mode and crc32 sit in the segment's index.

**Lossy mode** (opt-in per tape): keyframes stay lossless; later steps of a float tensor are stored as the
integer grid index ``K = round((x - key) / q)`` with ``q = 2 * rel_error * max|key|``, where ``key`` is the
tensor at its last keyframe. Because ``K`` is measured against the keyframe, a quantization error never
accumulates (error feedback for free): ``|x - (key + K q)| <= q / 2`` plus the float rounding of the result.
The ``K`` lanes then go through the same predictor/zigzag/zstd path.

**Time-major parts** (``kind: "time-major"``, written by compaction; lossless tapes only). A compaction
*unit* replaces whole step-major segments. Inside it, steps form groups of ``group_steps``; each (block of
``block_lanes`` lanes, group) is one zstd frame holding the group's first step as raw lanes then every
lane's residuals over time, element-major (a lane's trajectory is contiguous). A unit is split into parts of
about ``part_bytes`` along the blocks, so objects stay 1-16 MB however wide the model is. The compactor
verifies every unit bit-exact against the step-major data before it writes ``compaction.json`` and only then
deletes the replaced segments; a reader that finds a replaced segment gone re-reads both indexes.

Every object ends with an index and a fixed trailer::

    [chunks][index = zstd(u32 header_len | header JSON | int64 table[rows, 5])][trailer]
    table row = (offset, length, crc32 of the compressed chunk, mode, param)
    trailer = b"NLTSEG01" | u64 index_offset | u64 index_length | u32 index_crc32 | u32 reserved

Manifest ``format`` 1 still lists the legacy ``"tensor-major"`` kind (XOR deltas restarting at every
segment) that earlier versions wrote; this reader reads it, the writer no longer writes it.
"""

from __future__ import annotations

import bisect
import functools
import hashlib
import json
import logging
import os
import struct
import threading
import time
import zlib
from collections import OrderedDict
from collections.abc import Callable, Hashable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np
import zstandard

from netlapse.core.store import ObjectNotFound, Store, StoreError, validate_key

log = logging.getLogger(__name__)

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
# Chunk modes (table column 3).
MODE_KEY, MODE_D1, MODE_D2 = 0, 1, 2
DEFAULT_BLOCK_LANES = 1 << 18  # 1 MiB of float32 per chunk: big tensors encode and decode in parallel
DEFAULT_KEYFRAME_INTERVAL = 16
# Lossy deltas are a few bits each, so a keyframe (stored exactly) would dominate; space them further apart.
LOSSY_KEYFRAME_FACTOR = 4
DEFAULT_TM_BLOCK_LANES = 4096
# Lossy grid indexes beyond this fall back to a keyframe (int32 lanes with headroom for the predictor).
_GRID_LIMIT = float(1 << 29)
# zstd's multi-threaded mode splits input into jobs of this size (legacy knob; blocks now give parallelism).
_MT_JOB_BYTES = 1 << 20
_ROW = 5
# A cold read fetches compressed chunks in batches of at most this many bytes.
_FETCH_BYTES = 64 << 20


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


# --- byte planes -----------------------------------------------------------------------------------------


def _wide(a: np.ndarray) -> np.ndarray:
    """The same bytes viewed with the widest unsigned int dividing its length (faster XOR)."""
    n = a.size
    for dt, k in ((np.uint64, 8), (np.uint32, 4), (np.uint16, 2)):
        if n % k == 0:
            return a.view(dt)
    return a


def shuffle_bytes(arr: np.ndarray) -> np.ndarray:
    """A new C-contiguous uint8 array holding ``arr``'s bytes as planes: all byte 0s, then all byte 1s, ..."""
    a = np.ascontiguousarray(arr)
    k = a.dtype.itemsize
    flat = a.reshape(-1).view(np.uint8)
    if k == 1:
        return flat.copy()
    return np.ascontiguousarray(flat.reshape(-1, k).T).reshape(-1)


def unshuffle_bytes(planes: np.ndarray, dtype: np.dtype[Any], shape: tuple[int, ...]) -> np.ndarray:
    """Inverse of shuffle_bytes: a new array of ``dtype``/``shape`` from byte planes."""
    k = dtype.itemsize
    n = planes.size // k if k else 0
    out = np.empty((n, k), dtype=np.uint8)
    src = planes.reshape(k, n)
    # One strided column write per plane is ~4x faster than numpy's generic transpose copy.
    for i in range(k):
        out[:, i] = src[i]
    return out.reshape(-1).view(dtype).reshape(shape)


# --- lanes -----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Lanes:
    """How a dtype maps to integer lanes."""

    signed: np.dtype[Any]
    unsigned: np.dtype[Any]
    per_elem: int
    monotone: bool  # floats: apply the order-preserving map
    lossy_ok: bool  # real floats: may be stored on a quantization grid

    @property
    def bits(self) -> int:
        return self.signed.itemsize * 8


def _lanes_of(dtype: np.dtype[Any] | str) -> _Lanes:
    dt = np.dtype(dtype)
    if dt.kind == "c":
        w = dt.itemsize // 2
        return _Lanes(np.dtype(f"<i{w}"), np.dtype(f"<u{w}"), 2, True, False)
    w = dt.itemsize
    return _Lanes(np.dtype(f"<i{w}"), np.dtype(f"<u{w}"), 1, dt.kind == "f", dt.kind == "f")


def _lanes_view(a: np.ndarray, lanes: _Lanes) -> np.ndarray:
    """The raw bits of ``a`` as a flat signed lane array (a view when ``a`` is contiguous)."""
    return np.ascontiguousarray(a).reshape(-1).view(np.uint8).view(lanes.signed)


def _mono(
    bits: np.ndarray, lanes: _Lanes, out: np.ndarray | None = None, tmp: np.ndarray | None = None
) -> np.ndarray:
    """Order-preserving map of float bit patterns to signed ints (an involution); identity for ints."""
    if out is None:
        out = np.empty_like(bits)
    if not lanes.monotone:
        np.copyto(out, bits)
        return out
    tmp = np.right_shift(bits, lanes.bits - 1, out=tmp)
    np.bitwise_and(tmp, lanes.signed.type((1 << (lanes.bits - 1)) - 1), out=tmp)
    np.bitwise_xor(bits, tmp, out=out)
    return out


_unmono = _mono  # the map is its own inverse (the sign bit it keys on is unchanged)


def _zigzag(r: np.ndarray, lanes: _Lanes) -> np.ndarray:
    """Signed residuals to unsigned, small magnitudes of either sign to small numbers (in place on r)."""
    s = np.right_shift(r, lanes.bits - 1)
    np.left_shift(r, 1, out=r)
    np.bitwise_xor(r, s, out=r)
    return r.view(lanes.unsigned)


def _unzigzag(u: np.ndarray, lanes: _Lanes) -> np.ndarray:
    """Inverse of _zigzag (in place on u); returns the signed view."""
    low = np.bitwise_and(u, lanes.unsigned.type(1))
    np.negative(low, out=low)
    np.right_shift(u, 1, out=u)
    np.bitwise_xor(u, low, out=u)
    return u.view(lanes.signed)


def _residual(m: np.ndarray, m1: np.ndarray, m2: np.ndarray | None, mode: int, out: np.ndarray) -> np.ndarray:
    """m - prediction, wrapping: D1 predicts m1, D2 predicts 2*m1 - m2."""
    np.subtract(m, m1, out=out)
    if mode == MODE_D2:
        assert m2 is not None
        np.subtract(out, m1, out=out)
        np.add(out, m2, out=out)
    return out


def _choose_mode(m: np.ndarray, m1: np.ndarray, m2: np.ndarray | None) -> int:
    """D2 when linear extrapolation leaves smaller residuals than the previous value, judged on a sample."""
    if m2 is None or m.size == 0:
        return MODE_D1
    stride = max(1, m.size // 4096)
    a, b, c = m[::stride], m1[::stride], m2[::stride]
    r1 = (a - b).astype(np.float64)
    r2 = r1 - (b - c).astype(np.float64)
    # Cost proxy: bits of the magnitude (what zstd pays for after zigzag and shuffle).
    cost1 = float(np.log2(np.abs(r1) + 1.0).sum())
    cost2 = float(np.log2(np.abs(r2) + 1.0).sum())
    return MODE_D2 if cost2 < cost1 else MODE_D1


def _shuffle_into(arr: np.ndarray, out: np.ndarray) -> np.ndarray:
    """shuffle_bytes into a preallocated uint8 buffer of the same size (no fresh pages per step)."""
    k = arr.dtype.itemsize
    flat = arr.reshape(-1).view(np.uint8).reshape(-1, k)
    planes = out.reshape(k, -1)
    for j in range(k):
        planes[j] = flat[:, j]
    return out


def _from_planes(raw: bytes | memoryview, dtype: np.dtype[Any], n: int) -> np.ndarray:
    return unshuffle_bytes(np.frombuffer(raw, dtype=np.uint8), dtype, (n,))


# --- small utilities ---------------------------------------------------------------------------------------


class _ByteLRU:
    """A least-recently-used cache bounded by the total bytes of its values. Not locked: callers lock."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.bytes = 0
        self._d: OrderedDict[Hashable, tuple[Any, int]] = OrderedDict()

    def get(self, key: Hashable) -> Any:
        item = self._d.get(key)
        if item is None:
            return None
        self._d.move_to_end(key)
        return item[0]

    def __contains__(self, key: Hashable) -> bool:
        return key in self._d

    def put(self, key: Hashable, value: Any, nbytes: int) -> None:
        if nbytes > self.max_bytes:
            return  # would evict everything else and still not fit
        old = self._d.pop(key, None)
        if old is not None:
            self.bytes -= old[1]
        self._d[key] = (value, nbytes)
        self.bytes += nbytes
        while self.bytes > self.max_bytes and self._d:
            _, (_, n) = self._d.popitem(last=False)
            self.bytes -= n

    def clear(self) -> None:
        self._d.clear()
        self.bytes = 0


def _norm_prefix(prefix: str) -> str:
    if prefix and not prefix.endswith("/"):
        prefix += "/"
    if prefix:
        validate_key(prefix[:-1])
    return prefix


def _describe_steps(steps: Sequence[int]) -> str:
    """A short human description of captured steps, for error messages."""
    if not steps:
        return "no steps are committed yet"
    if len(steps) == 1:
        return f"the only captured step is {steps[0]}"
    diffs = {b - a for a, b in zip(steps, steps[1:], strict=False)}
    if len(diffs) == 1:
        return f"captured steps are {steps[0]}..{steps[-1]} every {diffs.pop()} ({len(steps)} steps)"
    return f"captured steps are {len(steps)} steps between {steps[0]} and {steps[-1]}"


def _n_blocks(n_lanes: int, block_lanes: int) -> int:
    return max(1, -(-n_lanes // block_lanes))


def _block_slices(n_lanes: int, block_lanes: int) -> list[slice]:
    return [
        slice(b * block_lanes, min(n_lanes, (b + 1) * block_lanes))
        for b in range(_n_blocks(n_lanes, block_lanes))
    ]


def _set_thread_nice(nice: int) -> None:
    """Lower this thread's CPU priority (Linux: per thread), so encoding yields to training."""
    if nice > 0 and hasattr(os, "setpriority"):
        try:
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), nice)
        except OSError:  # not permitted or not supported: run at normal priority
            pass


_READ_POOL: ThreadPoolExecutor | None = None
_READ_POOL_LOCK = threading.Lock()
_LOCAL = threading.local()


def _read_pool() -> ThreadPoolExecutor:
    """Process-wide threads for decoding blocks in parallel (zstd and numpy release the GIL)."""
    global _READ_POOL
    with _READ_POOL_LOCK:
        if _READ_POOL is None:
            _READ_POOL = ThreadPoolExecutor(
                max_workers=max(2, os.cpu_count() or 2), thread_name_prefix="tape-read"
            )
        return _READ_POOL


def _dctx() -> zstandard.ZstdDecompressor:
    # Decompressor contexts must not be used by two threads at once; one per thread.
    d = getattr(_LOCAL, "dctx", None)
    if d is None:
        d = _LOCAL.dctx = zstandard.ZstdDecompressor()
    return d


def _parallel(fn: Callable[[int], Any], n: int, pool: ThreadPoolExecutor | None) -> list[Any]:
    """fn(0..n-1), on the pool when there is more than one job."""
    if n <= 1 or pool is None:
        return [fn(i) for i in range(n)]
    futs: list[Future[Any]] = [pool.submit(fn, i) for i in range(n)]
    return [f.result() for f in futs]


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


# --- writer ------------------------------------------------------------------------------------------------


@dataclass
class _TensorState:
    """What the writer remembers of one tensor: lanes of the last two steps and, in lossy mode, the key."""

    m1: np.ndarray | None = None
    m2: np.ndarray | None = None
    key64: np.ndarray | None = None  # lossy: the keyframe's values as float64
    q: float = 0.0  # lossy: grid step; 0 = lossless


class TapeWriter:
    """Encodes snapshots into step-major segments and uploads them; the manifest is rewritten after each upload.

    ``raw_bytes`` counts every appended snapshot; ``stored_bytes`` counts uploaded segments plus the
    compressed bytes of the open one. ``last_committed_step`` is the last step a reader can see.
    ``encode_seconds`` is the wall time spent in append() (encoding), ``commit_seconds`` in uploads.
    Not thread-safe: one thread appends (the capture pipeline's writer thread); ``threads`` > 1 encodes the
    blocks of each snapshot on that many helper threads."""

    def __init__(
        self,
        store: Store,
        prefix: str,
        tensors: Sequence[TensorInfo],
        *,
        segment_target_bytes: int = 8 << 20,
        segment_max_steps: int = 256,
        zstd_level: int = 1,
        on_commit: Callable[[int], None] | None = None,
        resume: bool = False,
        overwrite: bool = False,
        zstd_threads: int = 0,
        keyframe_interval: int = DEFAULT_KEYFRAME_INTERVAL,
        block_lanes: int = DEFAULT_BLOCK_LANES,
        threads: int = 1,
        thread_nice: int = 0,
        lossy_rel_error: float | None = None,
    ) -> None:
        """Start a tape at ``prefix``. An existing tape there is an error unless ``resume`` (append after
        its last committed step, same tensors required; the first appended step is a keyframe) or
        ``overwrite`` (delete it first).

        ``keyframe_interval``: every N-th captured step is stored whole; the ones between are deltas.
        ``lossy_rel_error``: None = lossless; else float tensors between keyframes are stored to within that
        fraction of the tensor's largest magnitude at its keyframe, and keyframes come
        ``LOSSY_KEYFRAME_FACTOR`` times less often. ``zstd_threads`` > 0 compresses chunks
        of >= 2 MiB with zstd's own threads (standard frames: readers do not care)."""
        if segment_target_bytes <= 0 or segment_max_steps <= 0:
            raise ValueError("segment_target_bytes and segment_max_steps must be positive")
        if keyframe_interval < 1:
            raise ValueError(f"keyframe_interval must be >= 1, got {keyframe_interval}")
        if block_lanes < 1024:
            raise ValueError(f"block_lanes must be >= 1024, got {block_lanes}")
        if lossy_rel_error is not None and not (1e-6 <= lossy_rel_error <= 0.1):
            raise ValueError(f"lossy_rel_error must be in [1e-6, 0.1], got {lossy_rel_error}")
        self.store = store
        self.prefix = _norm_prefix(prefix)
        self.tensors = _check_tensor_infos(tensors)
        self.segment_target_bytes = int(segment_target_bytes)
        self.segment_max_steps = int(segment_max_steps)
        self.zstd_level = int(zstd_level)
        self.keyframe_interval = int(keyframe_interval) * (LOSSY_KEYFRAME_FACTOR if lossy_rel_error else 1)
        self.block_lanes = int(block_lanes)
        self.lossy_rel_error = lossy_rel_error
        self.on_commit = on_commit
        self._dtypes = [np.dtype(t.dtype) for t in self.tensors]
        self._lanes = [_lanes_of(dt) for dt in self._dtypes]
        self._n_lanes = [t.numel * ln.per_elem for t, ln in zip(self.tensors, self._lanes, strict=True)]
        self._slices = [_block_slices(n, self.block_lanes) for n in self._n_lanes]
        self._local = threading.local()
        self.zstd_threads = int(zstd_threads)
        self._cctx_mt: zstandard.ZstdCompressor | None = None
        if self.zstd_threads > 0:
            params = zstandard.ZstdCompressionParameters.from_level(
                self.zstd_level, threads=self.zstd_threads, job_size=_MT_JOB_BYTES, write_content_size=1
            )
            self._cctx_mt = zstandard.ZstdCompressor(compression_params=params)
        self.threads = max(1, int(threads))
        self.thread_nice = int(thread_nice)
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
        self._last_step: int | None = None
        self._position = 0  # captured steps appended over the tape's life
        self._closed = False
        self._state = [_TensorState() for _ in self.tensors]
        # Reused per-tensor buffers: lanes of three steps in rotation, residuals, byte planes.
        self._ring: list[list[np.ndarray]] = [[] for _ in self.tensors]
        self._scratch: list[tuple[np.ndarray, np.ndarray] | None] = [None] * len(self.tensors)
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
                    for p in (SEGMENTS_DIR, COMPACT_DIR, COMPACTION_NAME):
                        if store.list(p):
                            store.delete_prefix(p)
            else:
                raise FileExistsError(
                    f"a tape already exists at {store.url}/{self.prefix}; pass resume=True or overwrite=True"
                )
        # An empty manifest up front lets readers list tensors of a live run before its first segment.
        self._write_manifest(complete=False)

    def _cctx(self) -> zstandard.ZstdCompressor:
        c = getattr(self._local, "cctx", None)
        if c is None:
            c = self._local.cctx = zstandard.ZstdCompressor(level=self.zstd_level, write_content_size=True)
        return c

    def _reset_open_segment(self) -> None:
        self._open_steps: list[int] = []
        self._open_chunks: list[list[list[bytes]]] = [[] for _ in self.tensors]  # [t][k][block]
        self._open_rows: list[list[np.ndarray]] = [[] for _ in self.tensors]  # [t][k] -> [blocks, 5]
        self._open_keyframes: list[int] = []
        self._open_bytes = 0
        self._open_raw = 0

    def _load_for_resume(self, m: Mapping[str, Any]) -> None:
        if m.get("format") != FORMAT:
            raise TapeCorrupt(
                f"cannot resume tape at {self.prefix!r}: unsupported format {m.get('format')!r}"
            )
        theirs = [TensorInfo.from_json(t) for t in m.get("tensors", [])]
        if theirs != self.tensors:
            raise ValueError(f"cannot resume tape at {self.prefix!r}: its tensors differ from the ones given")
        self._segments = list(m.get("segments", []))
        self._committed_raw = int(m.get("raw_bytes", 0))
        self._committed_stored = int(m.get("stored_bytes", 0))
        self.raw_bytes, self.stored_bytes = self._committed_raw, self._committed_stored
        self._position = sum(len(s["steps"]) for s in self._segments)
        if self._segments:
            self.last_committed_step = int(self._segments[-1]["last_step"])
            self._last_step = self.last_committed_step

    # -- appending

    def _check(self, step: int, arrays: Mapping[str, np.ndarray]) -> list[np.ndarray]:
        if self._closed:
            raise RuntimeError("append on a closed TapeWriter")
        if isinstance(step, bool) or not isinstance(step, int | np.integer):
            raise TypeError(f"step must be an int, got {type(step).__name__}")
        step = int(step)
        if step < 0:
            raise ValueError(f"step must be >= 0, got {step}")
        if self._last_step is not None and step <= self._last_step:
            raise ValueError(f"steps must strictly increase: got step {step} after step {self._last_step}")
        names = [t.name for t in self.tensors]
        missing = [n for n in names if n not in arrays]
        extra = sorted(set(arrays) - set(names))
        if missing or extra:
            raise ValueError(
                f"snapshot at step {step} must hold exactly the tape's tensors; "
                f"missing: {missing or 'none'}, unexpected: {extra or 'none'}"
            )
        checked: list[np.ndarray] = []
        for info, dt in zip(self.tensors, self._dtypes, strict=True):
            a = arrays[info.name]
            if isinstance(a, np.generic):  # numpy arithmetic on 0-d arrays returns scalars
                a = np.asarray(a)
            if not isinstance(a, np.ndarray):
                raise TypeError(
                    f"tensor {info.name!r} at step {step}: expected a numpy array, got {type(a).__name__}"
                )
            if a.shape != info.shape or a.dtype != dt:
                raise ValueError(
                    f"tensor {info.name!r} at step {step}: expected shape {info.shape} dtype {info.dtype}, "
                    f"got shape {a.shape} dtype {a.dtype}"
                )
            checked.append(a)
        return checked

    def append(self, step: int, arrays: Mapping[str, np.ndarray]) -> None:
        """Add the snapshot at ``step`` (strictly after the previous one). ``arrays`` maps every tensor name
        to an array of its shape and dtype; they may be views into a buffer reused after this returns."""
        checked = self._check(step, arrays)
        t0 = time.perf_counter()
        step = int(step)
        key_step = self._position % self.keyframe_interval == 0 or any(s.m1 is None for s in self._state)
        jobs: list[tuple[int, int]] = []
        plans: list[tuple[bool, np.ndarray, np.ndarray | None]] = []
        for i, a in enumerate(checked):
            is_key, m, key_bits = self._plan(i, a, key_step)
            plans.append((is_key, m, key_bits))
            jobs.extend((i, b) for b in range(len(self._slices[i])))

        def run(j: int) -> tuple[bytes, int, float]:
            i, b = jobs[j]
            return self._encode_block(i, b, plans[i])

        results = _parallel(run, len(jobs), self._pool)
        for i in range(len(self.tensors)):
            self._open_chunks[i].append([])
            self._open_rows[i].append(np.zeros((len(self._slices[i]), _ROW), dtype=np.int64))
        for (i, b), (chunk, mode, param) in zip(jobs, results, strict=True):
            self._open_chunks[i][-1].append(chunk)
            row = self._open_rows[i][-1][b]
            row[3] = mode
            row[4] = np.float64(param).view(np.int64)
            self._open_bytes += len(chunk)
        for i, (is_key, m, _) in enumerate(plans):
            st = self._state[i]
            st.m2, st.m1 = (None, m) if is_key else (st.m1, m)
            self._open_raw += checked[i].nbytes
        if all(p[0] for p in plans):
            self._open_keyframes.append(step)
        self._open_steps.append(step)
        self._last_step = step
        self._position += 1
        self.raw_bytes = self._committed_raw + self._open_raw
        self.stored_bytes = self._committed_stored + self._open_bytes
        self.encode_seconds += time.perf_counter() - t0
        if self._open_bytes >= self.segment_target_bytes or len(self._open_steps) >= self.segment_max_steps:
            self.commit()

    def _plan(self, i: int, a: np.ndarray, key_step: bool) -> tuple[bool, np.ndarray, np.ndarray | None]:
        """Decide keyframe or delta for tensor i; returns (is_key, new lanes state, raw bits if key)."""
        lanes, st = self._lanes[i], self._state[i]
        bits = _lanes_view(a, lanes)
        lossy = self.lossy_rel_error is not None and lanes.lossy_ok
        if lossy and not key_step and st.key64 is not None:
            x = np.ascontiguousarray(a).reshape(-1).astype(np.float64)
            grid = np.subtract(x, st.key64)
            np.divide(grid, st.q, out=grid)
            np.rint(grid, out=grid)
            if bool(np.isfinite(grid).all()) and (grid.size == 0 or float(np.abs(grid).max()) < _GRID_LIMIT):
                return False, grid.astype(lanes.signed), None
            key_step = True  # diverged or non-finite: store it whole, exactly
        if key_step:
            if lossy:
                x = np.ascontiguousarray(a).reshape(-1).astype(np.float64)
                finite = x[np.isfinite(x)]
                scale = float(np.abs(finite).max()) if finite.size else 0.0
                assert self.lossy_rel_error is not None
                # Slightly under 2*eps so the float rounding of key + K*q stays inside the bound.
                st.q = 2.0 * self.lossy_rel_error * (scale if scale > 0 else 1.0) * (1 - 2.0**-10)
                st.key64 = x
                return True, np.zeros(bits.size, dtype=lanes.signed), bits
            return True, _mono(bits, lanes, out=self._slot(i), tmp=self._bufs(i)[0]), bits
        return False, _mono(bits, lanes, out=self._slot(i), tmp=self._bufs(i)[0]), None

    def _slot(self, i: int) -> np.ndarray:
        """A lanes buffer for tensor i that holds neither of the two remembered steps."""
        st, ring = self._state[i], self._ring[i]
        for a in ring:
            if a is not st.m1 and a is not st.m2:
                return a
        a = np.empty(self._n_lanes[i], dtype=self._lanes[i].signed)
        ring.append(a)
        return a

    def _bufs(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        """(residual lanes, byte planes) scratch of tensor i; blocks use disjoint slices."""
        b = self._scratch[i]
        if b is None:
            n, lanes = self._n_lanes[i], self._lanes[i]
            b = self._scratch[i] = (np.empty(n, lanes.signed), np.empty(n * lanes.signed.itemsize, np.uint8))
        return b

    def _encode_block(
        self, i: int, b: int, plan: tuple[bool, np.ndarray, np.ndarray | None]
    ) -> tuple[bytes, int, float]:
        is_key, m, key_bits = plan
        sl = self._slices[i][b]
        lanes, st = self._lanes[i], self._state[i]
        if is_key:
            assert key_bits is not None
            payload = shuffle_bytes(key_bits[sl])  # a private copy: the caller's buffer may be reused
            mode = MODE_KEY
        else:
            assert st.m1 is not None
            mb, m1 = m[sl], st.m1[sl]
            m2 = st.m2[sl] if st.m2 is not None else None
            mode = _choose_mode(mb, m1, m2)
            res, planes = self._bufs(i)
            r = _residual(mb, m1, m2, mode, res[sl])
            w = lanes.signed.itemsize
            payload = _shuffle_into(_zigzag(r, lanes), planes[sl.start * w : sl.stop * w])
        cctx = (
            self._cctx_mt
            if self._cctx_mt is not None and payload.nbytes >= 2 * _MT_JOB_BYTES
            else self._cctx()
        )
        q = st.q if (self.lossy_rel_error is not None and lanes.lossy_ok) else 0.0
        return cctx.compress(payload.data), mode, q

    # -- committing

    def _build_segment(self) -> tuple[bytes, dict[str, Any]]:
        steps = self._open_steps
        chunks: list[bytes] = []
        rows: list[np.ndarray] = []
        for t in range(len(self.tensors)):
            for k in range(len(steps)):
                chunks.extend(self._open_chunks[t][k])
                rows.append(self._open_rows[t][k])
        table = np.concatenate(rows).astype(np.int64)
        codec = CODEC_LOSSY if self.lossy_rel_error is not None else CODEC
        header = {
            "kind": KIND_STEP_MAJOR,
            "codec": codec,
            "steps": steps,
            "tensors": [t.name for t in self.tensors],
            "block_lanes": self.block_lanes,
        }
        data, info = pack_object(chunks, table, header)
        first, last = steps[0], steps[-1]
        entry = {
            "key": f"{SEGMENTS_DIR}{first:012d}-{last:012d}.seg",
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

    def _manifest(self, complete: bool, segments: list[dict[str, Any]]) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "tensors": [t.to_json() for t in self.tensors],
            "segments": segments,
            "complete": complete,
            "raw_bytes": sum(int(s.get("raw_bytes", 0)) for s in segments),
            "stored_bytes": sum(int(s["size"]) for s in segments),
            "steps_count": sum(len(s["steps"]) for s in segments),
            "last_step": segments[-1]["last_step"] if segments else None,
            "writer": {
                "codec": CODEC_LOSSY if self.lossy_rel_error is not None else CODEC,
                "mode": "lossless" if self.lossy_rel_error is None else "lossy",
                "lossy_rel_error": self.lossy_rel_error,
                "zstd_level": self.zstd_level,
                "zstd_threads": self.zstd_threads,
                "threads": self.threads,
                "keyframe_interval": self.keyframe_interval,
                "block_lanes": self.block_lanes,
                "segment_target_bytes": self.segment_target_bytes,
                "segment_max_steps": self.segment_max_steps,
            },
            "updated_at": time.time(),
        }

    def _write_manifest(self, complete: bool, segments: list[dict[str, Any]] | None = None) -> None:
        self.store.put_json(self.prefix + MANIFEST_NAME, self._manifest(complete, segments or self._segments))

    def commit(self) -> None:
        """Upload the open segment (if any), then rewrite the manifest; calls on_commit(last committed step).

        On an upload failure the open segment is kept, so a later commit() retries it."""
        if self._closed:
            return
        t0 = time.perf_counter()
        try:
            if not self._open_steps:
                self._write_manifest(complete=False)
                return
            data, entry = self._build_segment()
            self.store.put(self.prefix + entry["key"], data)
            segments = [*self._segments, entry]
            self._write_manifest(
                complete=False, segments=segments
            )  # only now does the segment exist for readers
        finally:
            self.commit_seconds += time.perf_counter() - t0
        self._segments = segments
        self._committed_raw += self._open_raw
        self._committed_stored += len(data)
        self.last_committed_step = entry["last_step"]
        self._reset_open_segment()
        self.raw_bytes, self.stored_bytes = self._committed_raw, self._committed_stored
        if self.on_commit is not None:
            try:
                self.on_commit(entry["last_step"])
            except Exception:  # a notification failure must not lose or stall the tape itself
                log.exception("on_commit callback failed for step %s", entry["last_step"])

    def close(self, complete: bool = True) -> None:
        """Commit what is open and mark the tape complete (or not). A second close does nothing."""
        if self._closed:
            return
        self.commit()
        self._write_manifest(complete=complete)
        self._closed = True
        if self._pool is not None:
            self._pool.shutdown(wait=True)

    @property
    def closed(self) -> bool:
        """Whether close() has finished."""
        return self._closed


# --- time-major encoding (compaction) ----------------------------------------------------------------------


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


def _lanes_of_signed(signed: np.dtype[Any]) -> _Lanes:
    s = np.dtype(signed)
    return _Lanes(s, np.dtype(f"<u{s.itemsize}"), 1, False, False)


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


# --- reader ------------------------------------------------------------------------------------------------


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


class _Segment(_Object):
    """A step-major or legacy segment of manifest.json."""

    def __init__(self, entry: Mapping[str, Any], prefix: str, obj_id: int, first_pos: int) -> None:
        super().__init__(entry, prefix, obj_id)
        self.kind = str(entry.get("kind", KIND_TENSOR_MAJOR))
        self.steps: list[int] = [int(s) for s in entry["steps"]]
        self.first_pos = first_pos
        self.block_lanes = int(entry.get("block_lanes", DEFAULT_BLOCK_LANES))
        self.lossy = str(entry.get("codec", "")) == CODEC_LOSSY


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
        ident = (str(e["key"]), str(e.get("sha256", "")))
        with self._lock:
            return self._obj_ids.setdefault(ident, len(self._obj_ids))

    def refresh(self) -> None:
        """Re-read the manifest and the compaction index, e.g. to see segments a live run committed since."""
        where = f"{self.store.url}/{self.prefix}{MANIFEST_NAME}"
        m = self.store.get_json(self.prefix + MANIFEST_NAME)
        if not isinstance(m, dict) or m.get("format") != FORMAT:
            fmt = m.get("format") if isinstance(m, dict) else None
            raise TapeCorrupt(f"{where}: unsupported tape format {fmt!r} (this reader knows format {FORMAT})")
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
            # Objects already loaded keep their table: same key and sha256 means same bytes.
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
        try:
            data = self.store.get_range(obj.key, off, length)
        except ObjectNotFound as e:
            raise _SegmentGone(obj.key) from e
        if len(data) != length:
            raise TapeCorrupt(f"segment {obj.key}: short read (truncated object?)")
        return data

    def _load_table(self, obj: _Object, n_cols: int) -> np.ndarray:
        if obj.table is not None:
            return obj.table
        try:
            actual = self.store.size(obj.key)
        except ObjectNotFound as e:
            raise _SegmentGone(obj.key) from e
        if actual != obj.size:
            raise TapeCorrupt(f"segment {obj.key} is {actual} bytes, the manifest says {obj.size}")
        ent = obj.entry
        if "index_offset" in ent:
            off, length, crc = int(ent["index_offset"]), int(ent["index_length"]), int(ent["index_crc32"])
        else:  # e.g. a segment written by a tool that only fills the trailer
            tr = self._get_range(obj, obj.size - _TRAILER.size, _TRAILER.size)
            magic, off, length, crc, _ = _TRAILER.unpack(tr)
            if magic != _TRAILER_MAGIC:
                raise TapeCorrupt(f"segment {obj.key}: bad trailer magic {magic!r}")
        if off + length + _TRAILER.size != obj.size:
            raise TapeCorrupt(f"segment {obj.key}: index position disagrees with the segment size")
        raw = self._get_range(obj, off, length)
        if zlib.crc32(raw) != crc:
            raise TapeCorrupt(f"segment {obj.key}: index fails its crc32")
        try:
            body = _dctx().decompress(raw)
            (hlen,) = struct.unpack_from("<I", body, 0)
            header = json.loads(body[4 : 4 + hlen])
            table = np.frombuffer(body, dtype="<i8", offset=4 + hlen).reshape(-1, n_cols)
        except (zstandard.ZstdError, ValueError, struct.error) as ex:
            raise TapeCorrupt(f"segment {obj.key}: unreadable index: {ex}") from ex
        if header.get("tensors") != [t.name for t in self._tensors]:
            raise TapeCorrupt(f"segment {obj.key}: its index disagrees with the manifest (tensors)")
        if isinstance(obj, _Segment) and header.get("steps") != obj.steps:
            raise TapeCorrupt(f"segment {obj.key}: its index disagrees with the manifest (steps or tensors)")
        ends = table[:, 0] + table[:, 1]
        if table.size and (table[:, 0].min() < 0 or ends.max() > off):
            raise TapeCorrupt(f"segment {obj.key}: index points outside the chunk area")
        obj.header, obj.table = header, table
        return table

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

    def _check_chunk(self, obj: _Object, row: np.ndarray, data: memoryview, base: int, what: str) -> bytes:
        off, length, crc = int(row[0]), int(row[1]), int(row[2])
        c = data[off - base : off - base + length]
        if zlib.crc32(c) != crc:
            raise TapeCorrupt(f"segment {obj.key}: chunk of {what} fails its crc32")
        try:
            return _dctx().decompress(c)
        except zstandard.ZstdError as e:
            raise TapeCorrupt(f"segment {obj.key}: chunk of {what} does not decompress") from e

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
        chunks (<= _FETCH_BYTES) however wide the tensor and however long the chain. Every decoded state is
        cached when the whole chain fits a quarter of the cache; otherwise only the last two."""
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
                while ke < k1 and end_of(ke + 1) - lo <= _FETCH_BYTES:
                    ke += 1
                data = memoryview(self._get_range(seg, lo, end_of(ke) - lo))
                for kk in range(k, ke + 1):
                    pos = seg.first_pos + kk
                    rows = table[base + kk * nb : base + (kk + 1) * nb]
                    what = f"tensor {name!r} at step {seg.steps[kk]}"
                    is_key = int(rows[0, 3]) == MODE_KEY
                    qk = float(np.int64(rows[0, 4]).view(np.float64))
                    out = np.empty(n, dtype=lanes.signed)
                    kb = np.empty(n, dtype=lanes.signed) if is_key else None
                    if not is_key and m1 is None:
                        raise TapeCorrupt(
                            f"segment {seg.key}: chunk of {what} needs earlier steps the chain lacks"
                        )

                    run = functools.partial(
                        self._decode_block_into,
                        seg=seg,
                        rows=rows,
                        data=data,
                        base=lo,
                        slices=slices,
                        lanes=lanes,
                        what=what,
                        lossy=qk > 0,
                        out=out,
                        key_bits=kb,
                        m1=m1,
                        m2=m2,
                    )
                    _parallel(run, len(slices), pool if len(slices) > 1 else None)
                    if kb is not None:
                        q = qk
                        key64 = self._bits_to_f64(kb, t) if qk > 0 else None
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
                    m1, m2 = out, prev
                k = ke + 1
            p = seg.first_pos + k1 + 1
        assert state is not None
        return state

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
        lossy: bool,
        out: np.ndarray,
        key_bits: np.ndarray | None,
        m1: np.ndarray | None,
        m2: np.ndarray | None,
    ) -> None:
        """Decode block b of one step-major position into ``out`` (and ``key_bits`` on a keyframe)."""
        sl = slices[b]
        width = sl.stop - sl.start
        raw = self._check_chunk(seg, rows[b], data, base, what)
        if len(raw) != width * lanes.signed.itemsize:
            raise TapeCorrupt(f"segment {seg.key}: chunk of {what} has the wrong size")
        mode = int(rows[b, 3])
        o = out[sl]
        if mode == MODE_KEY:
            if key_bits is None:
                raise TapeCorrupt(f"segment {seg.key}: chunk of {what} mixes keyframe and delta blocks")
            bits = _from_planes(raw, lanes.unsigned, width).view(lanes.signed)
            key_bits[sl] = bits
            if lossy:
                o[...] = 0
            else:
                _mono(bits, lanes, out=o)
            return
        if m1 is None or (mode == MODE_D2 and m2 is None):
            raise TapeCorrupt(f"segment {seg.key}: chunk of {what} needs earlier steps the chain lacks")
        r = _unzigzag(_from_planes(raw, lanes.unsigned, width), lanes)
        np.add(r, m1[sl], out=o)
        if mode == MODE_D2:
            assert m2 is not None
            np.add(o, m1[sl], out=o)
            np.subtract(o, m2[sl], out=o)

    def _bits_to_f64(self, bits: np.ndarray, t: int) -> np.ndarray:
        return bits.view(np.dtype(self._tensors[t].dtype)).astype(np.float64)

    def _tm_group(
        self, t: int, unit: _Unit, g: int, upto: int | None = None, last_two: bool = False
    ) -> np.ndarray:
        """Lanes of tensor t over group g of a time-major unit: [steps in group (or upto+1), lanes], cached.

        ``last_two``: only rows upto-1 and upto ([2, lanes], not cached), for tensors too wide to hold a
        group of; one part's chunks are in memory at a time either way."""
        g0 = g * unit.group_steps
        gl = min(unit.group_steps, len(unit.steps) - g0)
        need = gl - 1 if upto is None else min(upto, gl - 1)
        ckey = ("tm", unit.parts[0].id, t, g)
        if not last_two:
            with self._lock:
                hit = self._blocks.get(ckey)
            if hit is not None and hit.shape[0] > need:
                return hit
        lanes = self._lanes[t]
        n = self._n_lanes(t)
        b0, nbt = self._tm_block0(t, unit.block_lanes), _n_blocks(n, unit.block_lanes)
        slices = _block_slices(n, unit.block_lanes)
        out = np.empty((2 if last_two else need + 1, n), dtype=lanes.signed)
        name = self._tensors[t].name
        pool = _read_pool()
        batch: list[tuple[_Object, np.ndarray, memoryview, int, slice]] = []  # per block
        batch_bytes = 0

        def flush() -> None:
            nonlocal batch, batch_bytes
            run = functools.partial(
                self._tm_decode_blocks,
                batch=batch,
                lanes=lanes,
                steps=gl,
                need=need,
                out=out,
                last_two=last_two,
                name=name,
            )
            per = max(1, -(-len(batch) // (2 * (os.cpu_count() or 2))))  # a few blocks per job
            n_jobs = -(-len(batch) // per)
            _parallel(functools.partial(run, per=per), n_jobs, pool if n_jobs > 1 else None)
            batch, batch_bytes = [], 0

        b = 0
        while b < nbt:  # the tensor's blocks may span parts: one range read per part
            gb = b0 + b
            part = unit.parts[bisect.bisect_right(unit.part_lo, gb) - 1]
            table = self._tm_table(part)
            lo_block, hi_block = int(part.entry["block_lo"]), int(part.entry["block_hi"])
            take = min(nbt - b, hi_block - gb)
            r0 = g * (hi_block - lo_block) + (gb - lo_block)
            rows = table[r0 : r0 + take]
            lo = int(rows[0, 0])
            hi = int(rows[-1, 0] + rows[-1, 1])
            data = memoryview(self._get_range(part, lo, hi - lo))
            batch.extend((part, rows[j], data, lo, slices[b + j]) for j in range(take))
            batch_bytes += hi - lo
            if batch_bytes >= _FETCH_BYTES:
                flush()
            b += take
        if batch:
            flush()
        out.setflags(write=False)
        if not last_two:
            with self._lock:
                self._blocks.put(ckey, out, out.nbytes)
        return out

    def _tm_decode_blocks(
        self,
        i: int,
        *,
        per: int,
        batch: list[tuple[_Object, np.ndarray, memoryview, int, slice]],
        lanes: _Lanes,
        steps: int,
        need: int,
        out: np.ndarray,
        last_two: bool,
        name: str,
    ) -> None:
        """Decode blocks i*per .. of a batch into ``out`` (all rows up to ``need``, or the last two)."""
        for part, row, data, base, sl in batch[i * per : (i + 1) * per]:
            c = data[int(row[0]) - base : int(row[0]) - base + int(row[1])]
            if zlib.crc32(c) != int(row[2]):
                raise TapeCorrupt(f"segment {part.key}: chunk of tensor {name!r} fails its crc32")
            try:
                if last_two:
                    m = decode_time_major_chunk(
                        c, lanes.signed, steps, sl.stop - sl.start, int(row[3]), upto=need
                    )
                    out[0, sl] = m[max(0, need - 1)]
                    out[1, sl] = m[need]
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
            return self._legacy_read(t, info, pos)
        st = self._state(t, pos)
        return self._values(t, info, st)

    def _values(self, t: int, info: TensorInfo, st: _State) -> np.ndarray:
        dt = np.dtype(info.dtype)
        lanes = self._lanes[t]
        if st.key_bits is not None:
            return st.key_bits.copy().view(dt).reshape(info.shape)
        if st.q > 0:
            assert st.key64 is not None
            v = st.m.astype(np.float64)
            np.multiply(v, st.q, out=v)
            np.add(v, st.key64, out=v)
            return v.astype(dt).reshape(info.shape)
        return _unmono(st.m, lanes).view(dt).reshape(info.shape)

    def trajectory(self, name: str, flat_indices: Sequence[int]) -> tuple[list[int], np.ndarray]:
        """Values of the chosen elements (indices into the flattened tensor) at every committed step:
        ``(steps, values)`` with values of shape [len(steps), len(flat_indices)]."""
        info = self.tensor(name)
        t = self._tensor_index[name]
        idx = np.asarray(flat_indices, dtype=np.int64).reshape(-1)
        n = info.numel
        if idx.size and (idx.min() < 0 or idx.max() >= n):
            bad = idx[(idx < 0) | (idx >= n)][0]
            raise IndexError(
                f"index {int(bad)} is out of range for tensor {name!r} with {n} elements (0..{n - 1})"
            )
        self._maybe_refresh()
        return self._with_retry(lambda: self._trajectory(t, info, idx))  # type: ignore[no-any-return]

    def _trajectory(self, t: int, info: TensorInfo, idx: np.ndarray) -> tuple[list[int], np.ndarray]:
        dt = np.dtype(info.dtype)
        lanes = self._lanes[t]
        pe = lanes.per_elem
        lane_idx = (idx[:, None] * pe + np.arange(pe)[None, :]).reshape(-1)
        with self._lock:
            steps = list(self._steps)
            covered = dict(self._covered)
        rows: list[np.ndarray] = []  # values per position, [len(idx)] of dt
        # Running selected-lane state for step-major chains: (m1, m2, key_bits_sel, key64_sel, q).
        m1: np.ndarray | None = None
        m2: np.ndarray | None = None
        key64: np.ndarray | None = None
        q = 0.0
        pos = 0
        done_units: set[int] = set()
        while pos < len(steps):
            unit = covered.get(pos)
            if unit is not None:
                if id(unit) not in done_units:
                    vals = self._tm_trajectory(t, unit, lane_idx)  # [steps, lanes]
                    for r in vals:
                        rows.append(_unmono(r, lanes).view(dt) if pe == 1 else _unmono(r, lanes).view(dt))
                    m1 = vals[-1]
                    m2 = vals[-2] if len(vals) > 1 else None
                    key64, q = None, 0.0
                    done_units.add(id(unit))
                pos = unit.first_pos + len(unit.steps)
                continue
            seg, _ = self._segment_at(pos)
            if seg.kind == KIND_TENSOR_MAJOR:
                rows.extend(self._legacy_trajectory(seg, t, info, idx))
                m1 = m2 = None
            else:
                m1, m2, key64, q = self._sm_trajectory(seg, t, lane_idx, rows, m1, m2, key64, q)
            pos = seg.first_pos + len(seg.steps)
        values = np.stack([r.reshape(-1) for r in rows]) if rows else np.empty((0, idx.size), dtype=dt)
        return steps, values.reshape(len(steps), idx.size)

    def _sm_trajectory(
        self,
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
        info = self._tensors[t]
        dt = np.dtype(info.dtype)
        lanes = self._lanes[t]
        w = lanes.signed.itemsize
        n = self._n_lanes(t)
        table = self._seg_table(seg)
        base, nb = self._seg_rows(seg, t)
        ks = len(seg.steps)
        lo = int(table[base, 0])
        last = base + ks * nb - 1
        hi = int(table[last, 0] + table[last, 1])
        data = memoryview(self._get_range(seg, lo, hi - lo))
        blocks = lane_idx // seg.block_lanes
        ub = np.unique(blocks)
        slices = _block_slices(n, seg.block_lanes)

        def decode(job: int) -> bytes:
            k, bi = divmod(job, len(ub))
            b = int(ub[bi])
            return self._check_chunk(
                seg, table[base + k * nb + b], data, lo, f"tensor {info.name!r} at step {seg.steps[k]}"
            )

        raws = _parallel(decode, ks * len(ub), _read_pool() if ks * len(ub) > 2 else None)
        for k in range(ks):
            sel_u = np.empty(lane_idx.size, dtype=lanes.unsigned)
            for bi, b in enumerate(ub):
                raw = np.frombuffer(raws[k * len(ub) + bi], dtype=np.uint8)
                width = slices[int(b)].stop - slices[int(b)].start
                if raw.size != width * w:
                    raise TapeCorrupt(f"segment {seg.key}: chunk of {info.name!r} has the wrong size")
                mask = blocks == b
                local = lane_idx[mask] - int(b) * seg.block_lanes
                planes = raw.reshape(w, width)[:, local]  # [w, m]
                sel_u[mask] = np.ascontiguousarray(planes.T).view(lanes.unsigned).reshape(-1)
            row0 = table[base + k * nb]
            mode = int(row0[3])
            if mode == MODE_KEY:
                bits = sel_u.view(lanes.signed)
                q = float(np.int64(row0[4]).view(np.float64))
                if q > 0:
                    key64 = (
                        bits.copy().view(np.dtype(dt.str)).astype(np.float64) if lanes.per_elem == 1 else None
                    )
                    cur = np.zeros(lane_idx.size, dtype=lanes.signed)
                else:
                    key64 = None
                    cur = _mono(bits, lanes)
                rows.append(bits.copy().view(dt))
                m1, m2 = cur, None
                continue
            r = _unzigzag(sel_u, lanes)
            modes = np.array([int(table[base + k * nb + int(b), 3]) for b in blocks])
            if m1 is None:
                raise TapeCorrupt(
                    f"segment {seg.key}: a delta of {info.name!r} needs earlier steps the chain lacks"
                )
            cur = r + m1
            d2 = modes == MODE_D2
            if d2.any():
                if m2 is None:
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

    def _tm_trajectory(self, t: int, unit: _Unit, lane_idx: np.ndarray) -> np.ndarray:
        """Selected lanes of tensor t over every step of a unit: [steps, lanes] (a few small reads)."""
        lanes = self._lanes[t]
        n = self._n_lanes(t)
        bl = unit.block_lanes
        b0 = self._tm_block0(t, bl)
        slices = _block_slices(n, bl)
        blocks = lane_idx // bl
        ub = np.unique(blocks)
        out = np.empty((len(unit.steps), lane_idx.size), dtype=lanes.signed)
        jobs = [(g, int(b)) for g in range(unit.n_groups) for b in ub]

        def run(i: int) -> None:
            g, b = jobs[i]
            gb = b0 + b
            part = unit.parts[bisect.bisect_right(unit.part_lo, gb) - 1]
            table = self._tm_table(part)
            nb_part = int(part.entry["block_hi"]) - int(part.entry["block_lo"])
            row = table[g * nb_part + gb - int(part.entry["block_lo"])]
            c = self._get_range(part, int(row[0]), int(row[1]))
            if zlib.crc32(c) != int(row[2]):
                raise TapeCorrupt(
                    f"segment {part.key}: chunk of tensor {self._tensors[t].name!r} fails its crc32"
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

    # -- legacy (format-1 tensor-major segments: XOR deltas, a keyframe at every segment start)

    def _legacy_chunk(self, seg: _Segment, t: int, k: int, data: memoryview, base: int) -> np.ndarray:
        table = self._seg_table(seg).reshape(len(self._tensors), len(seg.steps), 3)
        raw = self._check_chunk(
            seg, table[t, k], data, base, f"tensor {self._tensors[t].name!r} at step {seg.steps[k]}"
        )
        if len(raw) != self._tensors[t].nbytes:
            raise TapeCorrupt(f"segment {seg.key}: chunk of {self._tensors[t].name!r} has the wrong size")
        return np.frombuffer(raw, dtype=np.uint8)

    def _legacy_range(self, seg: _Segment, t: int, last: int) -> tuple[memoryview, int]:
        table = self._seg_table(seg).reshape(len(self._tensors), len(seg.steps), 3)
        lo = int(table[t, 0, 0])
        hi = int(table[t, last, 0] + table[t, last, 1])
        return memoryview(self._get_range(seg, lo, hi - lo)), lo

    def _legacy_read(self, t: int, info: TensorInfo, pos: int) -> np.ndarray:
        seg, k = self._segment_at(pos)
        ckey = ("legacy", seg.id, t, k)
        with self._lock:
            state = self._blocks.get(ckey)
        if state is None:
            data, base = self._legacy_range(seg, t, k)
            for i in range(k + 1):
                d = self._legacy_chunk(seg, t, i, data, base)
                if state is None:
                    state = d.copy()
                else:
                    np.bitwise_xor(_wide(state), _wide(d), out=_wide(state))
            assert state is not None
            state.setflags(write=False)
            with self._lock:
                self._blocks.put(ckey, state, state.nbytes)
        return unshuffle_bytes(state, np.dtype(info.dtype), info.shape)

    def _legacy_trajectory(
        self, seg: _Segment, t: int, info: TensorInfo, idx: np.ndarray
    ) -> list[np.ndarray]:
        dt = np.dtype(info.dtype)
        k, n = dt.itemsize, info.numel
        last = len(seg.steps) - 1
        data, base = self._legacy_range(seg, t, last)
        out: list[np.ndarray] = []
        sel: np.ndarray | None = None
        for i in range(last + 1):
            planes = self._legacy_chunk(seg, t, i, data, base).reshape(k, n)[:, idx]
            sel = planes if sel is None else np.bitwise_xor(sel, planes)
            out.append(np.ascontiguousarray(sel.T).view(dt).reshape(-1))
        return out

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
            raw = self._check_chunk(seg, row, data, int(row[0]), f"tensor {name!r} at step {seg.steps[k]}")
            if len(raw) != width * lanes.signed.itemsize:
                raise TapeCorrupt(f"segment {seg.key}: chunk of {name!r} has the wrong size")
            mode = int(row[3])
            cur = out[i]
            if mode == MODE_KEY:
                _mono(_from_planes(raw, lanes.unsigned, width).view(lanes.signed), lanes, out=cur)
                m1, m2 = cur, None
                continue
            if m1 is None or (mode == MODE_D2 and m2 is None):
                raise TapeCorrupt(
                    f"segment {seg.key}: a delta of {name!r} needs earlier steps the chain lacks"
                )
            r = _unzigzag(_from_planes(raw, lanes.unsigned, width), lanes)
            np.add(r, m1, out=cur)
            if mode == MODE_D2:
                assert m2 is not None
                np.add(cur, m1, out=cur)
                np.subtract(cur, m2, out=cur)
            m1, m2 = cur, m1
        return out

    # -- integrity

    def verify(self) -> None:
        """Download every object serving the tape and check its size, sha256, index and every chunk's crc32.

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
                self._check_chunk(obj, row, mv, 0, "a tensor")

    def clear_cache(self) -> None:
        """Drop cached decoded data (object tables are kept)."""
        with self._lock:
            self._states.clear()
            self._blocks.clear()


__all__ = [
    "COMPACTION_NAME",
    "MANIFEST_NAME",
    "StepNotCaptured",
    "StoreError",
    "TapeCorrupt",
    "TapeReader",
    "TapeWriter",
    "TensorInfo",
    "UnknownTensor",
    "decode_time_major_chunk",
    "pack_object",
    "encode_time_major_chunk",
    "shuffle_bytes",
    "unshuffle_bytes",
]
