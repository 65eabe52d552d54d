"""The analyzer's computations on a tape written here (no services): diff stats, scatter, Eq. 1, feature maps."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from netlapse.analyzer import activations as act
from netlapse.analyzer.analyses import compute_scatter, diff_stats, scatter_data
from netlapse.core.capture import capturable_tensors
from netlapse.core.datasets import load_dataset
from netlapse.core.modelspec import PRESETS, ModelSpec, build_model
from netlapse.core.results import npy_load
from netlapse.core.runs import RunRepository
from netlapse.core.schemas import (
    ActivationTask,
    CaptureConfig,
    FeatureMapTask,
    RunRecord,
    ScatterTask,
    TrainingConfig,
    tape_prefix,
)
from netlapse.core.settings import Settings
from netlapse.core.store import LocalStore
from netlapse.core.tape import TapeWriter


def test_diff_stats_counts_signs_and_per_filter_l2() -> None:
    d = np.zeros((3, 1, 2, 2), np.float32)
    d[0, 0, 0, 0], d[1, 0, 1, 1], d[1, 0, 0, 1] = 3.0, -4.0, 0.5
    s = diff_stats(d)
    assert (s["increased"], s["decreased"], s["unchanged"], s["count"]) == (2, 1, 9, 12)
    assert s["min"] == -4.0 and s["max"] == 3.0
    assert s["mean"] == pytest.approx(-0.5 / 12) and s["mean_abs"] == pytest.approx(7.5 / 12)
    assert s["per_filter_l2"] == pytest.approx([3.0, np.sqrt(16.25), 0.0])
    assert s["top_filters"][:2] == [1, 0]
    assert "per_filter_l2" not in diff_stats(np.ones(5, np.float32))


def test_scatter_exact_histogram_fractions_and_seeded_sample() -> None:
    rng = np.random.default_rng(1)
    x = rng.normal(size=50_000).astype(np.float32)
    y = (0.3 * x + rng.normal(scale=0.5, size=x.size)).astype(np.float32)
    a = scatter_data(x, y, max_points=1000, bins=32, seed=7)
    b = scatter_data(x, y, max_points=1000, bins=32, seed=7)
    assert a["n"] == 50_000 and a["sampled"] and a["x"].size == 1000 and a["x"].dtype == np.float32
    assert np.array_equal(a["sample_indices"], b["sample_indices"])  # deterministic
    assert np.all(np.diff(a["sample_indices"]) > 0)
    assert np.array_equal(a["x"], x[a["sample_indices"]]) and np.array_equal(a["y"], y[a["sample_indices"]])
    counts = np.array(a["histogram"]["counts"])
    assert counts.shape == (32, 32) and counts.sum() == x.size  # every element, none lost at the edges
    assert a["histogram"]["x_edges"][0] == float(x.min()) and a["histogram"]["x_edges"][-1] == float(x.max())
    assert counts.sum(axis=1)[0] == int((x < a["histogram"]["x_edges"][1]).sum())  # counts[x_bin][y_bin]
    assert a["pearson_r"] == pytest.approx(np.corrcoef(x, y)[0, 1], abs=1e-9)
    assert a["pos_count"] == int((x > 0).sum()) and a["neg_count"] == int((x < 0).sum())
    assert a["pos_increased_fraction"] == pytest.approx(((x > 0) & (y > 0)).sum() / (x > 0).sum())
    assert a["neg_decreased_fraction"] == pytest.approx(((x < 0) & (y < 0)).sum() / (x < 0).sum())
    small = scatter_data(x[:10], y[:10], max_points=1000, bins=4)
    assert not small["sampled"] and small["sample_indices"].tolist() == list(range(10))


def test_scatter_of_constant_change_has_no_r() -> None:
    x = np.array([1.0, -1.0, 2.0], np.float32)
    s = scatter_data(x, np.zeros_like(x), 10, 4)
    assert (
        s["pearson_r"] is None and s["pos_increased_fraction"] == 0.0 and s["neg_decreased_fraction"] == 0.0
    )
    assert np.array(s["histogram"]["counts"]).sum() == 3


# --- a run on a tape written here ----------------------------------------------------------------------------


def _spec(batchnorm: bool = False) -> ModelSpec:
    spec = PRESETS["tiny-cnn"].spec.model_dump()
    spec["layers"][0]["batchnorm"] = batchnorm
    spec["layers"][2]["activation"] = "tanh"  # a non-relu activation: post and pre differ everywhere
    return ModelSpec.model_validate(spec)


def _write_run(
    store: LocalStore, spec: ModelSpec, run_id: str, steps: int = 3
) -> list[dict[str, torch.Tensor]]:
    """A run record and a tape of ``steps`` + 1 snapshots of a model trained briefly on synthetic data."""
    torch.manual_seed(0)
    model = build_model(spec)
    rec = RunRecord(
        id=run_id,
        name="t",
        model=spec,
        dataset="synthetic",
        training=TrainingConfig(),
        capture=CaptureConfig(),
        status="succeeded",
        tape_complete=True,
    )
    RunRepository(store).save(rec)
    writer = TapeWriter(store, tape_prefix(run_id), capturable_tensors(model), segment_max_steps=2)
    data = load_dataset("synthetic", Settings())
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    states = []
    for step in range(steps + 1):
        if step:
            model.train()
            idx = torch.arange((step - 1) * 128, step * 128)
            loss = F.cross_entropy(model(data.train_x[idx]), data.train_y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
        sd = {k: v.detach().clone() for k, v in model.state_dict().items() if v.is_floating_point()}
        states.append(sd)
        writer.append(step, {k: v.numpy() for k, v in sd.items()})
    writer.close()
    return states


@pytest.fixture
def store(tmp_path: Path) -> LocalStore:
    act.clear_caches()
    return LocalStore(tmp_path / "store")


def _eq1_reference(
    model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, layer: str, point: str, per_label: int
):
    with torch.no_grad():
        pred = model(x).argmax(1)
        maps = model.feature_maps(x, layer, point)  # type: ignore[operator]
    sums = maps.double().sum((2, 3))
    ins = x.double().sum((1, 2, 3))
    act_m, sel = [], []
    for c in range(10):
        idx = torch.nonzero((pred == y) & (y == c)).flatten()[:per_label]
        sel.append(idx.tolist())
        act_m.append(
            (sums[idx].mean(0) / ins[idx].mean()).numpy() if len(idx) else np.full(sums.shape[1], np.nan)
        )
    return np.stack(act_m, axis=1), sel


@pytest.mark.parametrize("batchnorm", [False, True])
def test_eq1_matches_feature_maps_of_the_model_at_that_step(store: LocalStore, batchnorm: bool) -> None:
    spec = _spec(batchnorm)
    states = _write_run(store, spec, "run1aaaa")
    data = load_dataset("synthetic", Settings())
    model = build_model(spec)
    model.load_state_dict(states[3], strict=False)
    model.eval()
    for layer in ("conv1", "conv2"):
        for point in ("post", "pre"):
            t = ActivationTask(run_id="run1aaaa", step=3, layer=layer, per_label=7, point=point, split="test")
            key, meta = act.compute_activations(store, Settings(), t)
            r = store.get_json(key + ".json")
            ref, sel = _eq1_reference(model, data.test_x, data.test_y, layer, point, 7)
            got = np.array(r["activation"], dtype=np.float64)
            assert got.shape == (4 if layer == "conv1" else 8, 10)
            np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-7, equal_nan=True)
            assert r["sample_indices"] == sel and r["counts"] == [len(s) for s in sel]
            assert all(n <= 7 for n in r["counts"])
            num, den = np.array(r["numerator"], float), np.array(r["denominator"], float)
            np.testing.assert_allclose(num / den, got, rtol=1e-12, equal_nan=True)
    # The first request computed every layer and point at once; the others were store reads.
    assert meta["cached"] is True


def test_activation_note_and_nulls_when_labels_lack_correct_predictions(store: LocalStore) -> None:
    _write_run(store, _spec(), "run2aaaa", steps=0)  # step 0: an untrained model gets most labels wrong
    t = ActivationTask(run_id="run2aaaa", step=0, layer="conv1", per_label=1000, split="test")
    key, _ = act.compute_activations(store, Settings(), t)
    r = store.get_json(key + ".json")
    assert r["evaluated"] == r["split_size"] == 256  # every label is short, so every input was looked at
    assert any(c < 1000 for c in r["counts"]) and r["note"] and "fewer than 1000" in r["note"]
    for c, n in enumerate(r["counts"]):
        if n == 0:
            assert r["denominator"][c] is None and all(row[c] is None for row in r["activation"])
            assert f"{c} (0 of 1000)" in r["note"]


def test_activation_rejects_non_conv_layer_and_missing_step(store: LocalStore) -> None:
    _write_run(store, _spec(), "run3aaaa", steps=1)
    with pytest.raises(act.AnalysisError, match="conv layers: conv1, conv2"):
        act.compute_activations(store, Settings(), ActivationTask(run_id="run3aaaa", step=0, layer="fc1"))
    with pytest.raises(act.AnalysisError, match="step 9"):
        act.compute_activations(store, Settings(), ActivationTask(run_id="run3aaaa", step=9, layer="conv1"))


def test_featuremaps_of_one_input(store: LocalStore) -> None:
    spec = _spec()
    states = _write_run(store, spec, "run4aaaa", steps=2)
    t = FeatureMapTask(run_id="run4aaaa", step=2, layer="conv2", split="test", index=5, point="post")
    key, _ = act.compute_featuremaps(store, Settings(), t)
    meta = store.get_json(key + ".json")
    maps = npy_load(store.get(key + ".maps.npy"))
    model = build_model(spec)
    model.load_state_dict(states[2], strict=False)
    model.eval()
    x = load_dataset("synthetic", Settings()).test_x[5:6]
    with torch.no_grad():
        ref = model.feature_maps(x, "conv2", "post")[0].numpy()
        pred = int(model(x).argmax(1))
    assert maps.shape == (8, 11, 11) and np.allclose(maps, ref, rtol=1e-6, atol=1e-7)
    assert meta["prediction"] == pred and meta["label"] == int(load_dataset("synthetic").test_y[5])
    assert np.array_equal(npy_load(store.get(key + ".input.npy")), x[0].numpy())
    with pytest.raises(act.AnalysisError, match="0..255"):
        act.compute_featuremaps(store, Settings(), t.model_copy(update={"index": 256}))


def test_compute_scatter_caches_sample_and_stats(store: LocalStore) -> None:
    states = _write_run(store, _spec(), "run5aaaa", steps=2)
    t = ScatterTask(run_id="run5aaaa", name="conv2.weight", from_step=0, to_step=2, max_points=100, bins=8)
    key, meta = compute_scatter(store, t)
    assert meta["cached"] is False and compute_scatter(store, t)[1]["cached"] is True
    m = store.get_json(key + ".json")
    xy = npy_load(store.get(key + ".npy"))
    x0 = states[0]["conv2.weight"].numpy().reshape(-1)
    d = (states[2]["conv2.weight"] - states[0]["conv2.weight"]).numpy().reshape(-1)
    assert m["n"] == x0.size == 288 and len(m["sample_indices"]) == 100 and xy.shape == (2, 100)
    assert np.array_equal(xy[0], x0[m["sample_indices"]]) and np.array_equal(xy[1], d[m["sample_indices"]])
    assert np.array(m["histogram"]["counts"]).sum() == 288
