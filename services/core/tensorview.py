"""The 2-D view of a tensor that the explorer draws, and max-|value| pooling of it into heatmap tiles.

Pure numpy, shared by the api (exact windows) and the analyzer (tiles); the frontend's
``frontend/src/tensorview.js`` computes the same view, so a cell (r, c) names the same element everywhere.

* Conv weights ``[O, I, kh, kw, ...]`` (rank >= 3): filters as tiles. ``tile_cols`` tiles per row; inside a
  tile the I in-channel kernels sit in ``in_cols`` columns, each kernel kh x kw cells. View cell
  ``r = (ty * in_rows + ky) * kh + y``, ``c = (tx * in_cols + kx) * kw + x`` holds filter ``f = ty * tile_cols + tx``,
  in-channel ``ch = ky * in_cols + kx``. Cells past the last filter or in-channel are gaps (no element).
* Everything else: a matrix ``[prod(shape[:-1]), shape[-1]]``; a 1-D tensor wraps into rows of ``WRAP`` (the
  tail of its last row is a gap); a scalar is 1 x 1.

Pooling splits a window of the view into ``rows x cols`` blocks with edges ``floor(i * h / rows)``; each output
cell holds the signed value of largest magnitude in its block (on a tie of +v and -v, +v), so one large change
is never averaged away, and the block's mean. NaN elements and gaps are ignored; a block of only those is NaN.
"""

from __future__ import annotations

import math
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np

WRAP = 32  # a 1-D tensor wraps into rows of this many cells (the explorer's layout does the same)
MAX_GRID = 2048  # rows / cols of one heatmap response, each
MAX_WINDOW_ELEMENTS = 65_536  # cells of one exact-values window


def kernel_columns(i: int) -> int:
    """Columns for the in-channel kernels of one filter tile: a divisor of I near sqrt(I)."""
    if i <= 8:
        return i
    r = math.sqrt(i)
    for c in range(math.ceil(r), math.ceil(2 * r) + 1):
        if i % c == 0:
            return c
    return math.ceil(r)


def tile_columns(o: int) -> int:
    """Filter tiles per row for O filters."""
    if o <= 8:
        return o
    return 8 if o <= 64 else 16


@dataclass(frozen=True)
class TensorView:
    """How a tensor of ``shape`` is laid out as a 2-D picture of ``rows`` x ``cols`` cells."""

    shape: tuple[int, ...]
    kind: str  # "filters" | "matrix"
    rows: int
    cols: int
    # filters only
    tile_cols: int = 1
    in_cols: int = 1
    in_rows: int = 1
    kh: int = 1
    kw: int = 1

    @property
    def numel(self) -> int:
        return math.prod(self.shape)

    @property
    def has_gaps(self) -> bool:
        return self.rows * self.cols != self.numel

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"kind": self.kind, "rows": self.rows, "cols": self.cols}
        if self.kind == "filters":
            out.update(tile_cols=self.tile_cols, in_cols=self.in_cols, kh=self.kh, kw=self.kw)
        return out

    def flat_indices(self, r0: int, c0: int, r1: int, c1: int) -> np.ndarray:
        """Flat row-major element index of every cell of the window ``[r0, r1) x [c0, c1)`` (-1 = gap)."""
        r = np.arange(r0, r1, dtype=np.int64)[:, None]
        c = np.arange(c0, c1, dtype=np.int64)[None, :]
        if self.kind == "matrix":
            flat = r * self.cols + c
            return np.where(flat < self.numel, flat, -1)
        o, i = self.shape[0], self.shape[1]
        y, rest_r = r % self.kh, r // self.kh
        ky, ty = rest_r % self.in_rows, rest_r // self.in_rows
        x, rest_c = c % self.kw, c // self.kw
        kx, tx = rest_c % self.in_cols, rest_c // self.in_cols
        f = ty * self.tile_cols + tx
        ch = ky * self.in_cols + kx
        flat = ((f * i + ch) * self.kh + y) * self.kw + x
        return np.where((f < o) & (ch < i), flat, -1)

    def cell_of(self, flat: int) -> tuple[int, int]:
        """(row, col) of flat element index ``flat``."""
        if self.kind == "matrix":
            return flat // self.cols, flat % self.cols
        i = self.shape[1]
        f, rem = divmod(flat, i * self.kh * self.kw)
        ch, rem = divmod(rem, self.kh * self.kw)
        y, x = divmod(rem, self.kw)
        ty, tx = divmod(f, self.tile_cols)
        ky, kx = divmod(ch, self.in_cols)
        return (ty * self.in_rows + ky) * self.kh + y, (tx * self.in_cols + kx) * self.kw + x

    def window(self, a: np.ndarray, r0: int, c0: int, r1: int, c1: int) -> np.ndarray:
        """Cells ``[r0, r1) x [c0, c1)`` of tensor ``a`` (gaps NaN), as a float array of a's dtype."""
        flat_a = a.reshape(-1)
        if self.kind == "matrix" and not self.has_gaps:
            return flat_a.reshape(self.rows, self.cols)[r0:r1, c0:c1]
        idx = self.flat_indices(r0, c0, r1, c1)
        out = flat_a[np.maximum(idx, 0)]
        out[idx < 0] = np.nan
        return out


def view_of(shape: tuple[int, ...] | list[int]) -> TensorView:
    """The 2-D view the explorer draws for a tensor of ``shape``."""
    shape = tuple(int(s) for s in shape)
    if len(shape) >= 3:
        o, i, kh = shape[0], shape[1], shape[2]
        kw = math.prod(shape[3:])
        tc, ic = tile_columns(o), kernel_columns(i)
        tr, ir = -(-o // tc), -(-i // ic)
        return TensorView(shape, "filters", tr * ir * kh, tc * ic * kw, tc, ic, ir, kh, kw)
    if len(shape) == 0:
        return TensorView(shape, "matrix", 1, 1)
    if len(shape) == 1:
        n = shape[0]
        c = max(1, min(n, WRAP))
        return TensorView(shape, "matrix", -(-n // c), c)
    return TensorView(shape, "matrix", math.prod(shape[:-1]), shape[-1])


def parse_window(raw: str | None, view: TensorView) -> tuple[int, int, int, int]:
    """``"r0,c0,r1,c1"`` (end exclusive) checked against the view; the whole view when ``raw`` is None.

    Raises ValueError with a message that says what to fix."""
    if raw is None or raw == "":
        return 0, 0, view.rows, view.cols
    try:
        parts = [int(s) for s in raw.split(",")]
    except ValueError:
        raise ValueError(f"window must be four integers r0,c0,r1,c1 (got {raw!r})") from None
    if len(parts) != 4:
        raise ValueError(f"window must be four integers r0,c0,r1,c1 (got {len(parts)})")
    r0, c0, r1, c1 = parts
    if not (0 <= r0 < r1 <= view.rows and 0 <= c0 < c1 <= view.cols):
        raise ValueError(
            f"window {r0},{c0},{r1},{c1} is outside this tensor's {view.rows} x {view.cols} view: "
            f"need 0 <= r0 < r1 <= {view.rows} and 0 <= c0 < c1 <= {view.cols}"
        )
    return r0, c0, r1, c1


def block_edges(n: int, blocks: int) -> np.ndarray:
    """``blocks + 1`` edges ``floor(i * n / blocks)`` splitting n cells into blocks of near-equal size."""
    return (np.arange(blocks + 1, dtype=np.int64) * n) // blocks


@dataclass
class Pooled:
    """A ``rows x cols`` grid of blocks: signed max-|value| per block, block means, and window extremes."""

    values: np.ndarray  # [rows, cols], the window's dtype
    means: np.ndarray  # [rows, cols], float64
    row_edges: np.ndarray
    col_edges: np.ndarray
    min: float
    max: float

    @property
    def scale(self) -> float:
        """The symmetric colour bound: the largest finite |value| in the window (0 when none)."""
        m = [abs(v) for v in (self.min, self.max) if math.isfinite(v)]
        return max(m) if m else 0.0


def _blocks(uf: np.ufunc, w: np.ndarray, sr: np.ndarray, sc: np.ndarray, dtype: Any = None) -> np.ndarray:
    """``uf`` reduced over the blocks of ``w`` whose rows start at ``sr`` and columns at ``sc``: each block's rows
    first (a reduction along contiguous rows, vectorized over the columns), then ``reduceat`` over the columns
    of the few rows left, three times faster than ``reduceat`` over the columns of every row first."""
    edges = [*sr.tolist(), w.shape[0]]
    rows = np.empty((len(sr), w.shape[1]), dtype=dtype if dtype is not None else w.dtype)
    for i in range(len(sr)):
        uf.reduce(w[edges[i] : edges[i + 1]], axis=0, out=rows[i], dtype=dtype)
    return uf.reduceat(rows, sc, axis=1)


def _pool_band(
    w: np.ndarray, sr: np.ndarray, er: np.ndarray, sc: np.ndarray, ec: np.ndarray, with_means: bool
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Block max, min, sum and count of the rows of ``w`` that blocks ``sr`` (row starts) cover (sums and
    counts empty without ``with_means``)."""
    # The plain ufuncs are twice as fast as fmax/fmin, and a NaN (a gap) in a block makes its result NaN: only
    # then is the band pooled again skipping NaN (no pass over the band just to look for NaN).
    with np.errstate(invalid="ignore"):
        hi = _blocks(np.maximum, w, sr, sc)
        has_nan = bool(np.isnan(hi).any())
        if has_nan:
            hi = _blocks(np.fmax, w, sr, sc)
            lo = _blocks(np.fmin, w, sr, sc)
        else:
            lo = _blocks(np.minimum, w, sr, sc)
    if not with_means:
        return hi, lo, np.empty(hi.shape), np.ones(hi.shape, dtype=np.int64)
    if has_nan:
        valid = ~np.isnan(w)
        sums = _blocks(np.add, np.where(valid, w, 0), sr, sc, np.float64)
        counts = _blocks(np.add, valid, sr, sc, np.int64)
    else:
        sums = _blocks(np.add, w, sr, sc, np.float64)
        counts = np.diff(er)[:, None] * np.diff(ec)[None, :]
    return hi, lo, sums, counts


_POOL: ThreadPoolExecutor | None = None
_BAND_CELLS = 1 << 22  # windows above this are pooled in row bands on several threads (numpy drops the GIL)


def _pool() -> ThreadPoolExecutor:
    global _POOL
    if _POOL is None:
        _POOL = ThreadPoolExecutor(
            max_workers=min(8, os.cpu_count() or 1), thread_name_prefix="netlapse-pool"
        )
    return _POOL


def pool_maxabs(w: np.ndarray, rows: int, cols: int, means: bool = True) -> Pooled:
    """Pool a 2-D window into at most ``rows x cols`` blocks (fewer when the window is smaller); without
    ``means`` the block means are left NaN (a third less work)."""
    h, wd = w.shape
    rows, cols = max(1, min(rows, h)), max(1, min(cols, wd))
    er, ec = block_edges(h, rows), block_edges(wd, cols)
    bands = max(1, min(rows, (os.cpu_count() or 1), -(-w.size // _BAND_CELLS)))
    cuts = block_edges(rows, bands)  # output rows of each band
    jobs = [
        (w[er[a] : er[b]], er[a:b] - er[a], er[a : b + 1], ec[:-1], ec, means)
        for a, b in zip(cuts[:-1], cuts[1:], strict=True)
        if b > a
    ]
    parts = list(_pool().map(lambda j: _pool_band(*j), jobs)) if len(jobs) > 1 else [_pool_band(*jobs[0])]
    hi, lo, sums, counts = (np.concatenate([p[k] for p in parts]) for k in range(4))
    values = np.where(np.abs(lo) > np.abs(hi), lo, hi)
    with np.errstate(invalid="ignore", divide="ignore"):
        block_means = sums / counts if means else np.full(hi.shape, np.nan)
    block_means[counts == 0] = np.nan
    finite_hi, finite_lo = hi[~np.isnan(hi)], lo[~np.isnan(lo)]
    return Pooled(
        values=values,
        means=block_means,
        row_edges=er,
        col_edges=ec,
        min=float(finite_lo.min()) if finite_lo.size else 0.0,
        max=float(finite_hi.max()) if finite_hi.size else 0.0,
    )


# A tensor this large is not decoded whole for a small window: its elements' trajectories are read instead
# (a few lanes of the time-major frames once compacted), which costs a hover tens of milliseconds, not seconds.
WHOLE_READ_LIMIT = 1 << 22


def read_window(
    tape: Any, name: str, steps: list[int], window: tuple[int, int, int, int]
) -> tuple[np.ndarray, np.ndarray]:
    """Exact values of the window's cells at each of ``steps``: ``(values [len(steps), h, w] (gaps NaN),
    flat indices [h, w] (-1 = gap))``. ``tape`` is a ``TapeReader``; the bits are the tape's, as ``read`` gives."""
    info = tape.tensor(name)
    view = view_of(info.shape)
    r0, c0, r1, c1 = window
    idx = view.flat_indices(r0, c0, r1, c1)
    out = np.full((len(steps), *idx.shape), np.nan, dtype=np.dtype(info.dtype))
    valid = idx >= 0
    if info.numel <= WHOLE_READ_LIMIT or len(tape.steps()) * int(valid.sum()) > WHOLE_READ_LIMIT:
        for k, s in enumerate(steps):
            out[k][valid] = tape.read(name, s).reshape(-1)[idx[valid]]
        return out, idx
    captured, values = tape.trajectory(name, idx[valid].tolist())
    pos = {s: i for i, s in enumerate(captured)}
    for k, s in enumerate(steps):
        out[k][valid] = values[pos[s]]
    return out, idx
