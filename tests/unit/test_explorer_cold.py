"""The pieces of the explorer's cold path made cheaper (one copy for .npy bytes, one pass for a diff's stats, no NaN
scan before pooling) give exactly what the plain numpy versions give."""

from __future__ import annotations

import io

import numpy as np
import pytest

from netlapse.analyzer.analyses import diff_stats
from netlapse.core.results import npy_bytes
from netlapse.core.tensorview import pool_maxabs
from tests.unit.test_heatmap import independent_pool


@pytest.mark.parametrize(
    "a",
    [
        np.ones((), np.float32),
        np.zeros((0, 3), np.float32),
        np.arange(10, dtype=np.int64),
        np.ones((3, 4), bool),
        np.arange(24, dtype=np.float16).reshape(2, 3, 4),
        np.arange(12, dtype=np.float32).reshape(3, 4).T,  # not contiguous
        np.array([1, 2], dtype=">i4"),
        np.zeros(3, dtype=[("a", "f4"), ("b", "i8")]),
        np.random.default_rng(0).standard_normal((37, 1031)).astype(np.float32),
    ],
)
def test_npy_bytes_are_what_np_save_writes(a: np.ndarray) -> None:
    buf = io.BytesIO()
    np.save(buf, np.ascontiguousarray(a), allow_pickle=False)  # C order (a 0-d array as shape [1])
    assert npy_bytes(a) == buf.getvalue()
    np.testing.assert_array_equal(np.load(io.BytesIO(npy_bytes(a)), allow_pickle=False).reshape(a.shape), a)


def test_npy_bytes_refuse_object_arrays() -> None:
    with pytest.raises(ValueError, match="Object arrays"):
        npy_bytes(np.array([None, 1], dtype=object))


@pytest.mark.parametrize("n", [1, 5, (1 << 17) - 1, 1 << 17, 3 * (1 << 17) + 11])
def test_diff_stats_in_one_pass_equal_numpy(n: int) -> None:
    rng = np.random.default_rng(n)
    d = (rng.standard_normal(n) * (rng.random(n) < 0.6)).astype(np.float32)
    d[n // 2] = -7.25  # the minimum, past the first chunk when n is large
    s = diff_stats(d)
    d64 = d.astype(np.float64)
    assert (s["min"], s["max"]) == (float(d.min()), float(d.max())) and s["min"] == -7.25
    assert s["increased"] == np.count_nonzero(d > 0) and s["decreased"] == np.count_nonzero(d < 0)
    assert s["unchanged"] == np.count_nonzero(d == 0) and s["count"] == n
    assert s["mean"] == pytest.approx(d64.mean(), rel=1e-12, abs=1e-300)
    assert s["mean_abs"] == pytest.approx(np.abs(d64).mean(), rel=1e-12)
    assert s["l2"] == pytest.approx(np.sqrt((d64 * d64).sum()), rel=1e-12)


def test_diff_stats_keep_nan_and_empty() -> None:
    s = diff_stats(np.array([1.0, np.nan, -2.0], np.float32))
    assert np.isnan(s["min"]) and np.isnan(s["max"])  # as d.min() / d.max(): a NaN is not hidden
    assert diff_stats(np.zeros(0, np.float32))["count"] == 0


def test_pooling_without_a_nan_scan_equals_the_independent_pooling() -> None:
    rng = np.random.default_rng(3)
    w = rng.standard_normal((301, 907)).astype(np.float32)
    w[5, 7] = 9.0
    w[200, 900] = -9.0  # a tie of +9 and -9 in no block; each keeps its sign
    for rows, cols in [(7, 13), (301, 907), (1, 1), (64, 300)]:
        np.testing.assert_array_equal(pool_maxabs(w, rows, cols).values, independent_pool(w, rows, cols))
    w[0:3, 0:10] = np.nan  # a whole block of NaN stays NaN; a block with some NaN skips them
    w[150, 450] = np.nan
    for rows, cols in [(7, 13), (100, 91), (301, 907)]:
        p = pool_maxabs(w, rows, cols)
        np.testing.assert_array_equal(p.values, independent_pool(w, rows, cols))
        assert p.min == float(np.nanmin(w)) and p.max == float(np.nanmax(w))
