"""A trainer killed mid-run: the run ends failed with a readable error, and every committed snapshot stays readable."""

from __future__ import annotations

import os
import signal
import subprocess
import time

import httpx
import numpy as np

from netlapse.cli.stack import Stack
from tests.integration.helpers import create_run, get_npy, wait_terminal


def pool_children(pid: int) -> list[int]:
    out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout
    return [int(p) for p in out.split()]


def test_killed_trainer_leaves_a_failed_run_with_its_committed_tape(api: httpx.Client, stack: Stack) -> None:
    run = create_run(api, training={"epochs": 30, "batch_size": 8, "lr": 0.01, "seed": 5})
    rid = run["id"]
    deadline = time.monotonic() + 60
    steps: list[int] = []
    while time.monotonic() < deadline:  # wait until at least two segments are committed
        r = api.get(f"/api/runs/{rid}/steps")
        steps = r.json()["steps"] if r.status_code == 200 else []
        if len(steps) > 40:
            break
        time.sleep(0.2)
    assert len(steps) > 40, "no segment was committed"
    children = pool_children(stack.procs["trainer"].pid)
    assert children, "trainer pool process not found"
    for pid in children:
        os.kill(pid, signal.SIGKILL)

    run = wait_terminal(api, rid, timeout=90)
    assert run["status"] == "failed", run
    assert "trainer stopped" in run["error"]
    assert not run["tape_complete"]
    steps = api.get(f"/api/runs/{rid}/steps").json()["steps"]
    assert steps == list(range(len(steps))) and len(steps) > 40  # a prefix, nothing missing inside it
    first = get_npy(api, f"/api/runs/{rid}/tensors/conv1.weight", step=0)
    last = get_npy(api, f"/api/runs/{rid}/tensors/conv1.weight", step=steps[-1])
    d = get_npy(api, f"/api/runs/{rid}/diff/conv1.weight", **{"from": 0, "to": steps[-1]})
    assert np.array_equal((last - first).view(np.uint32), d.view(np.uint32))

    # The trainer is back and takes new work.
    ok = wait_terminal(
        api, create_run(api, training={"epochs": 1, "batch_size": 256, "seed": 6})["id"], timeout=90
    )
    assert ok["status"] == "succeeded"
