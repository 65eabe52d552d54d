"""Heatmap tiles, exact windows and the run overview through the HTTP API with real workers, checked against an
independent computation from the full tensors fetched as .npy."""

from __future__ import annotations

import io
import json
from typing import Any

import httpx
import numpy as np
import pytest

from tests.integration.helpers import create_run, get_npy, wait_terminal

# conv1 [12, 1, 3, 3]: 12 filters, 8 tiles per row, so the view has gaps; fc1 [37, 2028]: odd sizes, and more
# elements than one exact window may hold.
SPEC = {
    "input_shape": [1, 28, 28],
    "num_classes": 10,
    "layers": [
        {"type": "conv2d", "name": "conv1", "out_channels": 12, "kernel_size": 3, "activation": "relu"},
        {"type": "maxpool2d", "kernel_size": 2},
        {"type": "flatten"},
        {"type": "linear", "name": "fc1", "out_features": 37, "activation": "relu"},
        {"type": "linear", "name": "fc2", "out_features": 10},
    ],
}


def view(a: np.ndarray) -> np.ndarray:
    """The explorer's 2-D view, written out for the shapes of this test (NaN = gap)."""
    if a.ndim == 4:
        o, _, kh, kw = a.shape  # one in-channel; 8 tiles per row
        out = np.full((-(-o // 8) * kh, 8 * kw), np.nan, dtype=a.dtype)
        for f in range(o):
            out[(f // 8) * kh : (f // 8 + 1) * kh, (f % 8) * kw : (f % 8 + 1) * kw] = a[f, 0]
        return out
    if a.ndim == 1:
        out = np.full((-(-a.size // 32), min(a.size, 32)), np.nan, dtype=a.dtype)
        out.reshape(-1)[: a.size] = a
        return out
    return a


def pool(w: np.ndarray, rows: int, cols: int) -> np.ndarray:
    """Per block: the value of largest |value| (the positive one on a tie), NaN ignored."""
    h, wd = w.shape
    rows, cols = min(rows, h), min(cols, wd)
    out = np.full((rows, cols), np.nan, dtype=w.dtype)
    for i in range(rows):
        for j in range(cols):
            blk = w[i * h // rows : (i + 1) * h // rows, j * wd // cols : (j + 1) * wd // cols].ravel()
            blk = blk[~np.isnan(blk)]
            if blk.size:
                out[i, j] = blk[np.abs(blk) == np.abs(blk).max()].max()
    return out


@pytest.fixture(scope="module")
def run(api: httpx.Client) -> dict[str, Any]:
    training = {
        "epochs": 1,
        "batch_size": 64,
        "optimizer": "adam",
        "lr": 0.01,
        "seed": 0,
        "max_train_samples": 320,
    }
    r = create_run(api, name="heatmap", model=SPEC, training=training)
    done = wait_terminal(api, r["id"])
    assert done["status"] == "succeeded", done
    steps = api.get(f"/api/runs/{r['id']}/steps").json()["steps"]
    return {"id": r["id"], "last": steps[-1]}


def tiles(api: httpx.Client, rid: str, name: str, npy: bool = False, **q: Any) -> tuple[np.ndarray, dict]:
    r = api.get(
        f"/api/runs/{rid}/heatmap/{name}", params=q, headers={"Accept": "application/x-npy"} if npy else {}
    )
    assert r.status_code == 200, r.text
    if npy:
        return np.load(io.BytesIO(r.content), allow_pickle=False), json.loads(r.headers["X-Netlapse-Meta"])
    body = r.json()
    # JSON carries each float32 as its shortest round-trip decimal: back to float32 it is the same bits.
    vals = np.array([np.nan if v is None else v for v in body["values"]], dtype=np.float64).astype(
        body["dtype"]
    )
    return vals.reshape(body["rows"], body["cols"]), body


@pytest.mark.parametrize("name", ["fc1.weight", "conv1.weight", "fc1.bias"])
def test_tiles_equal_an_independent_pooling_of_the_full_tensor(
    api: httpx.Client, run: dict, name: str
) -> None:
    rid, last = run["id"], run["last"]
    full = {
        "values": get_npy(api, f"/api/runs/{rid}/tensors/{name}", step=1),
        "diff": get_npy(api, f"/api/runs/{rid}/diff/{name}", **{"from": 0, "to": last}),
    }
    for mode, q in [("values", {"step": 1}), ("diff", {"from": 0, "to": last})]:
        v = view(full[mode])
        h, w = v.shape
        windows = [None, f"{h - 1},{w - 1},{h},{w}", f"0,{w // 3},{h},{w}", f"{h // 2},0,{h},{min(w, 7)}"]
        for window in windows:
            for rows, cols in [(7, 13), (2048, 2048), (1, 1), (5, 2)]:
                r0, c0, r1, c1 = map(int, window.split(",")) if window else (0, 0, h, w)
                expected = pool(v[r0:r1, c0:c1], rows, cols)
                got, meta = tiles(api, rid, name, rows=rows, cols=cols, window=window, **q)
                np.testing.assert_array_equal(
                    got, expected.astype(np.float64), err_msg=f"{mode} {window} {rows}x{cols}"
                )
                assert meta["window"] == [r0, c0, r1, c1] and meta["mode"] == mode
                finite = v[r0:r1, c0:c1][~np.isnan(v[r0:r1, c0:c1])]
                if finite.size:
                    assert meta["scale"] == float(np.abs(finite).max())
                    assert (meta["min"], meta["max"]) == (float(finite.min()), float(finite.max()))
        # The .npy form carries the same cells (and the block means) and the metadata in a header.
        arr, meta = tiles(api, rid, name, npy=True, rows=3, cols=4, **q)
        assert arr.dtype == np.float32 and arr.shape[0] == 2 and meta["rows"] == arr.shape[1]
        np.testing.assert_array_equal(arr[0], pool(v, 3, 4))
        vals_only, _ = tiles(api, rid, name, npy=True, rows=3, cols=4, mean="false", **q)
        np.testing.assert_array_equal(vals_only, arr[0])


def test_bad_tile_requests_say_what_to_fix(api: httpx.Client, run: dict) -> None:
    rid = run["id"]
    url = f"/api/runs/{rid}/heatmap/fc1.weight"
    r = api.get(url, params={"step": 0, "rows": 2049, "cols": 10})
    assert r.status_code == 422 and "2048" in r.text
    r = api.get(url, params={"step": 0, "rows": 10, "cols": 4096})
    assert r.status_code == 422 and "2048" in r.text
    r = api.get(url, params={"step": 0, "window": "0,0,38,5"})
    assert r.status_code == 422 and "outside this tensor's 37 x 2028 view" in r.text
    r = api.get(url, params={"step": 0, "from": 0, "to": 1})
    assert r.status_code == 422 and "either step" in r.text
    assert api.get(url, params={"step": 99999}).status_code == 404
    assert api.get(f"/api/runs/{rid}/heatmap/nope.weight", params={"step": 0}).status_code == 404


def test_exact_windows_are_the_tensor_and_the_diff(api: httpx.Client, run: dict) -> None:
    rid, last = run["id"], run["last"]
    for name in ["fc1.weight", "conv1.weight"]:
        a = get_npy(api, f"/api/runs/{rid}/tensors/{name}", step=0)
        b = get_npy(api, f"/api/runs/{rid}/tensors/{name}", step=last)
        d = get_npy(api, f"/api/runs/{rid}/diff/{name}", **{"from": 0, "to": last})
        h, w = view(a).shape
        for r0, c0, r1, c1 in [(0, 0, 2, 3), (h - 2, w - 5, h, w), (1, 1, h, 4)]:
            win = f"{r0},{c0},{r1},{c1}"
            j = api.get(f"/api/runs/{rid}/tensors/{name}", params={"step": last, "window": win}).json()
            got = np.array([np.nan if x is None else x for x in j["values"]]).astype(np.float32)
            np.testing.assert_array_equal(got.reshape(r1 - r0, c1 - c0), view(b)[r0:r1, c0:c1])
            flat = np.arange(a.size, dtype=np.float64).reshape(a.shape)
            idx = np.array(j["indices"], dtype=np.float64).reshape(r1 - r0, c1 - c0)
            np.testing.assert_array_equal(np.where(idx >= 0, idx, np.nan), view(flat)[r0:r1, c0:c1])
            r = api.get(
                f"/api/runs/{rid}/tensors/{name}",
                params={"from": 0, "to": last, "window": win},
                headers={"Accept": "application/x-npy"},
            )
            three = np.load(io.BytesIO(r.content), allow_pickle=False)
            for k, full in enumerate([a, b, d]):
                np.testing.assert_array_equal(three[k], view(full)[r0:r1, c0:c1])
    r = api.get(f"/api/runs/{rid}/tensors/fc1.weight", params={"step": 0, "window": "0,0,37,2028"})
    assert r.status_code == 422 and "at most 65536" in r.text
    r = api.get(f"/api/runs/{rid}/tensors/fc1.weight", params={"from": 0, "window": "0,0,1,1"})
    assert r.status_code == 422 and "give step" in r.text


def test_overview_changes_equal_numpy(api: httpx.Client, run: dict) -> None:
    rid, last = run["id"], run["last"]
    r = api.get(f"/api/runs/{rid}/changes", params={"from": 0, "to": last})
    assert r.status_code == 200, r.text
    body = r.json()
    names = [t["name"] for t in api.get(f"/api/runs/{rid}/tensors").json()["tensors"]]
    assert [t["name"] for t in body["tensors"]] == names
    for t in body["tensors"]:
        a = get_npy(api, f"/api/runs/{rid}/tensors/{t['name']}", step=0)
        b = get_npy(api, f"/api/runs/{rid}/tensors/{t['name']}", step=last)
        d = (b - a).astype(np.float64)  # the difference as /diff gives it (in the tensor's dtype)
        assert t["numel"] == a.size and t["shape"] == list(a.shape)
        assert t["l2"] == pytest.approx(np.linalg.norm(d), rel=1e-12)
        assert t["max_abs"] == np.abs(d).max()
        assert t["rel"] == pytest.approx(np.linalg.norm(d) / np.linalg.norm(a.astype(np.float64)), rel=1e-12)
        assert t["changed_fraction"] == np.count_nonzero(b != a) / a.size
    assert body["parameters"] == sum(t["numel"] for t in body["tensors"])
    assert api.get(f"/api/runs/{rid}/changes", params={"from": last, "to": 0}).status_code == 422
