"""The acceptance scenario through the HTTP API with real workers: create, follow, read steps, tensors, diffs."""

from __future__ import annotations

import math

import httpx
import numpy as np

from tests.conftest import requires_mnist
from tests.integration.helpers import create_run, get_npy, wait_terminal, ws_events


def test_run_captures_every_batch_and_diff_is_exact(api: httpx.Client) -> None:
    run = create_run(api)
    assert run["status"] == "queued"
    rid = run["id"]

    events = ws_events(api, rid)
    types = [e["type"] for e in events]
    statuses = [e["data"]["status"] for e in events if e["type"] == "status"]
    assert statuses[0] == "queued" and "running" in statuses and statuses[-1] == "succeeded", statuses
    assert "progress" in types and "epoch" in types and "snapshot" in types
    ids = [e["id"] for e in events]
    assert len(ids) == len(set(ids)), "duplicate events"

    run = wait_terminal(api, rid)
    assert run["status"] == "succeeded", run["error"]
    per_epoch = math.ceil(1024 / 128)
    total = 2 * per_epoch
    assert run["progress"]["step"] == total and run["progress"]["total_steps"] == total
    progress = [e["data"] for e in events if e["type"] == "progress"]
    assert progress[-1]["step"] == total
    s = run["summary"]
    assert s["train_seconds"] > 0 and s["capture_wait_seconds"] >= 0
    assert s["raw_bytes"] > 0 and 0 < s["stored_bytes"] and s["val_accuracy"] is not None
    assert s["final_loss"] is not None and s["steps_captured"] == total + 1

    # Reconnecting with `since` replays exactly what came after that id: nothing lost, nothing twice.
    mid = len(events) // 2
    replay = ws_events(api, rid, since=events[mid]["id"])
    assert [e["id"] for e in replay] == ids[mid + 1 :]
    assert replay[-1]["type"] == "status" and replay[-1]["data"]["status"] == "succeeded"

    steps = api.get(f"/api/runs/{rid}/steps").json()["steps"]
    assert steps == list(range(total + 1))

    tensors = {t["name"]: t for t in api.get(f"/api/runs/{rid}/tensors").json()["tensors"]}
    assert tensors["conv1.weight"]["shape"] == [4, 1, 3, 3] and tensors["conv1.weight"]["kind"] == "conv2d"

    for a, b in [(0, total), (3, 7), (5, 5)]:
        for name in ("conv1.weight", "fc1.weight"):
            va = get_npy(api, f"/api/runs/{rid}/tensors/{name}", step=a)
            vb = get_npy(api, f"/api/runs/{rid}/tensors/{name}", step=b)
            d = get_npy(api, f"/api/runs/{rid}/diff/{name}", **{"from": a, "to": b})
            assert d.dtype == np.float32 and d.shape == va.shape
            assert np.array_equal((vb - va).view(np.uint32), d.view(np.uint32)), (name, a, b)
    # JSON carries the same float32 values.
    j = api.get(f"/api/runs/{rid}/diff/conv1.weight", params={"from": 0, "to": total}).json()
    d = get_npy(api, f"/api/runs/{rid}/diff/conv1.weight", **{"from": 0, "to": total})
    assert j["shape"] == [4, 1, 3, 3] and j["dtype"] == "float32"
    assert np.array_equal(np.asarray(j["data"], dtype=np.float32).reshape(j["shape"]), d)
    st = j["stats"]
    assert st["increased"] + st["decreased"] + st["unchanged"] == d.size
    assert st["increased"] == int((d > 0).sum()) and len(st["per_filter_l2"]) == 4
    assert math.isclose(st["max"], float(d.max()), rel_tol=1e-6)
    t = api.get(f"/api/runs/{rid}/tensors/conv1.weight", params={"step": 3}).json()
    assert np.array_equal(
        np.asarray(t["data"], np.float32).reshape(t["shape"]),
        get_npy(api, f"/api/runs/{rid}/tensors/conv1.weight", step=3),
    )

    m = api.get(f"/api/runs/{rid}/metrics").json()
    assert [x["step"] for x in m["steps"]] == list(range(1, total + 1))
    assert [e["epoch"] for e in m["epochs"]] == [1, 2]
    # Learning happened: the synthetic task is learnable by tiny-cnn.
    assert m["steps"][-1]["loss"] < m["steps"][0]["loss"]


def test_capture_every_n_keeps_first_and_last(api: httpx.Client) -> None:
    run = create_run(
        api, training={"epochs": 1, "batch_size": 100, "lr": 0.05, "seed": 1}, capture={"every": 4}
    )
    run = wait_terminal(api, run["id"])
    assert run["status"] == "succeeded", run["error"]
    total = math.ceil(1024 / 100)
    steps = api.get(f"/api/runs/{run['id']}/steps").json()["steps"]
    assert steps == [0, 4, 8, total]
    r = api.get(f"/api/runs/{run['id']}/tensors/conv1.weight", params={"step": 5})
    assert r.status_code == 404 and "0..11 every 4" in r.json()["detail"]


def test_cancel_stops_a_running_run(api: httpx.Client) -> None:
    run = create_run(api, training={"epochs": 20, "batch_size": 8, "lr": 0.01, "seed": 2})
    rid = run["id"]
    for e in ws_events(api, rid, timeout=5):
        if e["type"] == "progress":
            break
    r = api.post(f"/api/runs/{rid}/cancel", json={})
    assert r.status_code == 200, r.text
    run = wait_terminal(api, rid, timeout=60)
    assert run["status"] == "cancelled"
    assert run["progress"]["step"] < run["progress"]["total_steps"]
    steps = api.get(f"/api/runs/{rid}/steps").json()["steps"]
    assert steps[0] == 0 and steps[-1] == run["progress"]["step"]
    assert api.post(f"/api/runs/{rid}/cancel", json={}).status_code == 409


@requires_mnist
def test_readme_sequence_paper_cnn_on_mnist(api: httpx.Client) -> None:
    """The README's curl sequence: paper-cnn on mnist-10k, 1 epoch, batch 128, SGD 0.01 momentum 0.9, seed 0."""
    run = create_run(
        api,
        name="paper-mnist",
        model={"preset": "paper-cnn"},
        dataset="mnist-10k",
        training={"epochs": 1, "batch_size": 128, "optimizer": "sgd", "lr": 0.01, "momentum": 0.9, "seed": 0},
    )
    run = wait_terminal(api, run["id"], timeout=600)
    assert run["status"] == "succeeded", run["error"]
    steps = api.get(f"/api/runs/{run['id']}/steps").json()["steps"]
    assert steps == list(range(63 + 1))  # 8,000 training digits / 128 = 63 batches
    a = get_npy(api, f"/api/runs/{run['id']}/tensors/conv1.weight", step=0)
    b = get_npy(api, f"/api/runs/{run['id']}/tensors/conv1.weight", step=63)
    d = get_npy(api, f"/api/runs/{run['id']}/diff/conv1.weight", **{"from": 0, "to": 63})
    assert np.array_equal((b - a).view(np.uint32), d.view(np.uint32))
    assert run["summary"]["val_accuracy"] > 0.5
