"""The native lane codec (nlcodec.c, built by ``pip install -e .`` / ``make setup``), through ctypes.

One call turns a block's lanes (and the two previous steps' lanes) into a chunk, one call turns it back; the
C code does the prediction, the symbol split and the Huffman coding in two passes over the block and releases
the GIL. Chunks start with ``NATIVE_TAG`` (0xA3), which no format-2 plane chunk can start with (those start
with their plane count 1, 2, 4 or 8), so the reader tells them apart by their first byte.

``NETLAPSE_NATIVE_LIB`` names another build of nlcodec.c to load instead (tests use it to compare the
SIMD and scalar paths). Without the built library (an install without a C compiler) ``available()`` is False: writers use the zstd
byte planes instead and log it once; reading a native chunk raises ``NativeCodecMissing``.
"""

from __future__ import annotations

import ctypes
import importlib.util
import logging
import os
import threading
import zlib
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

NATIVE_TAG = 0xA3
# Chunk header (8 bytes): tag, lane bytes, kind, alpha (int8), u32 lanes. Kind (kind_of): 0 values (keyframes,
# dense blocks) or 1 delta; bit 7 stored raw, bit 6 a delta zero everywhere (nothing stored), bit 4 four
# interleaved streams. nlcodec.c is the one place that reads or writes them.
WIDTHS = (2, 4, 8)  # lane bytes the native codec takes; 1-byte lanes stay on byte planes

_ERRORS = {
    -1: "its header does not describe this block",
    -2: "it is shorter than its parts",
    -3: "its code table is malformed",
    -4: "its stream holds an invalid code",
    -5: "a stream ends early",
    -6: "a delta chunk needs the previous step",
    -7: "out of memory",
    -8: "it has bytes after its streams",
    -9: "bad arguments",
}


class NativeCodecMissing(RuntimeError):
    """The tape holds native chunks and this install has no built native codec."""


class NativeCodecError(ValueError):
    """A native chunk does not decode (corrupt or not a chunk of this block)."""


_lib: Any = None
_load_lock = threading.Lock()
_loaded = False
_warned = False
_bound_extra = 0


def _load() -> Any:
    global _lib, _loaded, _bound_extra
    if _loaded:
        return _lib
    with _load_lock:
        if _loaded:
            return _lib
        try:
            spec = importlib.util.find_spec("netlapse.core.tape._nlcodec")
            path = os.environ.get("NETLAPSE_NATIVE_LIB") or (spec.origin if spec is not None else None)
            if path:
                lib = ctypes.CDLL(path)
                i32, i64, ptr = ctypes.c_int, ctypes.c_int64, ctypes.c_void_p
                signatures = {
                    "nl_encode": (i64, [i32, i64, ptr, ptr, ptr, i32, ptr, i64, ptr]),
                    "nl_encode_bits": (i64, [i32, i64, ptr, ptr, ptr, ptr, i32, ptr, i64, ptr]),
                    "nl_encode_bits_many": (i64, [i64, ptr, ptr, i64, ptr, ptr]),
                    "nl_encode_bits_team": (i64, [i64, ptr, ptr, i64, ptr, ptr, ptr, i32, ptr]),
                    "nl_crc32": (ctypes.c_uint32, [ctypes.c_uint32, ptr, i64]),
                    "nl_decode": (i32, [ptr, i64, i32, i64, ptr, ptr, ptr]),
                    "nl_mono": (None, [i32, i64, ptr, ptr]),
                    "nl_bound": (i64, [i32, i64]),
                }
                for fn, (res, args) in signatures.items():
                    getattr(lib, fn).restype = res
                    getattr(lib, fn).argtypes = args
                _bound_extra = int(lib.nl_bound(1, 0))  # nl_bound(wb, n) = wb * n + this
                _lib = lib
        except OSError:
            log.warning("the native tape codec is built but does not load", exc_info=True)
            _lib = None
        _loaded = True
    return _lib


def available() -> bool:
    """Whether the native codec is built and loads."""
    return _load() is not None


def warn_missing_once() -> None:
    """Log once per process that tapes fall back to zstd byte planes."""
    global _warned
    if not _warned:
        _warned = True
        log.warning(
            "tape encoder: the native codec is not built (no C compiler at install?); byte planes are "
            "coded with zstd instead (slower, larger). Rebuild with `pip install -e .` or `make setup`."
        )


def is_native(chunk: bytes | memoryview) -> bool:
    """Whether a format-2/3 chunk is a native one (by its first byte)."""
    return len(chunk) > 0 and chunk[0] == NATIVE_TAG


_tls = threading.local()


def _out_buffer(size: int) -> tuple[np.ndarray, np.ndarray]:
    """This thread's chunk buffer (at least ``size`` bytes) and its one-word CRC slot."""
    buf: np.ndarray | None = getattr(_tls, "out", None)
    if buf is None or buf.size < size:
        buf = np.empty(size + size // 4, dtype=np.uint8)
        _tls.out = buf
        _tls.crc = np.zeros(1, dtype=np.uint32)
        _tls.ptrs = (_ptr(buf), _ptr(_tls.crc))  # numpy takes ~2 us to say where an array is: once
    return buf, _tls.crc


def crc32(data: bytes | memoryview) -> int:
    """zlib.crc32 of ``data``, ~2-3x faster with the native codec (carry-less multiplication)."""
    lib = _load()
    if lib is None:
        return zlib.crc32(data)
    a = np.frombuffer(data, dtype=np.uint8)  # no copy, also of a memoryview into a fetched range
    return int(lib.nl_crc32(0, _ptr(a) if a.size else None, a.size))


def _ptr(a: np.ndarray | None) -> int | None:
    if a is None:
        return None
    if not a.flags.c_contiguous:
        raise ValueError("native codec: lanes must be contiguous")
    return int(a.__array_interface__["data"][0])  # cheaper than a.ctypes.data


def mono_into(bits: np.ndarray, out: np.ndarray) -> bool:
    """The monotone map of float bit lanes ``bits`` into ``out`` in one native pass; False (nothing done)
    when the codec is not built or the lanes are not 2, 4 or 8 contiguous bytes."""
    lib = _load()
    wb = bits.dtype.itemsize
    if lib is None or wb not in WIDTHS or out.size != bits.size or out.dtype.itemsize != wb:
        return False
    if not (bits.flags.c_contiguous and out.flags.c_contiguous):
        return False
    lib.nl_mono(wb, bits.size, _ptr(bits), _ptr(out))
    return True


def _check_prev(m1: np.ndarray | None, m2: np.ndarray | None, n: int, wb: int) -> None:
    for a in (m1, m2):
        if a is not None and (a.size != n or a.dtype.itemsize != wb):
            raise ValueError("native codec: previous steps must match the block's lanes")


def _encode(
    fn: str, lanes: np.ndarray, m1: np.ndarray | None, m2: np.ndarray | None, values: bool, *pre: int | None
) -> tuple[bytes, int]:
    """One block through ``fn`` (nl_encode or nl_encode_bits, whose pointer arguments ``pre`` come before
    m1 and m2): the chunk's bytes and their CRC-32 (computed by the codec while the chunk is in cache)."""
    lib = _load()
    if lib is None:
        raise NativeCodecMissing("the native tape codec is not built")
    wb, n = lanes.dtype.itemsize, lanes.size
    if wb not in WIDTHS:
        raise ValueError(f"native codec: lanes of {wb} bytes are not supported")
    _check_prev(m1, m2, n, wb)
    if not values and m1 is None:
        raise ValueError("native codec: a delta chunk needs the previous step")
    cap = wb * n + _bound_extra  # nl_bound(wb, n): the lanes stored raw plus header and slack
    out, crc = _out_buffer(cap)
    size = int(
        getattr(lib, fn)(wb, n, *pre, _ptr(m1), _ptr(m2), 1 if values else 0, _ptr(out), cap, _ptr(crc))
    )
    if size < 0:
        raise RuntimeError(f"native encoder failed: {_ERRORS.get(size, size)}")
    return out[:size].tobytes(), int(crc[0])


def encode(m: np.ndarray, m1: np.ndarray | None, m2: np.ndarray | None, *, values: bool) -> bytes:
    """A chunk of lanes ``m`` (1-d, 2/4/8-byte ints): a values chunk, or a delta chunk against ``m1`` (and
    ``m2``, which makes the predictor extrapolate). The lanes are read, never written."""
    return encode_crc(m, m1, m2, values=values)[0]


def encode_crc(
    m: np.ndarray, m1: np.ndarray | None, m2: np.ndarray | None, *, values: bool
) -> tuple[bytes, int]:
    """encode(), and the chunk's CRC-32 (zlib.crc32 of it)."""
    return _encode("nl_encode", m, m1, m2, values, _ptr(m))


def address(a: np.ndarray) -> int:
    """Where a contiguous array's first element is (for encode_bits_at). The tape writer asks this for every
    tensor of every snapshot: through ctypes' buffer view it takes ~0.6 us, numpy's __array_interface__ ~2."""
    if not a.flags.c_contiguous:
        raise ValueError("native codec: lanes must be contiguous")
    try:
        return ctypes.addressof(ctypes.c_char.from_buffer(a))  # type: ignore[arg-type]  # numpy arrays are buffers
    except (TypeError, ValueError):  # read-only or empty: numpy says where it is
        p = _ptr(a)
        assert p is not None
        return p


def encode_bits_at(
    wb: int, n: int, bits: int, m_out: int, m1: int | None, m2: int | None, *, values: bool
) -> tuple[bytes, int]:
    """encode_bits() of ``n`` lanes of ``wb`` bytes given by address (``address(array)`` plus the block's
    byte offset). Nothing is checked here: the caller owns the arrays, keeps them alive and contiguous, and
    gives lanes of the same count and width (the tape writer's per-block path: asking numpy where each slice
    is costs more than the check). A delta block (``values`` False) needs ``m1``."""
    lib = _load()
    if lib is None:
        raise NativeCodecMissing("the native tape codec is not built")
    if wb not in WIDTHS or (not values and m1 is None):
        raise ValueError("native codec: lanes of 2, 4 or 8 bytes, and a delta block needs the previous step")
    cap = wb * n + _bound_extra
    out, crc = _out_buffer(cap)
    out_p, crc_p = _tls.ptrs
    size = int(lib.nl_encode_bits(wb, n, bits, m_out, m1, m2, 1 if values else 0, out_p, cap, crc_p))
    if size < 0:
        raise RuntimeError(f"native encoder failed: {_ERRORS.get(size, size)}")
    return out[:size].tobytes(), int(crc[0])


def bound(wb: int, n: int) -> int:
    """The most bytes a chunk of ``n`` lanes of ``wb`` bytes can take (the codec's nl_bound)."""
    _load()
    return wb * n + _bound_extra


_team_lock = threading.Lock()
_team_fns: np.ndarray | None = None
_TEAM_SYMBOLS = ("GOMP_parallel", "omp_get_thread_num", "omp_get_num_threads", "GOMP_barrier")


def _loaded_libgomp() -> str | None:
    """The path of the GNU OpenMP runtime this process has loaded (torch's own copy first), or None."""
    try:
        with open("/proc/self/maps", encoding="utf-8", errors="replace") as f:
            paths = {line.split(None, 5)[-1].strip() for line in f if "libgomp" in line}
    except OSError:
        return None
    paths = {p for p in paths if p.startswith("/") and os.path.basename(p).startswith("libgomp")}
    if not paths:
        return None
    return sorted(paths, key=lambda p: (f"{os.sep}torch{os.sep}" not in p, p))[0]


def omp_team() -> np.ndarray | None:
    """The entry points of the GNU OpenMP runtime already loaded into this process (GOMP_parallel,
    omp_get_thread_num, omp_get_num_threads, GOMP_barrier, as addresses for nl_encode_bits_team), or None when
    none is (torch not imported yet, or built without it; not Linux) or the codec is not built. Once found, kept."""
    global _team_fns
    if _team_fns is not None:
        return _team_fns
    with _team_lock:
        path = _loaded_libgomp() if _team_fns is None and _load() is not None else None
        if path is not None:
            try:
                gomp = ctypes.CDLL(path)  # already loaded: the same copy, not a second runtime
                _team_fns = np.array(
                    [ctypes.cast(getattr(gomp, name), ctypes.c_void_p).value for name in _TEAM_SYMBOLS],
                    dtype=np.uint64,
                )
            except (OSError, AttributeError):
                log.warning("OpenMP runtime %s has no usable team entry points", path, exc_info=True)
    return _team_fns


class BlockBatch:
    """encode_bits_at() for many blocks in one call (the tape writer's per-snapshot path), with reused
    arguments: ``jobs`` (int64 [capacity, 7]: wb, n, bits, m_out, m1, m2, values; addresses as from address()
    plus the block's byte offset, 0 = none), ``sizes`` and ``crcs``, their addresses found once. The same
    caller's contract as encode_bits_at: nothing but the sizes is checked here."""

    def __init__(self, capacity: int) -> None:
        self.jobs = np.zeros((max(1, capacity), 7), dtype=np.int64)
        self.sizes = np.zeros(max(1, capacity), dtype=np.int64)
        self.crcs = np.zeros(max(1, capacity), dtype=np.uint32)
        self.helper_cpu_ns = np.zeros(1, dtype=np.int64)  # CPU the team's other threads spent (encode(team=))
        self._ptrs = (
            address(self.jobs),
            address(self.sizes),
            address(self.crcs),
            address(self.helper_cpu_ns),
        )

    def encode(self, k: int, out_addr: int, cap: int, first: int = 0, team: int = 1) -> int:
        """Code the ``k`` rows of ``jobs`` from row ``first``, chunk after chunk, into ``cap`` bytes at address
        ``out_addr`` (room for the sum of their bound(wb, n)); returns their total size (``sizes`` and ``crcs``
        hold each chunk's, at the rows' places). ``team`` > 1: on that many threads of the calling thread's
        OpenMP team (omp_team(); torch's, called from the thread that trains), the same bytes; the CPU time
        the other threads spent is added to ``helper_cpu_ns``. Without an OpenMP runtime: one thread."""
        lib = _load()
        if lib is None:
            raise NativeCodecMissing("the native tape codec is not built")
        if k <= 0 or first < 0 or first + k > self.sizes.size:
            raise ValueError(f"native codec: blocks {first}..{first + k} of a batch of {self.sizes.size}")
        jp, sp, cp, hp = self._ptrs
        fns = omp_team() if team > 1 else None
        if fns is not None:
            total = int(
                lib.nl_encode_bits_team(
                    k, jp + 56 * first, out_addr, cap, sp + 8 * first, cp + 4 * first, address(fns), team, hp
                )
            )
        else:
            total = int(
                lib.nl_encode_bits_many(k, jp + 56 * first, out_addr, cap, sp + 8 * first, cp + 4 * first)
            )
        if total < 0:
            bad = first + int(np.argmax(self.sizes[first : first + k] < 0))
            raise RuntimeError(f"native encoder failed on block {bad}: {_ERRORS.get(total, total)}")
        return total


def encode_bits(
    bits: np.ndarray, m_out: np.ndarray, m1: np.ndarray | None, m2: np.ndarray | None, *, values: bool
) -> tuple[bytes, int]:
    """encode_crc() of the monotone lanes of float bit lanes ``bits``, which it also writes into ``m_out``."""
    if m_out.size != bits.size or m_out.dtype.itemsize != bits.dtype.itemsize:
        raise ValueError("native codec: bits and lanes must match in size and width")
    return _encode("nl_encode_bits", bits, m1, m2, values, _ptr(bits), _ptr(m_out))


def decode_into(
    chunk: bytes | memoryview, m1: np.ndarray | None, m2: np.ndarray | None, out: np.ndarray
) -> None:
    """Decode a chunk into lanes ``out`` (1-d, contiguous; its size and width are the block's), given the
    previous steps ``m1``/``m2`` the encoder had. NativeCodecError when the chunk does not decode."""
    lib = _load()
    if lib is None:
        raise NativeCodecMissing(
            "this tape holds native chunks but the native codec is not built here "
            "(run `pip install -e .` with a C compiler, or `make setup`)"
        )
    wb = out.dtype.itemsize
    n = out.size
    _check_prev(m1, m2, n, wb)
    data = np.frombuffer(chunk, dtype=np.uint8)  # no copy, also of a memoryview into a fetched range
    rc = int(
        lib.nl_decode(_ptr(data) if data.size else None, data.size, wb, n, _ptr(m1), _ptr(m2), _ptr(out))
    )
    if rc != 0:
        raise NativeCodecError(f"native chunk does not decode: {_ERRORS.get(rc, rc)}")


def kind_of(chunk: bytes | memoryview) -> tuple[int, int]:
    """(kind byte, alpha) of a native chunk, read from its header."""
    if len(chunk) < 8 or chunk[0] != NATIVE_TAG:
        raise NativeCodecError("not a native chunk")
    alpha = chunk[3] - 256 if chunk[3] > 127 else chunk[3]
    return int(chunk[2]), int(alpha)
