"""Eq. 1 activations and feature maps of a run recorded by the SDK in a user's own loop, through the API, equal
to an independent computation: the user's model class with the loop's own copy of the weights at that step."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import torch
from torch import nn

import netlapse
from netlapse.cli.report import make_report, summary_lines
from netlapse.cli.stack import Stack
from netlapse.client import Client
from netlapse.core.program import eval_inputs_key, eval_labels_key
from netlapse.core.results import npy_load
from netlapse.core.settings import Settings
from netlapse.core.store import store_from_settings
from tests.integration.sdk_train import ResNetTiny
from tests.integration.test_sdk import train

pytestmark = pytest.mark.integration


def model_at(out: Path, step: int) -> ResNetTiny:
    """The user's model holding the loop's own copy of its state after ``step`` optimizer steps."""
    m = ResNetTiny()
    with np.load(out / f"step{step}.npz") as z:
        m.load_state_dict({k: torch.from_numpy(z[k]) for k in z.files}, strict=False)
    return m.eval()


def maps(m: ResNetTiny, x: torch.Tensor) -> dict[tuple[str, str], torch.Tensor]:
    """Each conv layer's output before ("pre": after its batchnorm) and after its activation ("post")."""
    with torch.no_grad():
        stem = m.stem(x)
        h = torch.relu(stem)
        a = m.block.bn_a(m.block.a(h))
        b = m.block.bn_b(m.block.b(torch.relu(a)))  # joins the residual sum before the activation
    return {
        ("stem", "pre"): stem,
        ("stem", "post"): h,
        ("block.a", "pre"): a,
        ("block.a", "post"): torch.relu(a),
        ("block.b", "pre"): b,
        ("block.b", "post"): b,
    }


def eq1(m: ResNetTiny, x: torch.Tensor, y: torch.Tensor, layer: str, point: str, per_label: int) -> Any:
    with torch.no_grad():
        pred = m(x).argmax(1)
    sums = maps(m, x)[(layer, point)].double().sum((2, 3))
    ins = x.double().sum((1, 2, 3))
    cols, sel = [], []
    for c in range(3):
        idx = torch.nonzero((pred == y) & (y == c)).flatten()[:per_label]
        sel.append(idx.tolist())
        cols.append(
            (sums[idx].mean(0) / ins[idx].mean()).numpy() if len(idx) else np.full(sums.shape[1], np.nan)
        )
    return np.stack(cols, axis=1), sel


def test_eq1_and_feature_maps_of_an_sdk_run_equal_an_independent_computation(
    api: httpx.Client, stack: Stack, tmp_path: Path
) -> None:
    out = tmp_path / "loop"
    info = train(stack, out, "--steps", "6", "--skip-at", "-1")
    run_id, last = info["run_id"], info["steps"]
    store = store_from_settings(Settings(data_dir=stack.data_dir))
    x = torch.from_numpy(npy_load(store.get(eval_inputs_key(run_id))))  # what the loop handed over
    y = torch.from_numpy(npy_load(store.get(eval_labels_key(run_id))))
    assert x.shape == (30, 1, 8, 8) and y.tolist() == [i % 3 for i in range(30)]
    for step in (0, last):
        model = model_at(out, step)
        for layer in ("stem", "block.a", "block.b"):
            for point in ("post", "pre"):
                body = {"step": step, "layer": layer, "point": point, "per_label": 4}
                r = api.post(f"/api/runs/{run_id}/activations", json=body)
                assert r.status_code == 200, r.text
                got = r.json()
                ref, sel = eq1(model, x, y, layer, point, 4)
                assert got["labels"] == [0, 1, 2] and got["split_size"] == 30
                np.testing.assert_allclose(
                    np.array(got["activation"], dtype=np.float64), ref, rtol=1e-5, atol=1e-7, equal_nan=True
                )
                assert got["sample_indices"] == sel
    # one input's feature maps: the same operators on the same weights, so the same bits
    r = api.get(
        f"/api/runs/{run_id}/featuremaps",
        params={"step": last, "layer": "block.a", "index": 5, "point": "post"},
    )
    assert r.status_code == 200, r.text
    fm = r.json()
    want = maps(model_at(out, last), x[5:6])[("block.a", "post")][0].numpy()
    got_maps = np.asarray(fm["maps"]["data"], dtype=fm["maps"]["dtype"]).reshape(fm["maps"]["shape"])
    assert np.array_equal(got_maps, want)
    assert fm["label"] == 2
    # layers are module paths; anything else is a 422 listing them
    r = api.post(f"/api/runs/{run_id}/activations", json={"step": last, "layer": "head"})
    assert r.status_code == 422 and "stem, block.a, block.b" in json.dumps(r.json())
    # netlapse report draws the per-label activations of every conv layer, as for a server run
    with Client(f"http://127.0.0.1:{stack.api_port}") as c:
        report = make_report(c, run_id, tmp_path / "report", per_label=4, formats=("png",))
    assert list(report["activations"]) == ["stem", "block.a", "block.b"]
    assert "activations_block.a.png" in report["files"] and "activations_error" not in report


def test_sdk_run_without_program_or_eval_data_answers_what_to_hand_over(
    api: httpx.Client, stack: Stack, tmp_path: Path
) -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(), nn.Flatten(), nn.Linear(2 * 6 * 6, 3))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with netlapse.init(name="no-program", server=f"http://127.0.0.1:{stack.api_port}") as run:
        run.watch(model, opt)
        for _ in range(2):
            model(torch.randn(4, 1, 8, 8)).sum().backward()
            opt.step()
            opt.zero_grad()
    r = api.post(f"/api/runs/{run.id}/activations", json={"step": 1, "layer": "0"})
    assert r.status_code == 422
    assert "run.watch(model, optimizer, example_input=batch)" in json.dumps(r.json())

    with netlapse.init(name="no-eval", server=f"http://127.0.0.1:{stack.api_port}") as run2:
        run2.watch(model, opt, example_input=torch.randn(2, 1, 8, 8))
        model(torch.randn(4, 1, 8, 8)).sum().backward()
        opt.step()
    r = api.post(f"/api/runs/{run2.id}/activations", json={"step": 1, "layer": "0"})
    assert r.status_code == 422 and "run.eval_data(inputs, labels)" in json.dumps(r.json())
    r = api.get(f"/api/runs/{run2.id}/featuremaps", params={"step": 1, "layer": "0", "index": 0})
    assert r.status_code == 422 and "run.eval_data(inputs, labels)" in json.dumps(r.json())
    # the report still draws what it can, and says what is missing for the rest
    with Client(f"http://127.0.0.1:{stack.api_port}") as c:
        report = make_report(c, run2.id, tmp_path / "report", formats=("png",))
    assert report["activations"] == {} and "run.eval_data(inputs, labels)" in report["activations_error"]
    assert "filters.png" in report["files"] and "scatter.png" in report["files"]
    assert any(line.startswith("no per-label activations: ") for line in summary_lines(report))
