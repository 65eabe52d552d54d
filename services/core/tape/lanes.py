"""Lanes: every tensor as a flat array of integers, and the integer transforms the codec applies to them.

float16/32/64 become int16/32/64 through the order-preserving "monotone" map (flip the magnitude bits of
negatives), so integer differences are distances in ULPs; complex is two float lanes per element; ints and
bools are themselves. All arithmetic on lanes wraps, so decoding is exact on every machine and NaN payloads,
-0.0 and subnormals round-trip bit-exact. A residual against a prediction is zigzag-mapped (small values of
either sign get zero high bytes) and split into byte planes (all byte 0s, then all byte 1s, ...).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from netlapse.core.tape import native

# Chunk modes (index table column 3).
MODE_KEY, MODE_D1, MODE_D2 = 0, 1, 2


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
    if native.mono_into(bits, out):  # one native pass where the codec is built
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


def _lanes_of_signed(signed: np.dtype[Any]) -> _Lanes:
    s = np.dtype(signed)
    return _Lanes(s, np.dtype(f"<u{s.itemsize}"), 1, False, False)


# --- format 2 ------------------------------------------------------------------------------------------------

# Mode 3 (format 2 only): the block's lanes themselves, zigzagged (prediction 0). For float lanes that is
# ``(magnitude << 1) | sign``: the exponent sits whole in the top byte plane, as ZipNN groups it, which is
# what still compresses when a step's residual does not (random weights, huge learning rates).
MODE_DENSE = 3
# Mode 4 (native chunks only): a delta whose predictor, m1 + alpha/64 * (m1 - m2) (16ths in older chunks), is
# named inside the chunk.
MODE_NATIVE = 4
# Mode choice looks at this many lanes of a block (strided), in exact integer arithmetic, so every
# implementation of the encoder (numpy, torch) picks the same mode.
MODE_SAMPLE = 1024


def _zigzag_into(r: np.ndarray, lanes: _Lanes, tmp: np.ndarray) -> np.ndarray:
    """_zigzag with a caller's scratch (no allocation): r in place, returns the unsigned view."""
    np.right_shift(r, lanes.bits - 1, out=tmp)
    np.left_shift(r, 1, out=r)
    np.bitwise_xor(r, tmp, out=r)
    return r.view(lanes.unsigned)


def _vote_mode(m: np.ndarray, m1: np.ndarray, m2: np.ndarray | None) -> int:
    """D2 when linear extrapolation beats the previous value on more sampled lanes than it loses (ties: D1).

    Exact integer arithmetic on the same strided sample in every implementation: wrapped int64 differences,
    compared by magnitude."""
    if m2 is None or m.size == 0:
        return MODE_D1
    stride = max(1, m.size // MODE_SAMPLE)
    a, b = m[::stride], m1[::stride]
    r1 = np.subtract(a, b, dtype=np.int64)
    r2 = np.subtract(b, m2[::stride], dtype=np.int64)
    np.subtract(r1, r2, out=r2)
    np.abs(r1, out=r1)
    np.abs(r2, out=r2)
    wins = int(np.count_nonzero(r2 < r1))
    losses = int(np.count_nonzero(r1 < r2))
    return MODE_D2 if wins > losses else MODE_D1


def _split_planes(u: np.ndarray, out: np.ndarray) -> np.ndarray:
    """Byte planes of unsigned lanes ``u`` into ``out`` [itemsize, n] (plane 0 = least significant byte)."""
    k = u.dtype.itemsize
    flat = u.view(np.uint8).reshape(-1, k)
    for j in range(k):
        out[j] = flat[:, j]
    return out


def _join_planes(planes: np.ndarray, lanes: _Lanes) -> np.ndarray:
    """Inverse of _split_planes: [itemsize, n] uint8 -> n unsigned lanes (a new array)."""
    k, n = planes.shape
    out = np.empty((n, k), dtype=np.uint8)
    for j in range(k):
        out[:, j] = planes[j]
    return out.reshape(-1).view(lanes.unsigned)
