"""``GET /runs/{id}/diff/{name}?from&to&window=r0,c0,r1,c1``: the exact values of a window of the difference, read
from the tape in the api (no worker is running here), equal to the same cells of the whole diff fetched as .npy;
bad windows answer the same 422 as the tensors route's window."""

from __future__ import annotations

import io
from collections.abc import Iterator

import numpy as np
import pytest
from fastapi.testclient import TestClient

from netlapse.analyzer.analyses import DIFF, DiffRequest
from netlapse.analyzer.registry import Context, ensure
from netlapse.api.main import create_app
from netlapse.core.runs import RunRepository
from netlapse.core.schemas import tape_prefix
from netlapse.core.settings import Settings, get_settings
from netlapse.core.store import LocalStore
from netlapse.core.tape import TapeWriter, TensorInfo
from netlapse.core.tensorview import MAX_WINDOW_ELEMENTS, WHOLE_READ_LIMIT
from tests.unit.test_auth import _run
from tests.unit.test_heatmap import independent_view as view

RUN = "diffwin001"
# The shapes of test_heatmap.py (its independent view): fc.weight odd sizes; conv.weight filter tiles with gaps
# (10 filters, 8 per row); fc.bias a 1-D tensor wrapped into rows of 32 (a gap at the end). big.weight: more
# cells than one exact window may hold; wide.weight: more than WHOLE_READ_LIMIT elements, so a window is read
# as trajectories of its elements, not by decoding the whole tensor.
SHAPES = {
    "fc.weight": (37, 101),
    "conv.weight": (10, 3, 3, 3),
    "fc.bias": (45,),
    "big.weight": (301, 257),
    "wide.weight": (1031, 4099),
}
STEPS = [0, 1, 2, 3]
NPY = {"Accept": "application/x-npy"}


@pytest.fixture(scope="module")
def served(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[TestClient, list[dict[str, np.ndarray]]]]:
    tmp = tmp_path_factory.mktemp("diffwin")
    store = LocalStore(tmp / "store")
    assert np.prod(SHAPES["wide.weight"]) > WHOLE_READ_LIMIT
    writer = TapeWriter(store, tape_prefix(RUN), [TensorInfo(n, s, "float32") for n, s in SHAPES.items()])
    rng = np.random.default_rng(7)
    cur = {n: rng.standard_normal(s).astype(np.float32) for n, s in SHAPES.items()}
    states = []
    for step in STEPS:
        if step:
            for n, v in cur.items():
                moved = rng.random(v.shape) < 0.7  # some elements unchanged: exact zeros in the difference
                cur[n] = np.where(moved, v + rng.standard_normal(v.shape).astype(np.float32) * 1e-3, v)
        states.append({n: v.copy() for n, v in cur.items()})
        writer.append(step, cur)
    writer.close()
    RunRepository(store).save(_run(RUN, "local"))
    # The whole diffs as the analyzer would have cached them (no worker runs here): /diff answers them from the
    # store, so the windows below are compared with what the route itself gives for the whole tensor.
    for name in SHAPES:
        for a, b in [(0, 3), (1, 2), (2, 2)]:
            ensure(
                DIFF, Context(store, Settings()), DiffRequest(run_id=RUN, name=name, from_step=a, to_step=b)
            )
    mp = pytest.MonkeyPatch()
    mp.setenv("NETLAPSE_DATA_DIR", str(tmp))
    mp.setenv("NETLAPSE_AUTH_REQUIRED", "0")
    mp.setenv("NETLAPSE_FRONTEND_DIR", str(tmp / "no-ui"))
    get_settings.cache_clear()
    try:
        yield TestClient(create_app(), base_url="http://127.0.0.1"), states
    finally:
        mp.undo()
        get_settings.cache_clear()


def whole_diff(c: TestClient, name: str, a: int, b: int) -> np.ndarray:
    r = c.get(f"/api/runs/{RUN}/diff/{name}", params={"from": a, "to": b}, headers=NPY)
    assert r.status_code == 200, r.text
    return np.load(io.BytesIO(r.content), allow_pickle=False)


def windows(h: int, w: int) -> list[tuple[int, int, int, int]]:
    """Corners, edges, single cells, odd sizes and the whole view when it is small enough."""
    out = [
        (0, 0, 1, 1),
        (h - 1, w - 1, h, w),
        (0, 0, min(h, 3), min(w, 5)),
        (h - min(h, 2), w - min(w, 7), h, w),
        (h // 2, 0, h, min(w, 3)),
        (0, w // 3, 1, w),
        (1 % h, 1 % w, h, min(w, 13)),
    ]
    if h * w <= MAX_WINDOW_ELEMENTS:
        out.append((0, 0, h, w))
    return [
        (r0, c0, r1, c1) for r0, c0, r1, c1 in out if r0 < r1 and c0 < c1 and (r1 - r0) * (c1 - c0) <= 65536
    ]


@pytest.mark.parametrize("name", list(SHAPES))
def test_diff_windows_equal_the_whole_diff(served, name: str) -> None:
    c, states = served
    for a, b in [(0, 3), (1, 2), (2, 2)]:
        full = whole_diff(c, name, a, b)
        np.testing.assert_array_equal(full, states[b][name] - states[a][name])  # the route's own whole diff
        v = view(full)
        h, w = v.shape
        flat = view(np.arange(full.size, dtype=np.float64).reshape(full.shape))
        for r0, c0, r1, c1 in windows(h, w):
            q = {"from": a, "to": b, "window": f"{r0},{c0},{r1},{c1}"}
            r = c.get(f"/api/runs/{RUN}/diff/{name}", params=q, headers=NPY)
            assert r.status_code == 200, (q, r.text)
            assert r.headers["X-Netlapse-Window"] == f"{r0},{c0},{r1},{c1}"
            got = np.load(io.BytesIO(r.content), allow_pickle=False)
            assert got.dtype == np.float32 and got.shape == (r1 - r0, c1 - c0)
            np.testing.assert_array_equal(got, v[r0:r1, c0:c1])  # bit for bit, NaN at the gaps
            j = c.get(f"/api/runs/{RUN}/diff/{name}", params=q).json()
            assert j["window"] == [r0, c0, r1, c1] and j["shape"] == [r1 - r0, c1 - c0]
            assert (j["from"], j["to"], j["dtype"], j["view"]["rows"], j["view"]["cols"]) == (
                a,
                b,
                "float32",
                h,
                w,
            )
            idx = np.array(j["indices"], dtype=np.float64).reshape(r1 - r0, c1 - c0)
            np.testing.assert_array_equal(np.where(idx >= 0, idx, np.nan), flat[r0:r1, c0:c1])
            for key, full_at in [
                ("data", full),
                ("from_values", states[a][name]),
                ("to_values", states[b][name]),
            ]:
                vals = np.array([np.nan if x is None else x for x in j[key]], dtype=np.float64)
                want = view(full_at)[r0:r1, c0:c1].astype(np.float64).reshape(-1)
                np.testing.assert_array_equal(vals.astype(np.float32), want.astype(np.float32))
            if a == b:
                assert all(x == 0 or x is None for x in j["data"])


def test_a_window_needs_no_worker_and_no_cached_diff(served) -> None:
    """(0, 1) was never computed: the whole diff would need the analyzer; its window is read from the tape."""
    c, states = served
    d = states[1]["wide.weight"] - states[0]["wide.weight"]
    r = c.get(
        f"/api/runs/{RUN}/diff/wide.weight",
        params={"from": 0, "to": 1, "window": "1030,4000,1031,4099"},
        headers=NPY,
    )
    assert r.status_code == 200, r.text
    np.testing.assert_array_equal(np.load(io.BytesIO(r.content), allow_pickle=False), d[1030:1031, 4000:4099])


@pytest.mark.parametrize(
    ("window", "message"),
    [
        (
            "0,0,38,5",
            "is outside this tensor's 37 x 101 view: need 0 <= r0 < r1 <= 37 and 0 <= c0 < c1 <= 101",
        ),
        ("0,0,1,102", "outside this tensor's 37 x 101 view"),
        ("3,3,3,9", "outside this tensor's 37 x 101 view"),
        ("5,0,2,4", "outside this tensor's 37 x 101 view"),
        ("-1,0,2,4", "outside this tensor's 37 x 101 view"),
        ("0,0,2", "window must be four integers r0,c0,r1,c1 (got 3)"),
        ("0,0,2,x", "window must be four integers r0,c0,r1,c1 (got '0,0,2,x')"),
    ],
)
def test_bad_windows_are_422_naming_the_field(served, window: str, message: str) -> None:
    c, _ = served
    for route, q in [
        ("diff", {"from": 0, "to": 3}),
        ("tensors", {"from": 0, "to": 3}),
        ("tensors", {"step": 1}),
    ]:
        r = c.get(f"/api/runs/{RUN}/{route}/fc.weight", params={**q, "window": window})
        assert r.status_code == 422, (route, r.text)
        (err,) = r.json()["detail"]
        assert err["loc"] == ["query", "window"] and message in err["msg"], (route, err)
        assert err["ctx"] == {"rows": 37, "cols": 101}


def test_a_window_too_large_to_send_exactly_is_422(served) -> None:
    c, _ = served
    for route in ("diff", "tensors"):
        r = c.get(f"/api/runs/{RUN}/{route}/big.weight", params={"from": 0, "to": 3, "window": "0,0,256,257"})
        assert r.status_code == 422, r.text
        (err,) = r.json()["detail"]
        assert err["loc"] == ["query", "window"] and err["ctx"] == {"max": MAX_WINDOW_ELEMENTS}
        assert "window 0,0,256,257 has 65792 cells; at most 65536 are sent exactly" in err["msg"]
        assert "/heatmap" in err["msg"]
    ok = c.get(f"/api/runs/{RUN}/diff/big.weight", params={"from": 0, "to": 3, "window": "0,0,255,257"})
    assert ok.status_code == 200 and len(ok.json()["data"]) == 255 * 257


def test_steps_and_tensor_are_checked_before_the_window(served) -> None:
    c, _ = served
    base = f"/api/runs/{RUN}/diff"
    r = c.get(f"{base}/fc.weight", params={"from": 3, "to": 1, "window": "0,0,1,1"})
    assert r.status_code == 422 and "must not be greater than to" in r.text
    r = c.get(f"{base}/fc.weight", params={"from": 0, "to": 9, "window": "0,0,1,1"})
    assert r.status_code == 404 and "to=9 was not captured" in r.text
    r = c.get(f"{base}/nope.weight", params={"from": 0, "to": 1, "window": "0,0,1,1"})
    assert r.status_code == 404 and "unknown tensor 'nope.weight'" in r.text
    r = c.get(f"{base}/fc.weight", params={"from": 0, "window": "0,0,1,1"})
    assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["query", "to"]
