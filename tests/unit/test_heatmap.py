"""Heatmap tiles computed from a real tape in a local store, against an independent pooling of the arrays written."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from netlapse.analyzer.heatmap import HEATMAP, HeatmapRequest, heatmap_answer, npy_rows
from netlapse.analyzer.registry import AnalysisFailure, Context, ensure
from netlapse.core.results import npy_bytes
from netlapse.core.schemas import tape_prefix
from netlapse.core.settings import Settings
from netlapse.core.store import LocalStore
from netlapse.core.tape import TapeWriter, TensorInfo

SHAPES = {"fc.weight": (37, 101), "conv.weight": (10, 3, 3, 3), "fc.bias": (45,)}


def independent_view(a: np.ndarray) -> np.ndarray:
    """The explorer's 2-D view written out directly (NaN = gap)."""
    if a.ndim == 4:  # 10 filters, 8 tiles per row; 3 in-channels side by side
        o, i, kh, kw = a.shape
        out = np.full((2 * kh, 8 * i * kw), np.nan, dtype=a.dtype)
        for f in range(o):
            for ch in range(i):
                r, c = (f // 8) * kh, (f % 8) * i * kw + ch * kw
                out[r : r + kh, c : c + kw] = a[f, ch]
        return out
    if a.ndim == 1:
        out = np.full((-(-a.size // 32), 32), np.nan, dtype=a.dtype)
        out.reshape(-1)[: a.size] = a
        return out
    return a


def independent_pool(w: np.ndarray, rows: int, cols: int) -> np.ndarray:
    h, wd = w.shape
    rows, cols = min(rows, h), min(cols, wd)
    out = np.full((rows, cols), np.nan, dtype=w.dtype)
    for i in range(rows):
        for j in range(cols):
            blk = w[i * h // rows : (i + 1) * h // rows, j * wd // cols : (j + 1) * wd // cols].ravel()
            blk = blk[~np.isnan(blk)]
            if blk.size:
                m = np.abs(blk).max()
                out[i, j] = blk[np.abs(blk) == m].max()
    return out


@pytest.fixture
def run(tmp_path: Path) -> tuple[LocalStore, list[dict[str, np.ndarray]]]:
    store = LocalStore(tmp_path / "store")
    infos = [TensorInfo(n, s, "float32") for n, s in SHAPES.items()]
    writer = TapeWriter(store, tape_prefix("r1"), infos, segment_max_steps=2)
    rng = np.random.default_rng(0)
    states = []
    cur = {n: rng.standard_normal(s).astype(np.float32) for n, s in SHAPES.items()}
    for step in range(4):
        if step:
            cur = {
                n: (v + rng.standard_normal(v.shape).astype(np.float32) * 0.01).astype(np.float32)
                for n, v in cur.items()
            }
            cur["fc.weight"][5, 7] = cur["fc.weight"][5, 7] + np.float32(3.0)  # one isolated large change
        states.append({n: v.copy() for n, v in cur.items()})
        writer.append(step, cur)
    writer.close()
    return store, states


def heatmap(store: LocalStore, **q: object) -> dict:
    req = HeatmapRequest.model_validate({"run_id": "r1", **q})
    stored = ensure(HEATMAP, Context(store, Settings()), req)
    return heatmap_answer(stored, req).content


@pytest.mark.parametrize("name", list(SHAPES))
@pytest.mark.parametrize(
    ("rows", "cols", "window"), [(4, 9, None), (2048, 2048, None), (3, 5, "1,2,6,9"), (1, 1, None)]
)
def test_tiles_equal_an_independent_pooling(run, name: str, rows: int, cols: int, window: str | None) -> None:
    store, states = run
    for q, full in [
        ({"step": 2}, states[2][name]),
        ({"from": 1, "to": 3}, states[3][name] - states[1][name]),
    ]:
        v = independent_view(full)
        if window and (v.shape[0] < 6 or v.shape[1] < 9):
            continue
        r0, c0, r1, c1 = map(int, window.split(",")) if window else (0, 0, *v.shape)
        w = v[r0:r1, c0:c1]
        got = heatmap(store, name=name, rows=rows, cols=cols, window=window, **q)
        expected = independent_pool(w, rows, cols)
        assert (got["rows"], got["cols"]) == expected.shape
        np.testing.assert_array_equal(got["values"].reshape(expected.shape), expected)
        finite = w[~np.isnan(w)]
        assert got["min"] == float(finite.min()) and got["max"] == float(finite.max())
        assert got["scale"] == float(np.abs(finite).max())
        assert got["window"] == [r0, c0, r1, c1] and got["view"]["rows"] == v.shape[0]


def test_an_isolated_change_survives_pooling_and_stats_come_along(run) -> None:
    store, _ = run
    got = heatmap(store, name="fc.weight", **{"from": 0, "to": 3}, rows=3, cols=3)
    cell = got["values"].reshape(3, 3)[0, 0]  # element (5, 7) lies in block rows 0..11, cols 0..32
    assert cell > 2.9
    assert got["means"].reshape(3, 3)[0, 0] < 0.1  # the mean would hide it
    assert got["stats"]["count"] == 37 * 101 and got["mode"] == "diff"


def test_npy_answer_and_windows_of_a_cached_diff_read_by_range(run) -> None:
    store, states = run
    req = HeatmapRequest.model_validate(
        {"run_id": "r1", "name": "fc.weight", "from": 0, "to": 3, "rows": 5, "cols": 7}
    )
    ans = heatmap_answer(ensure(HEATMAP, Context(store, Settings()), req), req)
    assert ans.npy is not None and ans.npy.shape == (2, 5, 7)
    meta = json.loads(ans.headers["X-Netlapse-Meta"])
    assert meta["rows"] == 5 and meta["scale"] == ans.content["scale"] and "values" not in meta
    # The diff is cached now: a window of it is answered from a range read of its rows.
    d = states[3]["fc.weight"] - states[0]["fc.weight"]
    got = heatmap(store, name="fc.weight", **{"from": 0, "to": 3}, rows=2, cols=2, window="30,90,37,101")
    np.testing.assert_array_equal(got["values"].reshape(2, 2), independent_pool(d[30:37, 90:101], 2, 2))
    store.put("x/a.npy", npy_bytes(d))
    np.testing.assert_array_equal(npy_rows(store, "x/a.npy", 3, 9), d[3:9])


def test_requests_that_cannot_be_answered_say_why(run) -> None:
    store, _ = run
    with pytest.raises(AnalysisFailure, match="either step"):
        heatmap(store, name="fc.weight", step=1, **{"from": 0, "to": 1})
    with pytest.raises(AnalysisFailure, match="either step"):
        heatmap(store, name="fc.weight")
    with pytest.raises(AnalysisFailure, match="outside this tensor's 37 x 101 view"):
        heatmap(store, name="fc.weight", step=1, window="0,0,38,10")
    with pytest.raises(AnalysisFailure, match="must not be greater"):
        heatmap(store, name="fc.weight", **{"from": 3, "to": 1})
    with pytest.raises(AnalysisFailure, match="step=9 was not captured"):
        heatmap(store, name="fc.weight", step=9)
    with pytest.raises(AnalysisFailure, match="unknown tensor"):
        heatmap(store, name="nope", step=1)
    with pytest.raises(ValueError, match="less than or equal to 2048"):
        HeatmapRequest.model_validate({"run_id": "r1", "name": "fc.weight", "step": 1, "rows": 2049})


@pytest.mark.parametrize("whole", [True, False])
def test_exact_windows_are_the_tapes_bits(run, monkeypatch: pytest.MonkeyPatch, whole: bool) -> None:
    from netlapse.core import tensorview
    from netlapse.core.results import open_tape

    store, states = run
    if not whole:  # the path very large tensors take: element trajectories instead of whole reads
        monkeypatch.setattr(tensorview, "WHOLE_READ_LIMIT", 0)
    tape = open_tape(store, "r1")
    for name in SHAPES:
        v = independent_view(states[0][name])
        for win in [(0, 0, *v.shape), (v.shape[0] - 1, v.shape[1] - 3, *v.shape), (0, 1, 2, 4)]:
            vals, idx = tensorview.read_window(tape, name, [1, 3], win)
            r0, c0, r1, c1 = win
            for k, s in enumerate([1, 3]):
                expected = independent_view(states[s][name])[r0:r1, c0:c1]
                np.testing.assert_array_equal(vals[k], expected)
            flat = np.arange(states[0][name].size, dtype=np.float64).reshape(states[0][name].shape)
            assert np.array_equal(
                np.where(idx >= 0, idx, np.nan), independent_view(flat)[r0:r1, c0:c1], equal_nan=True
            )
