"""Eq. 1 activations and feature maps of SDK runs: the run's torch.export program with the tape's tensors, on the
evaluation set the user handed over — checked against an independent computation with the user's own model."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from netlapse.analyzer import activations as act
from netlapse.analyzer import sdk_runs
from netlapse.analyzer.registry import AnalysisFailure
from netlapse.core.capture import capturable_tensors
from netlapse.core.datasets import load_dataset
from netlapse.core.program import eval_inputs_key, eval_labels_key, export_program, program_key
from netlapse.core.results import npy_bytes, npy_load
from netlapse.core.runs import RunRepository
from netlapse.core.schemas import ActivationTask, FeatureMapTask, RunRecord, SdkInfo, tape_prefix
from netlapse.core.settings import Settings
from netlapse.core.store import LocalStore
from netlapse.core.tape import TapeWriter


class Residual(nn.Module):
    def __init__(self, c: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(c, c, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(c)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(x + self.bn(self.conv(x)))


class Net(nn.Module):
    """conv → BN → ReLU, a residual block, a tanh conv, pooling, a linear head: no preset expresses it."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(1, 4, 3)
        self.stem_bn = nn.BatchNorm2d(4)
        self.block = Residual(4)
        self.mix = nn.Conv2d(4, 6, 3, stride=2)
        self.head = nn.Linear(6 * 4 * 4, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.max_pool2d(torch.relu(self.stem_bn(self.stem(x))), 2)
        x = self.block(x)
        x = torch.tanh(self.mix(x))
        return self.head(F.adaptive_avg_pool2d(x, 4).flatten(1))


# The user's view of each layer: its output after its batchnorm and activation ("post") and before ("pre").
def reference_maps(m: Net, x: torch.Tensor) -> dict[tuple[str, str], torch.Tensor]:
    with torch.no_grad():
        stem_pre = m.stem_bn(m.stem(x))
        h = F.max_pool2d(torch.relu(stem_pre), 2)
        block_pre = m.block.bn(m.block.conv(h))  # joins the residual sum before any activation
        mix_pre = m.mix(m.block(h))
    return {
        ("stem", "pre"): stem_pre,
        ("stem", "post"): torch.relu(stem_pre),
        ("block.conv", "pre"): block_pre,
        ("block.conv", "post"): block_pre,
        ("mix", "pre"): mix_pre,
        ("mix", "post"): torch.tanh(mix_pre),
    }


def eq1_reference(m: Net, x: torch.Tensor, y: torch.Tensor, layer: str, point: str, per_label: int):
    with torch.no_grad():
        pred = m(x).argmax(1)
    sums = reference_maps(m, x)[(layer, point)].double().sum((2, 3))
    ins = x.double().sum((1, 2, 3))
    cols, sel = [], []
    for c in range(10):
        idx = torch.nonzero((pred == y) & (y == c)).flatten()[:per_label]
        sel.append(idx.tolist())
        cols.append(
            (sums[idx].mean(0) / ins[idx].mean()).numpy() if len(idx) else np.full(sums.shape[1], np.nan)
        )
    return np.stack(cols, axis=1), sel


@pytest.fixture
def store(tmp_path: Path) -> LocalStore:
    act.clear_caches()
    sdk_runs.clear_caches()
    return LocalStore(tmp_path / "store")


def write_sdk_run(
    store: LocalStore,
    run_id: str,
    steps: int = 4,
    program: bool = True,
    eval_data: bool = True,
    buffers: bool = True,
) -> list[dict[str, torch.Tensor]]:
    """What the SDK leaves in the store for a run: record, tape (every step), program, evaluation set."""
    torch.manual_seed(0)
    model = Net()
    data = load_dataset("synthetic", Settings())
    RunRepository(store).save(
        RunRecord(
            id=run_id,
            name="sdk",
            source="sdk",
            status="succeeded",
            tape_complete=True,
            sdk=SdkInfo(program=program, eval_data=eval_data, buffers=buffers),
        )
    )
    writer = TapeWriter(store, tape_prefix(run_id), capturable_tensors(model, include_buffers=buffers))
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
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
        writer.append(step, {k: v.numpy() for k, v in sd.items() if buffers or "running" not in k})
    writer.close()
    model.train()
    if program:
        data_bytes = export_program(model, data.train_x[:8])
        assert data_bytes is not None
        store.put(program_key(run_id), data_bytes)
    if eval_data:
        store.put(eval_inputs_key(run_id), npy_bytes(data.test_x.numpy()))
        store.put(eval_labels_key(run_id), npy_bytes(data.test_y.numpy()))
    return states


def model_at(states: list[dict[str, torch.Tensor]], step: int) -> Net:
    m = Net()
    m.load_state_dict(states[step], strict=False)
    return m.eval()


def test_eq1_on_an_sdk_run_equals_an_independent_computation(store: LocalStore) -> None:
    states = write_sdk_run(store, "sdk1aaaa")
    data = load_dataset("synthetic", Settings())
    model = model_at(states, 4)
    meta: dict = {}
    for layer in ("stem", "block.conv", "mix"):
        for point in ("post", "pre"):
            t = ActivationTask(run_id="sdk1aaaa", step=4, layer=layer, per_label=9, point=point)
            key, meta = act.compute_activations(store, Settings(), t)
            r = store.get_json(key + ".json")
            ref, sel = eq1_reference(model, data.test_x, data.test_y, layer, point, 9)
            got = np.array(r["activation"], dtype=np.float64)
            assert got.shape == ({"stem": 4, "block.conv": 4, "mix": 6}[layer], 10)
            np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-7, equal_nan=True)
            assert r["sample_indices"] == sel and r["counts"] == [len(s) for s in sel]
            assert r["dataset"] is None and r["split_size"] == 256
    assert meta["cached"] is True  # one forward pass answered every layer and point


def test_featuremaps_of_an_sdk_run(store: LocalStore) -> None:
    states = write_sdk_run(store, "sdk2aaaa", steps=2)
    model = model_at(states, 2)
    x = load_dataset("synthetic", Settings()).test_x[7:8]
    t = FeatureMapTask(run_id="sdk2aaaa", step=2, layer="stem", split="test", index=7, point="post")
    key, _ = act.compute_featuremaps(store, Settings(), t)
    meta = store.get_json(key + ".json")
    maps = npy_load(store.get(key + ".maps.npy"))
    ref = reference_maps(model, x)[("stem", "post")][0].numpy()
    assert maps.shape == (4, 26, 26) and np.array_equal(maps, ref)  # the same operators: bit-identical
    with torch.no_grad():
        assert meta["prediction"] == int(model(x).argmax(1))
    assert meta["label"] == int(load_dataset("synthetic").test_y[7])
    with pytest.raises(act.AnalysisError, match="0..255"):
        act.compute_featuremaps(store, Settings(), t.model_copy(update={"index": 256}))


def test_missing_program_eval_data_or_buffers_say_what_to_hand_over(store: LocalStore) -> None:
    write_sdk_run(store, "sdk3aaaa", steps=1, program=False)
    write_sdk_run(store, "sdk4aaaa", steps=1, eval_data=False)
    write_sdk_run(store, "sdk5aaaa", steps=1, buffers=False)
    repo = RunRepository(store)
    with pytest.raises(AnalysisFailure, match=r"run.watch\(model, optimizer, example_input=batch\)") as e:
        act.require_conv_layer(repo.get("sdk3aaaa"), "stem", ["body", "layer"], store)
    assert e.value.status == 422
    with pytest.raises(AnalysisFailure, match=r"run.eval_data\(inputs, labels\)") as e:
        act.require_conv_layer(repo.get("sdk4aaaa"), "stem", ["body", "layer"], store)
    assert e.value.status == 422
    with pytest.raises(AnalysisFailure, match="one evaluation set"):
        act.require_conv_layer(repo.get("sdk4aaaa"), "stem", ["body", "layer"], store, split="train")
    with pytest.raises(AnalysisFailure, match="conv layers: stem, block.conv, mix"):
        act.require_conv_layer(repo.get("sdk5aaaa"), "head", ["body", "layer"], store)
    t = ActivationTask(run_id="sdk5aaaa", step=1, layer="stem")
    with pytest.raises(act.AnalysisError, match=r"stem_bn.running_mean.*buffers=True"):
        act.compute_activations(store, Settings(), t)
    with pytest.raises(act.AnalysisError, match="example_input"):
        act.compute_activations(store, Settings(), t.model_copy(update={"run_id": "sdk3aaaa"}))


def test_eval_inputs_of_another_shape_are_refused(store: LocalStore) -> None:
    write_sdk_run(store, "sdk6aaaa", steps=1)
    store.put(eval_inputs_key("sdk6aaaa"), npy_bytes(np.zeros((256, 1, 20, 20), np.float32)))
    t = ActivationTask(run_id="sdk6aaaa", step=1, layer="stem")
    with pytest.raises(act.AnalysisError, match=r"exported for inputs of shape \[N, 1, 28, 28\]"):
        act.compute_activations(store, Settings(), t)
