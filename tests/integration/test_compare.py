"""Comparing runs through the HTTP API with real workers: the cross-run diff is tensor(b) − tensor(a) bit for bit,
metrics of several runs line up by step and epoch, activations and scatter of two runs come side by side."""

from __future__ import annotations

from typing import Any

import httpx
import numpy as np
import pytest

from tests.integration.helpers import create_run, get_npy, wait_terminal

pytestmark = pytest.mark.integration


def _run(api: httpx.Client, name: str, **training: Any) -> dict[str, Any]:
    t = {
        "epochs": 1,
        "batch_size": 128,
        "optimizer": "sgd",
        "lr": 0.05,
        "momentum": 0.9,
        "seed": 0,
        **training,
    }
    run = wait_terminal(api, create_run(api, name=name, training=t)["id"])
    assert run["status"] == "succeeded", run["error"]
    return run


@pytest.fixture(scope="module")
def pair(api: httpx.Client) -> tuple[dict[str, Any], dict[str, Any]]:
    """Two tiny-cnn runs from the same seed (so the same step 0), lr 0.05 vs 0.2: steps 0..8 each."""
    return _run(api, "cmp-a", lr=0.05), _run(api, "cmp-b", lr=0.2, epochs=2)


def _detail(r: httpx.Response) -> str:
    return str(r.json()["detail"])


def test_cross_run_diff_is_b_minus_a_bit_for_bit(api: httpx.Client, pair: tuple[dict, dict]) -> None:
    a, b = pair[0]["id"], pair[1]["id"]
    for name, sa, sb in (("conv2.weight", 8, 8), ("fc1.weight", 3, 16), ("conv1.bias", 8, 0)):
        params = {"a": f"{a}:{sa}", "b": f"{b}:{sb}"}
        ta = get_npy(api, f"/api/runs/{a}/tensors/{name}", step=sa)
        tb = get_npy(api, f"/api/runs/{b}/tensors/{name}", step=sb)
        want = tb - ta
        got = get_npy(api, f"/api/compare/diff/{name}", **params)
        assert got.dtype == want.dtype and got.shape == want.shape
        assert np.array_equal(got.view(np.uint32), want.view(np.uint32)), name
        j = api.get(f"/api/compare/diff/{name}", params=params).json()
        assert (
            j["a"] == {"run": a, "step": sa}
            and j["b"] == {"run": b, "step": sb}
            and j["shape"] == list(want.shape)
        )
        data = np.asarray(j["data"], np.float32).reshape(j["shape"])
        assert np.array_equal(data.view(np.uint32), want.view(np.uint32))
        d64 = want.astype(np.float64)
        s = j["stats"]
        assert (s["increased"], s["decreased"], s["unchanged"], s["count"]) == (
            int((want > 0).sum()),
            int((want < 0).sum()),
            int((want == 0).sum()),
            want.size,
        )
        assert s["min"] == float(d64.min()) and s["max"] == float(d64.max())
        assert s["l2"] == pytest.approx(float(np.sqrt((d64 * d64).sum())), rel=1e-12)
        assert s["mean_abs"] == pytest.approx(float(np.abs(d64).mean()), rel=1e-12)
        # The same stats as the single-run diff (keys and per-filter L2 for conv weights).
        single = api.get(f"/api/runs/{a}/diff/{name}", params={"from": 0, "to": sa}).json()["stats"]
        assert set(s) == set(single)
        if want.ndim == 4:
            np.testing.assert_allclose(
                s["per_filter_l2"], np.sqrt((d64.reshape(want.shape[0], -1) ** 2).sum(1)), rtol=1e-12
            )
    # Same seed: the two runs start from the same weights, so step 0 differs nowhere.
    z = api.get("/api/compare/diff/conv1.weight", params={"a": f"{a}:0", "b": f"{b}:0"}).json()
    assert z["stats"]["unchanged"] == z["stats"]["count"] == 36 and z["cached"] is False
    again = api.get("/api/compare/diff/conv1.weight", params={"a": f"{a}:0", "b": f"{b}:0"}).json()
    assert again["cached"] is True and again["data"] == z["data"]


def test_cross_run_diff_rejects_what_it_cannot_answer(api: httpx.Client, pair: tuple[dict, dict]) -> None:
    a, b = pair[0]["id"], pair[1]["id"]
    mlp = wait_terminal(
        api,
        create_run(api, name="cmp-mlp", model={"preset": "mlp"}, training={"epochs": 1, "batch_size": 512})[
            "id"
        ],
    )
    r = api.get("/api/compare/diff/fc1.weight", params={"a": f"{a}:1", "b": f"{mlp['id']}:0"})
    assert r.status_code == 422 and "[10, 200]" in _detail(r) and "[128, 784]" in _detail(r), r.text
    cases = [
        ({"a": f"{a}:99", "b": f"{b}:1"}, "conv1.weight", 404, ["a=99 was not captured", "0..8"]),
        ({"a": f"{a}:1", "b": f"{b}:17"}, "conv1.weight", 404, ["b=17 was not captured", "0..16"]),
        ({"a": f"{a}:1", "b": "nosuchrun1:1"}, "conv1.weight", 404, ["nosuchrun1"]),
        ({"a": f"{a}:1", "b": f"{b}:1"}, "nope.weight", 404, ["conv1.weight"]),
        ({"a": f"{a}", "b": f"{b}:1"}, "conv1.weight", 422, ["RUN:STEP"]),
        ({"a": f"{a}:1"}, "conv1.weight", 422, ["b", "Field required"]),
    ]
    for params, name, status, words in cases:
        r = api.get(f"/api/compare/diff/{name}", params=params)
        assert r.status_code == status, (params, r.text)
        for w in words:
            assert w in _detail(r), (w, r.text)


def test_metrics_overlay_aligns_runs_by_step_and_epoch(api: httpx.Client, pair: tuple[dict, dict]) -> None:
    a, b = pair[0]["id"], pair[1]["id"]
    j = api.get("/api/compare/metrics", params={"runs": f"{a},{b}"}).json()
    assert [r["id"] for r in j["runs"]] == [a, b] and [r["lr"] for r in j["runs"]] == [0.05, 0.2]
    ma, mb = (api.get(f"/api/runs/{rid}/metrics").json() for rid in (a, b))
    steps = sorted({r["step"] for r in ma["steps"]} | {r["step"] for r in mb["steps"]})
    assert j["steps"] == steps and len(j["loss"]) == 2
    for i, m in enumerate((ma, mb)):
        by_step = {r["step"]: r["loss"] for r in m["steps"]}
        assert j["loss"][i] == [by_step.get(s) for s in steps]
        by_epoch = {r["epoch"]: r["val_accuracy"] for r in m["epochs"]}
        assert j["val_accuracy"][i] == [by_epoch.get(e) for e in j["epochs"]]
        for k, e in enumerate(j["epochs"]):
            losses = [r["loss"] for r in m["steps"] if r["epoch"] == e]
            assert j["epoch_loss"][i][k] == (pytest.approx(float(np.mean(losses))) if losses else None)
    assert j["loss"][0][-1] is None  # run a has 8 steps, run b 16: a has no value at b's last steps
    too_many = ",".join([a] * 9)
    r = api.get("/api/compare/metrics", params={"runs": too_many})
    assert r.status_code == 422 and "between 1 and 8" in _detail(r)
    assert api.get("/api/compare/metrics", params={"runs": f"{a},nosuchrun1"}).status_code == 404


def test_activations_of_two_runs_and_their_difference(api: httpx.Client, pair: tuple[dict, dict]) -> None:
    a, b = pair[0]["id"], pair[1]["id"]
    body = {"a": f"{a}:8", "b": f"{b}:16", "layer": "conv2", "per_label": 3}
    r = api.post("/api/compare/activations", json=body)
    assert r.status_code == 200, r.text
    j = r.json()
    ra = api.post(f"/api/runs/{a}/activations", json={"step": 8, "layer": "conv2", "per_label": 3}).json()
    rb = api.post(f"/api/runs/{b}/activations", json={"step": 16, "layer": "conv2", "per_label": 3}).json()
    assert ra["cached"] is True and rb["cached"] is True  # computed by the comparison
    assert j["a"]["activation"] == ra["activation"] and j["b"]["activation"] == rb["activation"]
    want = np.array(rb["activation"], np.float64) - np.array(ra["activation"], np.float64)
    np.testing.assert_array_equal(np.array(j["difference"], np.float64), want)
    bad = api.post("/api/compare/activations", json={**body, "layer": "fc1"})
    assert bad.status_code == 422 and "conv1, conv2" in _detail(bad)
    bad = api.post("/api/compare/activations", json={**body, "b": f"{b}:99"})
    assert bad.status_code == 422 and "step 99 was not captured" in _detail(bad)


def test_scatter_of_two_runs_side_by_side(api: httpx.Client, pair: tuple[dict, dict]) -> None:
    a, b = pair[0]["id"], pair[1]["id"]
    j = api.get("/api/compare/scatter/conv2.weight", params={"a": f"{a}:8", "b": f"{b}:16", "bins": 8}).json()
    for side, rid, step in (("a", a, 8), ("b", b, 16)):
        s = j[side]
        x0 = get_npy(api, f"/api/runs/{rid}/tensors/conv2.weight", step=0).reshape(-1)
        d = get_npy(api, f"/api/runs/{rid}/tensors/conv2.weight", step=step).reshape(-1) - x0
        assert (s["from"], s["to"], s["n"]) == (0, step, 288)
        assert np.array_equal(np.asarray(s["x"], np.float32), x0) and np.array_equal(
            np.asarray(s["y"], np.float32), d
        )
        assert s["pearson_r"] == pytest.approx(np.corrcoef(x0.astype(np.float64), d.astype(np.float64))[0, 1])
    assert j["side_by_side"]["pearson_r"] == [j["a"]["pearson_r"], j["b"]["pearson_r"]]
    assert j["side_by_side"]["pos_increased_fraction"] == [
        j["a"]["pos_increased_fraction"],
        j["b"]["pos_increased_fraction"],
    ]
