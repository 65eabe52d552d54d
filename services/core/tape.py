"""The snapshot tape: every captured tensor at every captured step, lossless, with random access.

Layout under a tape prefix (a run's is ``runs/{id}/tape/``)::

    manifest.json                               written last; the only entry point for readers
    segments/{first:012d}-{last:012d}.seg       immutable once listed in the manifest

A *segment* covers consecutive captured steps. Each tensor starts with a keyframe at the segment's first
step; later steps are deltas against the previous captured step. Every chunk is encoded the same way:

    raw bits --XOR previous step's bits (deltas only)--> byte planes (byte-shuffle) --> zstd

XOR and byte-shuffle commute (XOR is bytewise, shuffle is a permutation), so both writer and reader keep
their running state in the shuffled domain and shuffle/unshuffle once per tensor per step.

Chunks are laid out tensor-major (tensor 0: keyframe, delta 1, delta 2, ...; tensor 1: ...), so reading
tensor t at the k-th step of a segment is one contiguous range read. The segment ends with an index and a
fixed trailer::

    [chunks][index = zstd(u32 header_len | header JSON | int64 table[n_tensors, n_steps, 3])][trailer]
    table[t, k] = (offset, length, crc32 of the compressed chunk)
    trailer = b"NLTSEG01" | u64 index_offset | u64 index_length | u32 index_crc32 | u32 reserved

The manifest repeats the index position and crc, so a reader needs no trailer read. Readers use only
segments the manifest lists, check each segment's size against it, and check the crc of every chunk they
decode. Manifest ``format`` 1 knows segment ``kind`` "tensor-major"; a later compaction pass may add a
time-major kind, which a reader dispatches on.
"""

from __future__ import annotations

import bisect
import hashlib
import json
import logging
import struct
import threading
import time
import zlib
from collections import OrderedDict
from collections.abc import Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import zstandard

from netlapse.core.store import ObjectNotFound, Store, StoreError, validate_key

log = logging.getLogger(__name__)

MANIFEST_NAME = "manifest.json"
SEGMENTS_DIR = "segments/"
FORMAT = 1
KIND_TENSOR_MAJOR = "tensor-major"
CODEC = "xor-byteshuffle-zstd"
_TRAILER = struct.Struct("<8sQQII")
_TRAILER_MAGIC = b"NLTSEG01"
_SUPPORTED_KINDS = (KIND_TENSOR_MAJOR,)
# zstd's multi-threaded mode splits input into jobs of this size; smaller chunks stay single-threaded.
_MT_JOB_BYTES = 1 << 20


class TapeCorrupt(Exception):
    """The tape's stored bytes disagree with its manifest or index (size, checksum, format)."""


class UnknownTensor(KeyError):
    """A tensor name the tape does not hold."""

    def __str__(self) -> str:  # KeyError would repr() the message, adding quotes
        return str(self.args[0]) if self.args else ""


class StepNotCaptured(IndexError, ValueError):
    """A step the tape does not hold (never captured, or not committed yet)."""


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


# --- chunk codec -----------------------------------------------------------------------------------------


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


# --- writer ------------------------------------------------------------------------------------------------


class TapeWriter:
    """Encodes snapshots into segments and uploads them; the manifest is rewritten after each upload.

    ``raw_bytes`` counts every appended snapshot; ``stored_bytes`` counts uploaded segments plus the
    compressed bytes of the open one. ``last_committed_step`` is the last step a reader can see.
    Not thread-safe: one thread appends (the capture pipeline's writer thread).
    """

    def __init__(
        self,
        store: Store,
        prefix: str,
        tensors: Sequence[TensorInfo],
        *,
        segment_target_bytes: int = 8 << 20,
        segment_max_steps: int = 256,
        zstd_level: int = 3,
        on_commit: Callable[[int], None] | None = None,
        resume: bool = False,
        overwrite: bool = False,
        zstd_threads: int = 0,
    ) -> None:
        """Start a tape at ``prefix``. An existing tape there is an error unless ``resume`` (append after
        its last committed step, same tensors required) or ``overwrite`` (delete it first).

        ``zstd_threads`` > 0 compresses large chunks (>= 2 MiB) with that many zstd worker threads; the
        output is the same standard zstd frame, so readers do not care."""
        if segment_target_bytes <= 0 or segment_max_steps <= 0:
            raise ValueError("segment_target_bytes and segment_max_steps must be positive")
        self.store = store
        self.prefix = _norm_prefix(prefix)
        self.tensors = _check_tensor_infos(tensors)
        self.segment_target_bytes = int(segment_target_bytes)
        self.segment_max_steps = int(segment_max_steps)
        self.zstd_level = int(zstd_level)
        self.on_commit = on_commit
        self._dtypes = [np.dtype(t.dtype) for t in self.tensors]
        self._cctx = zstandard.ZstdCompressor(level=self.zstd_level, write_content_size=True)
        self.zstd_threads = int(zstd_threads)
        self._cctx_mt: zstandard.ZstdCompressor | None = None
        if self.zstd_threads > 0:
            params = zstandard.ZstdCompressionParameters.from_level(
                self.zstd_level, threads=self.zstd_threads, job_size=_MT_JOB_BYTES, write_content_size=1
            )
            self._cctx_mt = zstandard.ZstdCompressor(compression_params=params)

        self._segments: list[dict[str, Any]] = []
        self._committed_raw = 0
        self._committed_stored = 0
        self.raw_bytes = 0
        self.stored_bytes = 0
        self.last_committed_step: int | None = None
        self._last_step: int | None = None
        self._closed = False
        self._reset_open_segment()

        manifest_key = self.prefix + MANIFEST_NAME
        if store.exists(manifest_key):
            if resume:
                self._load_for_resume(store.get_json(manifest_key))
            elif overwrite:
                # An empty prefix would mean the whole store; then only the tape's own segments go.
                store.delete_prefix(self.prefix or SEGMENTS_DIR)
            else:
                raise FileExistsError(
                    f"a tape already exists at {store.url}/{self.prefix}; pass resume=True or overwrite=True"
                )
        # An empty manifest up front lets readers list tensors of a live run before its first segment.
        self._write_manifest(complete=False)

    def _reset_open_segment(self) -> None:
        self._open_steps: list[int] = []
        self._open_chunks: list[list[bytes]] = [[] for _ in self.tensors]
        self._open_crcs: list[list[int]] = [[] for _ in self.tensors]
        self._open_bytes = 0
        self._open_raw = 0
        self._prev: list[np.ndarray | None] = [None] * len(self.tensors)

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
        if self._segments:
            self.last_committed_step = int(self._segments[-1]["last_step"])
            self._last_step = self.last_committed_step

    # -- appending

    def append(self, step: int, arrays: Mapping[str, np.ndarray]) -> None:
        """Add the snapshot at ``step`` (strictly after the previous one). ``arrays`` maps every tensor name
        to an array of its shape and dtype; they may be views into a buffer reused after this returns."""
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

        keyframe = not self._open_steps
        for i, a in enumerate(checked):
            planes = shuffle_bytes(a)  # a private copy: the caller's buffer may be reused after we return
            if keyframe:
                payload = planes
            else:
                prev = self._prev[i]
                assert prev is not None
                payload = np.bitwise_xor(_wide(planes), _wide(prev)).view(np.uint8)
            cctx = (
                self._cctx_mt
                if self._cctx_mt is not None and payload.nbytes >= 2 * _MT_JOB_BYTES
                else self._cctx
            )
            chunk = cctx.compress(payload.data)
            self._open_chunks[i].append(chunk)
            self._open_crcs[i].append(zlib.crc32(chunk))
            self._open_bytes += len(chunk)
            self._prev[i] = planes
            self._open_raw += a.nbytes
        self._open_steps.append(step)
        self._last_step = step
        self.raw_bytes = self._committed_raw + self._open_raw
        self.stored_bytes = self._committed_stored + self._open_bytes
        if self._open_bytes >= self.segment_target_bytes or len(self._open_steps) >= self.segment_max_steps:
            self.commit()

    # -- committing

    def _build_segment(self) -> tuple[bytes, dict[str, Any]]:
        steps = self._open_steps
        n_t, n_s = len(self.tensors), len(steps)
        table = np.zeros((n_t, n_s, 3), dtype="<i8")
        parts: list[bytes] = []
        off = 0
        for t in range(n_t):
            for k, chunk in enumerate(self._open_chunks[t]):
                table[t, k] = (off, len(chunk), self._open_crcs[t][k])
                parts.append(chunk)
                off += len(chunk)
        header = json.dumps(
            {
                "kind": KIND_TENSOR_MAJOR,
                "codec": CODEC,
                "steps": steps,
                "tensors": [t.name for t in self.tensors],
            },
            separators=(",", ":"),
        ).encode()
        index = zstandard.ZstdCompressor(level=3).compress(
            struct.pack("<I", len(header)) + header + table.tobytes()
        )
        index_crc = zlib.crc32(index)
        parts.append(index)
        parts.append(_TRAILER.pack(_TRAILER_MAGIC, off, len(index), index_crc, 0))
        data = b"".join(parts)
        first, last = steps[0], steps[-1]
        entry = {
            "key": f"{SEGMENTS_DIR}{first:012d}-{last:012d}.seg",
            "kind": KIND_TENSOR_MAJOR,
            "codec": CODEC,
            "first_step": first,
            "last_step": last,
            "steps": list(steps),
            "size": len(data),
            "sha256": hashlib.sha256(data).hexdigest(),
            "index_offset": off,
            "index_length": len(index),
            "index_crc32": index_crc,
            "raw_bytes": self._open_raw,
            "stored_bytes": len(data),
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
                "codec": CODEC,
                "zstd_level": self.zstd_level,
                "zstd_threads": self.zstd_threads,
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
        if not self._open_steps:
            self._write_manifest(complete=False)
            return
        data, entry = self._build_segment()
        self.store.put(self.prefix + entry["key"], data)
        segments = [*self._segments, entry]
        self._write_manifest(complete=False, segments=segments)  # only now does the segment exist for readers
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

    @property
    def closed(self) -> bool:
        """Whether close() has finished."""
        return self._closed


# --- reader ------------------------------------------------------------------------------------------------


class _Segment:
    """A listed segment: its manifest entry and, once loaded, its chunk table."""

    def __init__(self, entry: Mapping[str, Any], prefix: str, seg_id: int) -> None:
        self.entry = entry
        self.id = seg_id
        self.key = prefix + str(entry["key"])
        self.kind = str(entry.get("kind", KIND_TENSOR_MAJOR))
        self.steps: list[int] = [int(s) for s in entry["steps"]]
        self.size = int(entry["size"])
        self.sha256 = str(entry.get("sha256", ""))
        self.table: np.ndarray | None = None  # [n_tensors, n_steps, 3] (offset, length, crc32)
        self.pos = {s: i for i, s in enumerate(self.steps)}


class TapeReader:
    """Random access to a tape: any tensor at any committed step, and element trajectories.

    Safe to share between threads. Decoded states and fetched chunk ranges are kept in a byte-bounded
    LRU (``cache_bytes``), so reading the same tensor at nearby steps is cheap."""

    def __init__(self, store: Store, prefix: str, *, cache_bytes: int = 384 << 20) -> None:
        """Open the tape at ``prefix``; ObjectNotFound if it has no manifest."""
        self.store = store
        self.prefix = _norm_prefix(prefix)
        self._lock = threading.RLock()
        self._local = threading.local()
        # Decoded states (shuffled planes) and fetched compressed ranges share the budget 2:1.
        self._states = _ByteLRU(cache_bytes * 2 // 3)
        self._blocks = _ByteLRU(cache_bytes // 3)
        self._seg_ids: dict[tuple[str, str], int] = {}
        self.complete = False
        self.manifest: dict[str, Any] = {}
        self.refresh()

    # -- manifest

    def refresh(self) -> None:
        """Re-read the manifest, e.g. to see segments a live run committed since."""
        m = self.store.get_json(self.prefix + MANIFEST_NAME)
        if not isinstance(m, dict) or m.get("format") != FORMAT:
            fmt = m.get("format") if isinstance(m, dict) else None
            raise TapeCorrupt(
                f"{self.store.url}/{self.prefix}{MANIFEST_NAME}: unsupported tape format {fmt!r} "
                f"(this reader knows format {FORMAT})"
            )
        try:
            tensors = [TensorInfo.from_json(t) for t in m["tensors"]]
            segments: list[_Segment] = []
            for e in m["segments"]:
                ident = (str(e["key"]), str(e.get("sha256", "")))
                with self._lock:
                    seg_id = self._seg_ids.setdefault(ident, len(self._seg_ids))
                segments.append(_Segment(e, self.prefix, seg_id))
        except (KeyError, TypeError, ValueError) as e:
            raise TapeCorrupt(
                f"{self.store.url}/{self.prefix}{MANIFEST_NAME}: malformed manifest: {e!r}"
            ) from e
        for s in segments:
            if s.kind not in _SUPPORTED_KINDS:
                raise TapeCorrupt(f"segment {s.key}: kind {s.kind!r} is not supported by this reader")
        steps: list[int] = [st for s in segments for st in s.steps]
        if any(b <= a for a, b in zip(steps, steps[1:], strict=False)):
            raise TapeCorrupt(
                f"{self.store.url}/{self.prefix}{MANIFEST_NAME}: steps are not strictly increasing"
            )
        with self._lock:
            # Segments already loaded keep their table: same key and sha256 means same bytes.
            old = {s.id: s for s in getattr(self, "_segments", [])}
            for s in segments:
                if s.id in old:
                    s.table = old[s.id].table
            self.manifest = m
            self._tensors = tensors
            self._tensor_index = {t.name: i for i, t in enumerate(tensors)}
            self._segments = segments
            self._steps = steps
            self._first_steps = [s.steps[0] for s in segments]
            self.complete = bool(m.get("complete", False))

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
        """Bytes of every committed segment."""
        return int(self.manifest.get("stored_bytes", 0))

    # -- segment access

    def _locate(self, step: int) -> tuple[_Segment, int]:
        if isinstance(step, bool) or not isinstance(step, int | np.integer):
            raise TypeError(f"step must be an int, got {type(step).__name__}")
        step = int(step)
        with self._lock:
            segments, firsts, steps = self._segments, self._first_steps, self._steps
        i = bisect.bisect_right(firsts, step) - 1
        if i >= 0:
            seg = segments[i]
            k = seg.pos.get(step)
            if k is not None:
                return seg, k
        raise StepNotCaptured(f"step {step} is not on the tape: {_describe_steps(steps)}")

    def _load_table(self, seg: _Segment) -> np.ndarray:
        if seg.table is not None:
            return seg.table
        try:
            actual = self.store.size(seg.key)
        except ObjectNotFound as e:
            raise TapeCorrupt(
                f"segment {seg.key} is listed in the manifest but missing from the store"
            ) from e
        if actual != seg.size:
            raise TapeCorrupt(f"segment {seg.key} is {actual} bytes, the manifest says {seg.size}")
        ent = seg.entry
        if "index_offset" in ent:
            off, length, crc = int(ent["index_offset"]), int(ent["index_length"]), int(ent["index_crc32"])
        else:  # e.g. a segment written by a tool that only fills the trailer
            tr = self.store.get_range(seg.key, seg.size - _TRAILER.size, _TRAILER.size)
            if len(tr) != _TRAILER.size:
                raise TapeCorrupt(f"segment {seg.key}: cannot read its trailer")
            magic, off, length, crc, _ = _TRAILER.unpack(tr)
            if magic != _TRAILER_MAGIC:
                raise TapeCorrupt(f"segment {seg.key}: bad trailer magic {magic!r}")
        if off + length + _TRAILER.size != seg.size:
            raise TapeCorrupt(f"segment {seg.key}: index position disagrees with the segment size")
        raw = self.store.get_range(seg.key, off, length)
        if len(raw) != length or zlib.crc32(raw) != crc:
            raise TapeCorrupt(f"segment {seg.key}: index fails its crc32")
        try:
            body = self._dctx().decompress(raw)
            (hlen,) = struct.unpack_from("<I", body, 0)
            header = json.loads(body[4 : 4 + hlen])
            names = [t.name for t in self._tensors]
            table = np.frombuffer(body, dtype="<i8", offset=4 + hlen).reshape(len(names), len(seg.steps), 3)
        except (zstandard.ZstdError, ValueError, struct.error) as ex:
            raise TapeCorrupt(f"segment {seg.key}: unreadable index: {ex}") from ex
        if header.get("steps") != seg.steps or header.get("tensors") != names:
            raise TapeCorrupt(f"segment {seg.key}: its index disagrees with the manifest (steps or tensors)")
        ends = table[:, :, 0] + table[:, :, 1]
        if table.size and (table[:, :, 0].min() < 0 or ends.max() > off):
            raise TapeCorrupt(f"segment {seg.key}: index points outside the chunk area")
        seg.table = table
        return table

    def _dctx(self) -> zstandard.ZstdDecompressor:
        # Decompressor contexts must not be used by two threads at once; one per thread.
        d = getattr(self._local, "dctx", None)
        if d is None:
            d = self._local.dctx = zstandard.ZstdDecompressor()
        return d

    def _chunks(self, seg: _Segment, t: int, first: int, last: int) -> tuple[memoryview, int]:
        """Compressed bytes of chunks first..last of tensor t (one contiguous range) and their base offset."""
        table = self._load_table(seg)
        bkey = (seg.id, t)
        with self._lock:
            cached = self._blocks.get(bkey)
        if cached is not None:
            a, b, base, data = cached
            if a <= first and last <= b:
                return memoryview(data), base
        lo = int(table[t, first, 0])
        hi = int(table[t, last, 0] + table[t, last, 1])
        if cached is not None and cached[0] <= first <= cached[1] + 1 and last > cached[1]:
            # Extend the cached range forward with one more read instead of refetching it.
            a, b, base, data = cached
            start = base + len(data)
            more = self.store.get_range(seg.key, start, hi - start)
            if len(more) != hi - start:
                raise TapeCorrupt(f"segment {seg.key}: short read (truncated object?)")
            data = data + more
            first, lo = a, base
        else:
            data = self.store.get_range(seg.key, lo, hi - lo)
            if len(data) != hi - lo:
                raise TapeCorrupt(f"segment {seg.key}: short read (truncated object?)")
        with self._lock:
            self._blocks.put(bkey, (first, last, lo, data), len(data))
        return memoryview(data), lo

    def _decode_chunk(self, seg: _Segment, t: int, k: int, data: memoryview, base: int) -> np.ndarray:
        table = seg.table
        assert table is not None
        off, length, crc = (int(x) for x in table[t, k])
        c = data[off - base : off - base + length]
        if zlib.crc32(c) != crc:
            raise TapeCorrupt(
                f"segment {seg.key}: chunk of tensor {self._tensors[t].name!r} at step {seg.steps[k]} fails its crc32"
            )
        try:
            d = self._dctx().decompress(c)
        except zstandard.ZstdError as e:
            raise TapeCorrupt(
                f"segment {seg.key}: chunk of {self._tensors[t].name!r} does not decompress"
            ) from e
        if len(d) != self._tensors[t].nbytes:
            raise TapeCorrupt(f"segment {seg.key}: chunk of {self._tensors[t].name!r} has the wrong size")
        return np.frombuffer(d, dtype=np.uint8)

    def _state(self, seg: _Segment, t: int, k: int) -> np.ndarray:
        """Byte planes of tensor t at the k-th step of seg (read-only, possibly shared via the cache)."""
        skey = (seg.id, t, k)
        with self._lock:
            hit = self._states.get(skey)
            if hit is not None:
                return hit
            # Continue from the nearest decoded earlier step of this segment, if any, else from the keyframe.
            start, base_state = 0, None
            for j in range(k - 1, -1, -1):
                prev = self._states.get((seg.id, t, j))
                if prev is not None:
                    start, base_state = j + 1, prev
                    break
        data, base = self._chunks(seg, t, start, k)
        state: np.ndarray | None = None if base_state is None else base_state.copy()
        for i in range(start, k + 1):
            d = self._decode_chunk(seg, t, i, data, base)
            if state is None:
                state = d.copy()
            else:
                np.bitwise_xor(_wide(state), _wide(d), out=_wide(state))
        assert state is not None
        state.setflags(write=False)
        with self._lock:
            self._states.put(skey, state, state.nbytes)
        return state

    # -- public reads

    def read(self, name: str, step: int) -> np.ndarray:
        """Tensor ``name`` at ``step``, bit-exact, as a new writable array of its shape and dtype."""
        info = self.tensor(name)
        seg, k = self._locate(step)
        planes = self._state(seg, self._tensor_index[name], k)
        return unshuffle_bytes(planes, np.dtype(info.dtype), info.shape)

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
        dt = np.dtype(info.dtype)
        k = dt.itemsize
        with self._lock:
            segments = list(self._segments)
        rows: list[np.ndarray] = []
        steps: list[int] = []
        for seg in segments:
            last = len(seg.steps) - 1
            self._load_table(seg)
            data, base = self._chunks(seg, t, 0, last)
            sel: np.ndarray | None = None  # selected elements' byte planes, [k, m]
            for i in range(last + 1):
                planes = self._decode_chunk(seg, t, i, data, base).reshape(k, n)[:, idx]
                sel = planes if sel is None else np.bitwise_xor(sel, planes)
                rows.append(np.ascontiguousarray(sel.T).view(dt).reshape(-1))
            steps.extend(seg.steps)
        values = np.stack(rows) if rows else np.empty((0, idx.size), dtype=dt)
        return steps, values

    def verify(self) -> None:
        """Download every listed segment and check its size, sha256, index and every chunk's crc32.

        Raises TapeCorrupt naming the first bad object."""
        with self._lock:
            segments = list(self._segments)
        for seg in segments:
            try:
                data = self.store.get(seg.key)
            except ObjectNotFound as e:
                raise TapeCorrupt(f"segment {seg.key} is listed in the manifest but missing") from e
            if len(data) != seg.size:
                raise TapeCorrupt(f"segment {seg.key} is {len(data)} bytes, the manifest says {seg.size}")
            if seg.sha256 and hashlib.sha256(data).hexdigest() != seg.sha256:
                raise TapeCorrupt(f"segment {seg.key} fails its sha256")
            self._load_table(seg)
            mv = memoryview(data)
            for t in range(len(self._tensors)):
                for i in range(len(seg.steps)):
                    self._decode_chunk(seg, t, i, mv, 0)

    def clear_cache(self) -> None:
        """Drop cached decoded data (segment tables are kept)."""
        with self._lock:
            self._states.clear()
            self._blocks.clear()


__all__ = [
    "MANIFEST_NAME",
    "StepNotCaptured",
    "StoreError",
    "TapeCorrupt",
    "TapeReader",
    "TapeWriter",
    "TensorInfo",
    "UnknownTensor",
    "shuffle_bytes",
    "unshuffle_bytes",
]
