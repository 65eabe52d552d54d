"""Training-health diagnostics through the HTTP API with real workers: every number equals an independent numpy
computation from the tensors fetched over the API, and a run with a filter killed at init is flagged (frozen and
dead) while its healthy filters are not."""

from __future__ import annotations

from typing import Any

import httpx
import numpy as np
import pytest

from netlapse.cli.stack import Stack
from netlapse.core.store import LocalStore
from tests.crafted_runs import DEAD_FILTER, write_dead_filter_run
from tests.integration.helpers import create_run, get_npy, wait_terminal

pytestmark = pytest.mark.integration


def fetch_all(api: httpx.Client, rid: str) -> tuple[list[int], dict[str, list[np.ndarray]]]:
    steps = api.get(f"/api/runs/{rid}/steps").json()["steps"]
    names = [t["name"] for t in api.get(f"/api/runs/{rid}/tensors").json()["tensors"]]
    return steps, {n: [get_npy(api, f"/api/runs/{rid}/tensors/{n}", step=s) for s in steps] for n in names}


def check_against_numpy(
    h: dict[str, Any], steps: list[int], w: dict[str, list[np.ndarray]], top_k: int
) -> None:
    assert h["steps"] == steps and [t["name"] for t in h["tensors"]] == list(w)
    for ti, (n, vals) in enumerate(w.items()):
        v64 = [v.astype(np.float64).reshape(-1) for v in vals]
        norms = [float(np.sqrt((v * v).sum())) for v in v64]
        assert h["norm"][ti] == pytest.approx(norms, rel=1e-12), n
        for i in range(1, len(steps)):
            d = (vals[i] - vals[i - 1]).astype(np.float64).reshape(-1)
            u = float(np.sqrt((d * d).sum()))
            assert h["update_norm"][ti][i] == pytest.approx(u, rel=1e-12), (n, i)
            assert h["update_ratio"][ti][i] == pytest.approx(u / norms[i - 1], rel=1e-12), (n, i)
            assert h["sign_flip_fraction"][ti][i] == float(np.mean(np.sign(vals[i]) != np.sign(vals[0]))), (
                n,
                i,
            )
    for unit in h["units"]:
        wv, bv = w[unit["weight"]], w[unit["bias"]] if unit["bias"] else None
        for u in range(unit["units"]):
            changed = [
                i
                for i in range(1, len(steps))
                if not np.array_equal(wv[i][u], wv[i - 1][u]) or (bv is not None and bv[i][u] != bv[i - 1][u])
            ]
            assert unit["last_change"][u] == (steps[changed[-1]] if changed else None), (unit["layer"], u)
    for win in h["top_moved"]:
        a, b = steps.index(win["from"]), steps.index(win["to"])
        for lay in win["layers"]:
            d = (w[lay["weight"]][b] - w[lay["weight"]][a]).astype(np.float64)
            l2 = np.sqrt((d.reshape(d.shape[0], -1) ** 2).sum(1))
            assert lay["units"] == [int(i) for i in np.argsort(-l2, kind="stable")[:top_k]]


def test_health_of_a_trained_run_equals_numpy_over_the_api(api: httpx.Client) -> None:
    run = create_run(
        api, name="health", training={"epochs": 1, "batch_size": 128, "optimizer": "adam", "lr": 0.01}
    )
    rid = run["id"]
    assert wait_terminal(api, rid)["status"] == "succeeded"
    r = api.get(f"/api/runs/{rid}/health", params={"windows": 4, "top_k": 3})
    assert r.status_code == 200, r.text
    h = r.json()
    assert h["cached"] is False and h["upto"] == 8
    steps, w = fetch_all(api, rid)
    check_against_numpy(h, steps, w, top_k=3)
    assert h["updates"]["update_is_scaled_gradient"] is False and "not a gradient" in h["updates"]["note"]
    again = api.get(f"/api/runs/{rid}/health", params={"windows": 4, "top_k": 3}).json()
    assert again["cached"] is True and again["update_ratio"] == h["update_ratio"]
    part = api.get(f"/api/runs/{rid}/health", params={"upto": 4}).json()
    assert part["steps"] == [0, 1, 2, 3, 4] and [row[:5] for row in h["norm"]] == part["norm"]
    for params, words in (
        ({"upto": -1}, ["upto"]),
        ({"windows": 0}, ["windows"]),
        ({"top_k": 65}, ["top_k"]),
    ):
        bad = api.get(f"/api/runs/{rid}/health", params=params)
        assert bad.status_code == 422 and all(x in bad.text for x in words), bad.text
    dead = api.get(f"/api/runs/{rid}/health/dead", params={"step": 99})
    assert dead.status_code == 422 and "step 99 was not captured" in dead.text


def test_a_filter_dead_from_init_is_flagged_and_healthy_ones_are_not(api: httpx.Client, stack: Stack) -> None:
    rid = "deadfilter01"
    write_dead_filter_run(LocalStore(stack.data_dir / "store"), rid, steps=6)
    h = api.get(f"/api/runs/{rid}/health", params={"windows": 2, "top_k": 4}).json()
    steps, w = fetch_all(api, rid)
    check_against_numpy(h, steps, w, top_k=4)
    conv1 = next(u for u in h["units"] if u["layer"] == "conv1")
    assert conv1["frozen"] == [{"unit": DEAD_FILTER, "since": 0}]
    assert all(conv1["last_change"][u] == 6 for u in range(4) if u != DEAD_FILTER)
    assert h["updates"]["update_is_scaled_gradient"] is True
    for win in h["top_moved"]:
        conv = next(lay for lay in win["layers"] if lay["layer"] == "conv1")
        assert conv["units"][-1] == DEAD_FILTER and conv["l2"][-1] == 0.0  # moved least: not at all
    d = api.get(f"/api/runs/{rid}/health/dead").json()  # default: the last captured step, the test split
    assert d["step"] == 6 and d["evaluated"] == 256
    dconv1 = next(lay for lay in d["layers"] if lay["layer"] == "conv1")
    assert dconv1["dead"] == [DEAD_FILTER] and dconv1["nonzero_fraction"][DEAD_FILTER] == 0.0
    assert all(dconv1["nonzero_fraction"][u] > 0 for u in range(4) if u != DEAD_FILTER)
    # Independently: the filter's ReLU output over every test input, from the served tensors and inputs.
    x = np.concatenate(
        [
            get_npy(
                api,
                "/api/datasets/synthetic/samples",
                split="test",
                indices=",".join(map(str, range(i, i + 128))),
            )
            for i in (0, 128)
        ]
    )
    wt, bt = w["conv1.weight"][-1], w["conv1.bias"][-1]
    patches = np.lib.stride_tricks.sliding_window_view(x[:, 0], (3, 3), axis=(1, 2))  # [N, 26, 26, 3, 3]
    for u in range(4):
        pre = np.einsum("nhwij,ij->nhw", patches.astype(np.float64), wt[u, 0].astype(np.float64)) + float(
            bt[u]
        )
        alive = bool((pre > 1e-6).any())
        assert alive == (u != DEAD_FILTER), u
