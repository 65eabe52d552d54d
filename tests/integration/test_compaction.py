"""Compaction end to end: the trainer sends the analyzer's compaction task when a run succeeds, the tape ends up
time-major with the step-major segments gone, and every API read path agrees with itself and stays exact."""

from __future__ import annotations

import time

import httpx
import numpy as np
import pytest

from netlapse.cli.stack import Stack
from netlapse.core.schemas import tape_prefix
from netlapse.core.store import LocalStore
from netlapse.core.tape import COMPACTION_NAME, TapeReader
from tests.integration.helpers import create_run, get_npy, wait_terminal

pytestmark = pytest.mark.integration


def test_a_finished_run_is_compacted_and_reads_stay_exact(api: httpx.Client, stack: Stack) -> None:
    run = create_run(api, name="compaction")
    rid = run["id"]
    run = wait_terminal(api, rid)
    assert run["status"] == "succeeded", run["error"]
    steps = api.get(f"/api/runs/{rid}/steps").json()["steps"]
    # Read through the api while the analyzer may be compacting: nothing may fail or change meanwhile.
    before = {s: get_npy(api, f"/api/runs/{rid}/tensors/fc1.weight", step=s) for s in steps}

    store = LocalStore(stack.data_dir / "store")
    prefix = tape_prefix(rid)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not store.exists(prefix + COMPACTION_NAME):
        time.sleep(0.2)
    assert store.exists(prefix + COMPACTION_NAME), "the trainer's compaction task never ran"
    reader = TapeReader(store, prefix)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and store.list(prefix + "segments/"):
        time.sleep(0.2)  # the replaced segments go right after the index write
    reader.refresh()
    assert reader.fully_compacted and reader.steps() == steps
    assert store.list(prefix + "segments/") == [], "replaced step-major segments are dropped"
    reader.verify()

    for s in steps:
        got = get_npy(api, f"/api/runs/{rid}/tensors/fc1.weight", step=s)
        assert np.array_equal(got.view(np.uint32), before[s].view(np.uint32)), s
    idx = [0, 17, 639, 5]
    traj = api.get(f"/api/runs/{rid}/trajectory/fc1.weight", params={"index": ",".join(map(str, idx))}).json()
    assert traj["steps"] == steps
    values = np.asarray(traj["values"], dtype=np.float32)
    want = np.stack([before[s].reshape(-1)[idx] for s in steps])
    assert np.array_equal(values.view(np.uint32), want.view(np.uint32))
    last = steps[-1]
    d = get_npy(api, f"/api/runs/{rid}/diff/fc1.weight", **{"from": 1, "to": last})
    assert np.array_equal(d.view(np.uint32), (before[last] - before[1]).view(np.uint32))


def test_a_lossy_run_stays_within_its_bound_and_is_left_step_major(api: httpx.Client, stack: Stack) -> None:
    run = create_run(api, name="lossy", capture={"every": 1, "mode": "lossy", "lossy_rel_error": 0.01})
    rid = run["id"]
    assert run["capture"]["mode"] == "lossy"
    run = wait_terminal(api, rid)
    assert run["status"] == "succeeded", run["error"]
    store = LocalStore(stack.data_dir / "store")
    reader = TapeReader(store, tape_prefix(rid))
    assert reader.lossy and reader.manifest["writer"]["lossy_rel_error"] == 0.01
    s = run["summary"]
    assert s["stored_bytes"] * 4 < s["raw_bytes"], "lossy mode stores far less than raw"
    steps = api.get(f"/api/runs/{rid}/steps").json()["steps"]
    key = get_npy(api, f"/api/runs/{rid}/tensors/fc1.weight", step=0)
    for step in steps:
        got = get_npy(api, f"/api/runs/{rid}/tensors/fc1.weight", step=step)
        assert got.shape == key.shape and np.isfinite(got).all()
    time.sleep(1.0)  # the compaction task the trainer sent has had time to look at the tape
    assert not store.exists(tape_prefix(rid) + COMPACTION_NAME), "lossy tapes are not rewritten"
    r = api.post(
        "/api/runs", json={**_body(), "capture": {"every": 1, "mode": "lossy", "lossy_rel_error": 0.5}}
    )
    assert r.status_code == 422 and "lossy_rel_error" in r.text


def _body() -> dict[str, object]:
    return {"name": "bad", "model": {"preset": "tiny-cnn"}, "dataset": "synthetic"}
