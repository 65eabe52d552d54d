"""The method's analyses through the HTTP API with real workers.

The Eq. 1 check is independent of the analyzer: it fetches the tensors and the input samples over HTTP,
rebuilds the forward pass in plain ``torch.nn.functional`` from those tensors alone, computes Eq. 1 itself
and compares.
"""

from __future__ import annotations

import io
import math
from collections.abc import Callable
from typing import Any

import httpx
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from tests.conftest import requires_mnist
from tests.integration.helpers import create_run, get_npy, wait_terminal, ws_events

Forward = Callable[[dict[str, torch.Tensor], torch.Tensor], tuple[torch.Tensor, dict[str, torch.Tensor]]]


def tiny_forward(w: dict[str, torch.Tensor], x: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """tiny-cnn: conv1 3x3 relu, maxpool 2, conv2 3x3 relu, maxpool 2, flatten, fc1. Returns logits and the
    conv outputs before ("conv1.pre") and after ("conv1") the activation."""
    pre1 = F.conv2d(x, w["conv1.weight"], w["conv1.bias"])
    h1 = F.relu(pre1)
    pre2 = F.conv2d(F.max_pool2d(h1, 2), w["conv2.weight"], w["conv2.bias"])
    h2 = F.relu(pre2)
    logits = F.linear(torch.flatten(F.max_pool2d(h2, 2), 1), w["fc1.weight"], w["fc1.bias"])
    return logits, {"conv1": h1, "conv1.pre": pre1, "conv2": h2, "conv2.pre": pre2}


def paper_forward(
    w: dict[str, torch.Tensor], x: torch.Tensor
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """paper-cnn in eval mode (dropout is the identity): conv1 relu, conv2 relu, maxpool 2, fc1 relu, fc2."""
    pre1 = F.conv2d(x, w["conv1.weight"], w["conv1.bias"])
    h1 = F.relu(pre1)
    pre2 = F.conv2d(h1, w["conv2.weight"], w["conv2.bias"])
    h2 = F.relu(pre2)
    h = torch.flatten(F.max_pool2d(h2, 2), 1)
    h = F.relu(F.linear(h, w["fc1.weight"], w["fc1.bias"]))
    logits = F.linear(h, w["fc2.weight"], w["fc2.bias"])
    return logits, {"conv1": h1, "conv1.pre": pre1, "conv2": h2, "conv2.pre": pre2}


def fetch_weights(api: httpx.Client, rid: str, step: int) -> dict[str, torch.Tensor]:
    names = [t["name"] for t in api.get(f"/api/runs/{rid}/tensors").json()["tensors"]]
    return {n: torch.from_numpy(get_npy(api, f"/api/runs/{rid}/tensors/{n}", step=step)) for n in names}


def fetch_samples(
    api: httpx.Client, dataset: str, split: str, indices: list[int]
) -> tuple[torch.Tensor, torch.Tensor]:
    """Inputs exactly as fed to the model, as .npy in chunks of the endpoint's 1000-index limit; the JSON form
    of the first chunk must carry the same float32 values."""
    xs, ys = [], []
    for i in range(0, len(indices), 1000):
        chunk = ",".join(map(str, indices[i : i + 1000]))
        r = api.get(
            f"/api/datasets/{dataset}/samples",
            params={"split": split, "indices": chunk},
            headers={"Accept": "application/x-npy"},
        )
        assert r.status_code == 200, r.text
        xs.append(np.load(io.BytesIO(r.content), allow_pickle=False))
        ys.append(np.asarray([int(v) for v in r.headers["X-Netlapse-Labels"].split(",")], dtype=np.int64))
    x, y = np.concatenate(xs), np.concatenate(ys)
    assert x.dtype == np.float32 and len(x) == len(indices)
    head = indices[:64]
    j = api.get(
        f"/api/datasets/{dataset}/samples", params={"split": split, "indices": ",".join(map(str, head))}
    ).json()
    assert (
        j["indices"] == head and j["labels"] == y[: len(head)].tolist() and j["inputs"]["dtype"] == "float32"
    )
    assert np.array_equal(
        np.asarray(j["inputs"]["data"], dtype=np.float32).reshape(j["inputs"]["shape"]), x[: len(head)]
    )
    return torch.from_numpy(x), torch.from_numpy(y)


def post_activations(api: httpx.Client, rid: str, **body: Any) -> dict[str, Any]:
    r = api.post(f"/api/runs/{rid}/activations", json=body)
    assert r.status_code == 200, r.text
    return r.json()


def check_eq1_independently(
    api: httpx.Client, run: dict[str, Any], forward: Forward, step: int, per_label: int, split: str = "test"
) -> None:
    """The analyzer's Eq. 1 for every conv layer and point equals our own from tensors + samples over HTTP."""
    rid, dataset = run["id"], run["dataset"]
    results = {
        (layer, point): post_activations(
            api, rid, step=step, layer=layer, per_label=per_label, point=point, split=split
        )
        for layer in ("conv1", "conv2")
        for point in ("post", "pre")
    }
    first = results[("conv1", "post")]
    assert first["layer"] == "conv1" and first["step"] == step and first["labels"] == list(range(10))
    assert first["requested_per_label"] == per_label and first["point"] == "post" and first["split"] == split
    # A prefix of the split that holds every S_c and everything before it (the whole split when a label
    # is short), so we can check "the first per_label correct in dataset order" ourselves.
    short = any(n < per_label for n in first["counts"])
    upto = first["split_size"] if short else 1 + max(i for s in first["sample_indices"] for i in s)
    x, y = fetch_samples(api, dataset, split, list(range(upto)))
    w = fetch_weights(api, rid, step)
    with torch.no_grad():
        logits, maps = forward(w, x)
    pred = logits.argmax(1)
    correct = pred == y
    in_sum = x.double().sum((1, 2, 3))
    for (layer, point), r in results.items():
        sel = r["sample_indices"]
        assert len(sel) == 10 and r["counts"] == [len(s) for s in sel]
        for c, idx in enumerate(sel):
            assert len(idx) <= per_label
            assert all(bool(correct[i]) and int(y[i]) == c for i in idx), (
                layer,
                c,
            )  # predicted correctly as c
            expected = torch.nonzero(correct & (y == c)).flatten()[:per_label].tolist()
            assert idx == expected, (layer, c)  # the *first* per_label of them in dataset order
            if len(idx) < per_label:
                assert r["note"] and f"{c} ({len(idx)} of {per_label})" in r["note"]
        if all(len(s) == per_label for s in sel):
            assert r["note"] is None
        fm = maps[layer if point == "post" else f"{layer}.pre"].double().sum((2, 3))  # [N, F]
        n_filters = fm.shape[1]
        ours = np.full((n_filters, 10), np.nan)
        num = np.full((n_filters, 10), np.nan)
        den = np.full(10, np.nan)
        for c, idx in enumerate(sel):
            if idx:
                num[:, c] = fm[idx].mean(0).numpy()
                den[c] = float(in_sum[idx].mean())
                ours[:, c] = num[:, c] / den[c]
        got = np.array(r["activation"], dtype=np.float64)
        assert got.shape == (n_filters, 10)
        np.testing.assert_array_equal(np.isnan(got), np.isnan(ours))
        scale = np.nanmax(np.abs(ours)) if np.isfinite(ours).any() else 1.0
        # rel err <= 1e-5 (pre-activation sums can cancel to ~0, so relative to the matrix scale there).
        np.testing.assert_allclose(
            got, ours, rtol=1e-5, atol=1e-6 * scale if point == "pre" else 0, equal_nan=True
        )
        np.testing.assert_allclose(
            np.array(r["denominator"], dtype=np.float64), den, rtol=1e-9, equal_nan=True
        )
        np.testing.assert_allclose(
            np.array(r["numerator"], dtype=np.float64),
            num,
            rtol=1e-5,
            atol=1e-6 * np.nanmax(np.abs(num)) if point == "pre" else 0,
            equal_nan=True,
        )


@pytest.fixture(scope="module")
def tiny_run(api: httpx.Client) -> dict[str, Any]:
    """tiny-cnn on synthetic, 2 epochs of 8 batches: steps 0..16."""
    run = create_run(api, name="analyses")
    run = wait_terminal(api, run["id"])
    assert run["status"] == "succeeded", run["error"]
    return run


def test_eq1_matches_an_independent_computation_tiny(api: httpx.Client, tiny_run: dict[str, Any]) -> None:
    check_eq1_independently(api, tiny_run, tiny_forward, step=16, per_label=5)
    check_eq1_independently(api, tiny_run, tiny_forward, step=0, per_label=3, split="train")


@requires_mnist
def test_eq1_matches_an_independent_computation_paper_cnn_mnist(api: httpx.Client) -> None:
    run = create_run(
        api,
        name="analyses-paper",
        model={"preset": "paper-cnn"},
        dataset="mnist-10k",
        training={
            "epochs": 1,
            "batch_size": 64,
            "optimizer": "adadelta",
            "lr": 1.0,
            "seed": 0,
            "max_train_samples": 1280,
        },
    )
    run = wait_terminal(api, run["id"], timeout=300)
    assert run["status"] == "succeeded", run["error"]
    check_eq1_independently(api, run, paper_forward, step=20, per_label=8)


def test_activations_are_cached_and_identical(api: httpx.Client, tiny_run: dict[str, Any]) -> None:
    rid = tiny_run["id"]
    body = {"step": 8, "layer": "conv2", "per_label": 11}
    a = post_activations(api, rid, **body)
    b = post_activations(api, rid, **body)
    assert a["cached"] is False and b["cached"] is True
    for k in ("activation", "numerator", "denominator", "counts", "sample_indices", "note"):
        assert a[k] == b[k], k
    # conv1 of the same step, per_label and split came from the same forward pass.
    assert post_activations(api, rid, **{**body, "layer": "conv1"})["cached"] is True
    # Defaults: per_label 100, point post, split test.
    d = post_activations(api, rid, step=8, layer="conv1")
    assert (d["requested_per_label"], d["point"], d["split"]) == (100, "post", "test")


def test_compare_returns_both_steps_and_their_difference(api: httpx.Client, tiny_run: dict[str, Any]) -> None:
    rid = tiny_run["id"]
    r = api.post(
        f"/api/runs/{rid}/activations/compare", json={"layer": "conv1", "from": 0, "to": 16, "per_label": 4}
    )
    assert r.status_code == 200, r.text
    j = r.json()
    a, b = j["from"], j["to"]
    assert a["step"] == 0 and b["step"] == 16 and a["layer"] == b["layer"] == "conv1"
    single = post_activations(api, rid, step=16, layer="conv1", per_label=4)
    assert single["activation"] == b["activation"] and single["cached"] is True
    fa = np.array(a["activation"], dtype=np.float64)
    fb = np.array(b["activation"], dtype=np.float64)
    diff = np.array(j["difference"], dtype=np.float64)
    np.testing.assert_allclose(diff, fb - fa, rtol=1e-12, equal_nan=True)


def test_featuremaps_of_one_input(api: httpx.Client, tiny_run: dict[str, Any]) -> None:
    rid = tiny_run["id"]
    r = api.get(f"/api/runs/{rid}/featuremaps", params={"step": 16, "layer": "conv2", "index": 7})
    assert r.status_code == 200, r.text
    j = r.json()
    assert j["maps"]["shape"] == [8, 11, 11] and j["maps"]["dtype"] == "float32"
    assert j["input"]["shape"] == [1, 28, 28] and (j["layer"], j["step"], j["index"]) == ("conv2", 16, 7)
    x, y = fetch_samples(api, "synthetic", "test", [7])
    w = fetch_weights(api, rid, 16)
    with torch.no_grad():
        logits, maps = tiny_forward(w, x)
    assert j["label"] == int(y[0]) and j["prediction"] == int(logits.argmax(1)[0])
    assert np.array_equal(np.asarray(j["input"]["data"], np.float32).reshape(1, 1, 28, 28), x.numpy())
    np.testing.assert_allclose(
        np.asarray(j["maps"]["data"], np.float32).reshape(8, 11, 11),
        maps["conv2"][0].numpy(),
        rtol=1e-5,
        atol=1e-6,
    )
    again = api.get(f"/api/runs/{rid}/featuremaps", params={"step": 16, "layer": "conv2", "index": 7}).json()
    assert again["cached"] is True and again["maps"]["data"] == j["maps"]["data"]
    pre = api.get(
        f"/api/runs/{rid}/featuremaps", params={"step": 16, "layer": "conv2", "index": 7, "point": "pre"}
    )
    np.testing.assert_allclose(
        np.asarray(pre.json()["maps"]["data"], np.float32).reshape(8, 11, 11),
        maps["conv2.pre"][0].numpy(),
        rtol=1e-5,
        atol=1e-6,
    )


def test_scatter_initial_value_vs_change(api: httpx.Client, tiny_run: dict[str, Any]) -> None:
    rid = tiny_run["id"]
    r = api.get(f"/api/runs/{rid}/scatter/conv2.weight", params={"to": 16, "max_points": 100, "bins": 16})
    assert r.status_code == 200, r.text
    j = r.json()
    assert (j["name"], j["from"], j["to"], j["n"]) == ("conv2.weight", 0, 16, 288) and j["cached"] is False
    x0 = get_npy(api, f"/api/runs/{rid}/tensors/conv2.weight", step=0).reshape(-1)
    x1 = get_npy(api, f"/api/runs/{rid}/tensors/conv2.weight", step=16).reshape(-1)
    d = x1 - x0
    idx = j["sample_indices"]
    assert len(idx) == len(j["x"]) == len(j["y"]) == 100 and idx == sorted(idx)
    assert np.array_equal(np.asarray(j["x"], np.float32), x0[idx]) and np.array_equal(
        np.asarray(j["y"], np.float32), d[idx]
    )
    h = j["histogram"]
    counts = np.array(h["counts"])
    assert counts.shape == (16, 16) and counts.sum() == 288 and len(h["x_edges"]) == len(h["y_edges"]) == 17
    assert j["pearson_r"] == pytest.approx(
        np.corrcoef(x0.astype(np.float64), d.astype(np.float64))[0, 1], abs=1e-9
    )
    assert j["pos_count"] == int((x0 > 0).sum()) and j["neg_count"] == int((x0 < 0).sum())
    assert j["pos_increased_fraction"] == pytest.approx(((x0 > 0) & (d > 0)).sum() / (x0 > 0).sum())
    assert j["neg_decreased_fraction"] == pytest.approx(((x0 < 0) & (d < 0)).sum() / (x0 < 0).sum())
    again = api.get(
        f"/api/runs/{rid}/scatter/conv2.weight", params={"to": 16, "max_points": 100, "bins": 16}
    ).json()
    assert again["cached"] is True and again["x"] == j["x"] and again["sample_indices"] == idx
    small = api.get(f"/api/runs/{rid}/scatter/conv1.weight", params={"from": 2, "to": 9}).json()
    assert small["n"] == 36 and small["sample_indices"] == list(range(36))


def test_trajectory_reads_every_step(api: httpx.Client, tiny_run: dict[str, Any]) -> None:
    rid = tiny_run["id"]
    r = api.get(f"/api/runs/{rid}/trajectory/conv1.weight", params={"index": "0,5,35"})
    assert r.status_code == 200, r.text
    j = r.json()
    assert j["steps"] == list(range(17)) and j["indices"] == [0, 5, 35] and j["name"] == "conv1.weight"
    vals = np.asarray(j["values"], np.float32)
    assert vals.shape == (17, 3)
    for s in (0, 9, 16):
        assert np.array_equal(
            vals[s], get_npy(api, f"/api/runs/{rid}/tensors/conv1.weight", step=s).reshape(-1)[[0, 5, 35]]
        )
    npy = get_npy(api, f"/api/runs/{rid}/trajectory/conv1.weight", index="0,5,35")
    assert np.array_equal(npy, vals)


def test_diff_stats_have_the_method_summary(api: httpx.Client, tiny_run: dict[str, Any]) -> None:
    rid = tiny_run["id"]
    j = api.get(f"/api/runs/{rid}/diff/conv2.weight", params={"from": 0, "to": 16}).json()
    d = np.asarray(j["data"], np.float32).reshape(j["shape"])
    s = j["stats"]
    for k in ("min", "max", "mean", "mean_abs", "increased", "decreased", "unchanged", "per_filter_l2"):
        assert k in s, k
    assert s["increased"] == int((d > 0).sum()) and s["decreased"] == int((d < 0).sum())
    assert s["mean_abs"] == pytest.approx(float(np.abs(d.astype(np.float64)).mean()))
    np.testing.assert_allclose(
        s["per_filter_l2"], np.sqrt((d.astype(np.float64).reshape(8, -1) ** 2).sum(1)), rtol=1e-9
    )


def test_analysis_events_are_published(api: httpx.Client, tiny_run: dict[str, Any]) -> None:
    rid = tiny_run["id"]
    post_activations(api, rid, step=3, layer="conv1", per_label=2)
    evs = [e for e in ws_events(api, rid, timeout=30) if e["type"] == "analysis"]
    states = [(e["data"]["kind"], e["data"]["state"], e["data"]["step"]) for e in evs]
    assert ("activations", "started", 3) in states and ("activations", "finished", 3) in states


# --- bad input: a 4xx that says what to fix, never a 500 ---------------------------------------------------------


def _detail(r: httpx.Response) -> str:
    return str(r.json()["detail"])


@pytest.mark.parametrize(
    ("body", "status", "words"),
    [
        ({"step": 16, "layer": "fc1"}, 422, ["conv1", "conv2"]),
        ({"step": 16, "layer": "nope"}, 422, ["conv1, conv2"]),
        ({"step": 16, "layer": "conv1", "per_label": 0}, 422, ["per_label", "greater than or equal to 1"]),
        ({"step": 16, "layer": "conv1", "per_label": -3}, 422, ["per_label"]),
        ({"step": 16, "layer": "conv1", "per_label": 1001}, 422, ["per_label", "less than or equal to 1000"]),
        ({"step": 17, "layer": "conv1"}, 422, ["step", "0..16"]),
        ({"step": -1, "layer": "conv1"}, 422, ["step"]),
        ({"step": 16, "layer": "conv1", "split": "validation"}, 422, ["split", "'test'", "'train'"]),
        ({"step": 16, "layer": "conv1", "point": "middle"}, 422, ["point", "'post'", "'pre'"]),
        ({"step": 16, "layer": "conv1", "perlabel": 5}, 422, ["perlabel", "Extra inputs"]),
        ({"layer": "conv1"}, 422, ["step", "Field required"]),
    ],
)
def test_activations_reject_bad_input(
    api: httpx.Client, tiny_run: dict[str, Any], body: dict[str, Any], status: int, words: list[str]
) -> None:
    r = api.post(f"/api/runs/{tiny_run['id']}/activations", json=body)
    assert r.status_code == status, r.text
    for w in words:
        assert w in _detail(r), (w, r.text)


@pytest.mark.parametrize(
    ("method", "path", "params", "status", "words"),
    [
        ("POST", "activations/compare", {"layer": "fc1", "from": 0, "to": 16}, 422, ["conv1, conv2"]),
        ("POST", "activations/compare", {"layer": "conv1", "from": 0, "to": 99}, 422, ["to", "0..16"]),
        ("GET", "featuremaps", {"step": 16, "layer": "conv1", "index": 256}, 422, ["index", "0..255"]),
        (
            "GET",
            "featuremaps",
            {"step": 16, "layer": "conv1", "index": 0, "split": "dev"},
            422,
            ["split", "'test'"],
        ),
        ("GET", "featuremaps", {"step": 16, "layer": "fc1", "index": 0}, 422, ["conv1, conv2"]),
        ("GET", "featuremaps", {"step": 40, "layer": "conv1", "index": 0}, 422, ["step", "0..16"]),
        ("GET", "featuremaps", {"step": 16, "layer": "conv1", "index": -1}, 422, ["index"]),
        ("GET", "featuremaps", {"step": 16, "layer": "conv1"}, 422, ["index", "Field required"]),
        ("GET", "trajectory/conv1.weight", {"index": "36"}, 422, ["index", "0..35"]),
        ("GET", "trajectory/conv1.weight", {"index": "-1"}, 422, ["0..35"]),
        ("GET", "trajectory/conv1.weight", {"index": "a,b"}, 422, ["integers"]),
        ("GET", "trajectory/conv1.weight", {"index": ",".join(["0"] * 1001)}, 422, ["1000"]),
        ("GET", "trajectory/nope.weight", {"index": "0"}, 404, ["conv1.weight"]),
        ("GET", "scatter/conv1.weight", {"from": 9, "to": 3}, 422, ["from"]),
        ("GET", "scatter/conv1.weight", {"to": 99}, 404, ["0..16"]),
        ("GET", "scatter/conv1.weight", {"to": 5, "max_points": 0}, 422, ["max_points"]),
        ("GET", "scatter/conv1.weight", {"to": 5, "bins": 1}, 422, ["bins"]),
        ("GET", "scatter/nope", {"to": 5}, 404, ["conv1.weight"]),
    ],
)
def test_analyses_reject_bad_input(
    api: httpx.Client,
    tiny_run: dict[str, Any],
    method: str,
    path: str,
    params: dict[str, Any],
    status: int,
    words: list[str],
) -> None:
    url = f"/api/runs/{tiny_run['id']}/{path}"
    r = api.post(url, json=params) if method == "POST" else api.get(url, params=params)
    assert r.status_code == status, r.text
    for w in words:
        assert w in _detail(r), (w, r.text)


def test_unknown_run_is_404(api: httpx.Client) -> None:
    for r in (
        api.post("/api/runs/nosuchrun1/activations", json={"step": 0, "layer": "conv1"}),
        api.get("/api/runs/nosuchrun1/scatter/conv1.weight", params={"to": 1}),
        api.get("/api/runs/nosuchrun1/trajectory/conv1.weight", params={"index": "0"}),
        api.get("/api/runs/nosuchrun1/featuremaps", params={"step": 0, "layer": "conv1", "index": 0}),
    ):
        assert r.status_code == 404 and "nosuchrun1" in _detail(r), r.text


def test_activations_of_a_model_without_conv_layers(api: httpx.Client) -> None:
    run = create_run(
        api, name="mlp", model={"preset": "mlp"}, training={"epochs": 1, "batch_size": 512, "seed": 0}
    )
    run = wait_terminal(api, run["id"])
    r = api.post(f"/api/runs/{run['id']}/activations", json={"step": 0, "layer": "fc1"})
    assert r.status_code == 422 and "no conv layers" in _detail(r)


@pytest.mark.parametrize(
    ("params", "status", "field", "words"),
    [
        ({"split": "validation", "indices": "0"}, 422, "split", ["train, test"]),
        ({"split": "test", "indices": "256"}, 422, "indices", ["0..255"]),
        ({"split": "train", "indices": "0,-1"}, 422, "indices", ["0..1023"]),
        ({"split": "test", "indices": "x"}, 422, "indices", ["integers"]),
        ({"split": "test", "indices": ""}, 422, "indices", ["between 1 and 1000"]),
    ],
)
def test_samples_reject_bad_input(
    api: httpx.Client, params: dict[str, Any], status: int, field: str, words: list[str]
) -> None:
    r = api.get("/api/datasets/synthetic/samples", params=params)
    assert r.status_code == status, r.text
    detail = r.json()["detail"]
    assert detail[0]["loc"] == ["query", field], detail
    for w in words:
        assert w in detail[0]["msg"], (w, detail)


def test_samples_unknown_dataset_is_404(api: httpx.Client) -> None:
    r = api.get("/api/datasets/imagenet/samples", params={"indices": "0"})
    assert r.status_code == 404 and "synthetic" in _detail(r)


def test_samples_are_the_inputs_as_fed(api: httpx.Client) -> None:
    r = api.get("/api/datasets/synthetic/samples", params={"split": "train", "indices": "3,1,3"}).json()
    assert r["indices"] == [3, 1, 3] and len(r["labels"]) == 3 and r["inputs"]["shape"] == [3, 1, 28, 28]
    x = np.asarray(r["inputs"]["data"], np.float32).reshape(3, 1, 28, 28)
    assert np.array_equal(x[0], x[2]) and 0.0 <= x.min() and x.max() <= 1.0 and math.isfinite(float(x.sum()))
