"""The explorer's 2-D view of a tensor and max-|value| pooling, against straightforward loop implementations."""

from __future__ import annotations

import math

import numpy as np
import pytest

from netlapse.core.tensorview import (
    MAX_GRID,
    parse_window,
    pool_maxabs,
    view_of,
)


def loop_view(a: np.ndarray) -> np.ndarray:
    """The documented view, element by element (NaN = gap)."""
    v = view_of(a.shape)
    out = np.full((v.rows, v.cols), np.nan, dtype=np.float64)
    if a.ndim >= 3:
        o, i, kh = a.shape[:3]
        kw = math.prod(a.shape[3:])
        b = a.reshape(o, i, kh, kw)
        for f in range(o):
            for ch in range(i):
                for y in range(kh):
                    for x in range(kw):
                        ty, tx = divmod(f, v.tile_cols)
                        ky, kx = divmod(ch, v.in_cols)
                        out[(ty * v.in_rows + ky) * kh + y, (tx * v.in_cols + kx) * kw + x] = b[f, ch, y, x]
        return out
    flat = a.reshape(-1)
    for k, val in enumerate(flat):
        out[k // v.cols, k % v.cols] = val
    return out


def loop_pool(w: np.ndarray, rows: int, cols: int) -> tuple[np.ndarray, np.ndarray]:
    """Per block: among the non-NaN cells the largest |v| (the positive one on a tie) and the mean."""
    h, wd = w.shape
    rows, cols = min(rows, h), min(cols, wd)
    vals = np.full((rows, cols), np.nan)
    means = np.full((rows, cols), np.nan)
    for i in range(rows):
        for j in range(cols):
            blk = w[i * h // rows : (i + 1) * h // rows, j * wd // cols : (j + 1) * wd // cols].reshape(-1)
            blk = blk[~np.isnan(blk)]
            if blk.size:
                m = np.abs(blk).max()
                vals[i, j] = blk[np.abs(blk) == m].max()
                means[i, j] = blk.astype(np.float64).mean()
    return vals, means


def assert_pool(w: np.ndarray, rows: int, cols: int) -> None:
    p = pool_maxabs(w, rows, cols)
    vals, means = loop_pool(w, rows, cols)
    assert p.values.shape == vals.shape
    np.testing.assert_array_equal(p.values.astype(np.float64), vals)  # exact, NaN where a block is empty
    np.testing.assert_allclose(p.means, means, rtol=1e-12, atol=0)
    finite = w[~np.isnan(w)]
    if finite.size == 0:  # a window of gaps only
        assert (p.min, p.max, p.scale) == (0.0, 0.0, 0.0)
        return
    assert p.min == finite.min() and p.max == finite.max()
    assert p.scale == np.abs(finite).max()


@pytest.mark.parametrize(
    "shape",
    [(), (7,), (32,), (45,), (5, 3), (12, 70), (3, 4, 5), (10, 3, 3, 3), (70, 9, 3, 2), (16, 12, 1, 1)],
)
def test_view_matches_the_documented_layout(shape: tuple[int, ...]) -> None:
    rng = np.random.default_rng(1)
    a = rng.standard_normal(shape).astype(np.float32)
    v = view_of(shape)
    expected = loop_view(a)
    got = v.window(a, 0, 0, v.rows, v.cols)
    np.testing.assert_array_equal(got.astype(np.float64), expected)
    # Every element appears exactly once; cell_of inverts flat_indices.
    idx = v.flat_indices(0, 0, v.rows, v.cols)
    assert sorted(idx[idx >= 0].tolist()) == list(range(a.size))
    for k in range(0, a.size, max(1, a.size // 37)):
        r, c = v.cell_of(k)
        assert idx[r, c] == k


def test_wide_cnn_conv_view_has_no_gaps_and_fc1_is_its_matrix() -> None:
    conv3 = view_of([256, 128, 3, 3])
    assert (conv3.kind, conv3.rows, conv3.cols, conv3.has_gaps) == ("filters", 384, 768, False)
    fc1 = view_of([1984, 12544])
    assert (fc1.kind, fc1.rows, fc1.cols) == ("matrix", 1984, 12544)


@pytest.mark.parametrize(
    ("h", "w", "rows", "cols"),
    [
        (1, 1, 1, 1),
        (7, 13, 3, 5),
        (7, 13, 7, 13),
        (7, 13, 100, 100),
        (64, 100, 9, 11),
        (5, 257, 2, 256),
        (33, 1, 4, 1),
    ],
)
def test_pool_equals_a_loop_pool(h: int, w: int, rows: int, cols: int) -> None:
    rng = np.random.default_rng(h * 1000 + w)
    a = rng.standard_normal((h, w)).astype(np.float32)
    a[rng.random((h, w)) < 0.2] = 0.0
    assert_pool(a, rows, cols)


def test_an_isolated_large_value_is_never_averaged_away() -> None:
    a = np.full((40, 40), 0.01, dtype=np.float32)
    a[17, 23] = -5.0
    p = pool_maxabs(a, 4, 4)
    assert p.values[1, 2] == np.float32(-5.0)
    assert p.min == -5.0 and p.scale == 5.0
    assert p.values[0, 0] == np.float32(0.01)


def test_ties_pick_the_positive_value_and_gaps_or_nan_are_ignored() -> None:
    a = np.array([[0.5, -0.5], [np.nan, 0.25]], dtype=np.float32)
    p = pool_maxabs(a, 1, 1)
    assert p.values[0, 0] == np.float32(0.5)
    assert p.means[0, 0] == pytest.approx((0.5 - 0.5 + 0.25) / 3)
    only_nan = np.array([[np.nan, 1.0]], dtype=np.float32)
    q = pool_maxabs(only_nan, 1, 2)
    assert np.isnan(q.values[0, 0]) and np.isnan(q.means[0, 0]) and q.values[0, 1] == 1.0
    assert_pool(np.array([[np.nan, 2.0, -3.0], [np.nan, np.nan, 1.0]], dtype=np.float32), 2, 2)


def test_pooling_of_views_with_gaps_and_windows_at_the_edges() -> None:
    rng = np.random.default_rng(5)
    a = rng.standard_normal((70, 9, 3, 2)).astype(np.float32)  # 70 filters: gaps past the last one
    v = view_of(a.shape)
    full = loop_view(a)
    for r0, c0, r1, c1 in [(0, 0, v.rows, v.cols), (v.rows - 5, v.cols - 7, v.rows, v.cols), (1, 2, 4, 3)]:
        w = v.window(a, r0, c0, r1, c1)
        np.testing.assert_array_equal(w.astype(np.float64), full[r0:r1, c0:c1])
        assert_pool(w, 3, 5)
    bias = rng.standard_normal(45).astype(np.float32)  # wraps into 2 rows of 32: 19 gaps at the end
    vb = view_of(bias.shape)
    assert_pool(vb.window(bias, 0, 0, vb.rows, vb.cols), 2, 3)


def test_window_parsing_says_what_to_fix() -> None:
    v = view_of([10, 20])
    assert parse_window(None, v) == (0, 0, 10, 20)
    assert parse_window("2,3,4,20", v) == (2, 3, 4, 20)
    with pytest.raises(ValueError, match="four integers"):
        parse_window("1,2,3", v)
    with pytest.raises(ValueError, match="four integers"):
        parse_window("a,b,c,d", v)
    with pytest.raises(ValueError, match=r"outside this tensor's 10 x 20 view"):
        parse_window("0,0,11,5", v)
    with pytest.raises(ValueError, match="r0 < r1"):
        parse_window("3,0,3,5", v)
    assert MAX_GRID == 2048


def test_row_bands_on_several_threads_give_the_same_cells(monkeypatch: pytest.MonkeyPatch) -> None:
    from netlapse.core import tensorview

    monkeypatch.setattr(tensorview, "_BAND_CELLS", 64)  # every window is split into bands
    monkeypatch.setattr(tensorview.os, "cpu_count", lambda: 4)
    rng = np.random.default_rng(9)
    a = rng.standard_normal((53, 41)).astype(np.float32)
    assert_pool(a, 7, 6)
    assert_pool(a, 53, 41)
    a[rng.random(a.shape) < 0.1] = np.nan
    assert_pool(a, 9, 4)


def test_values_without_means_are_the_same_cells() -> None:
    rng = np.random.default_rng(3)
    a = rng.standard_normal((40, 70)).astype(np.float32)
    a[3, 4] = np.nan
    full, fast = pool_maxabs(a, 6, 9), pool_maxabs(a, 6, 9, means=False)
    np.testing.assert_array_equal(fast.values, full.values)
    assert np.isnan(fast.means).all() and (fast.min, fast.max) == (full.min, full.max)
