"""The SDK against the real stack: a user's own loop in a separate process, read back through the API.

The loop (tests/integration/sdk_train.py) saves its own copy of every tensor after every real optimizer
step; the server must return exactly those bits, at exactly those steps.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import torch

import netlapse
from netlapse.cli.stack import Stack, free_port
from netlapse.core.tape.container import index_part, index_part_key
from netlapse.sdk.transport import IngestClient
from tests.conftest import REPO
from tests.integration.helpers import get_npy, wait_terminal, ws_events

pytestmark = pytest.mark.integration

TRAIN = [sys.executable, "-m", "tests.integration.sdk_train"]


def env_for(stack: Stack) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("NETLAPSE_")}
    env["NETLAPSE_URL"] = f"http://127.0.0.1:{stack.api_port}"
    env["PYTHONUNBUFFERED"] = "1"
    return env


def train(stack: Stack, out: Path, *extra: str, timeout: float = 300) -> dict[str, Any]:
    p = subprocess.run(
        [*TRAIN, "--out", str(out), *extra],
        cwd=REPO,
        env=env_for(stack),
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert p.returncode == 0, p.stderr[-4000:]
    return json.loads((out / "run.json").read_text())


def copies(out: Path, steps: int) -> dict[int, dict[str, np.ndarray]]:
    res = {}
    for k in range(steps + 1):
        with np.load(out / f"step{k}.npz") as z:
            res[k] = {name: z[name] for name in z.files}
    return res


def same_bits(a: np.ndarray, b: np.ndarray) -> bool:
    return a.shape == b.shape and a.dtype == b.dtype and a.tobytes() == b.tobytes()


def assert_tape_matches(api: httpx.Client, run_id: str, want: dict[int, dict[str, np.ndarray]]) -> None:
    """Every tensor at every step through the API, bit-identical to the loop's copies; nothing else captured."""
    assert api.get(f"/api/runs/{run_id}/steps").json()["steps"] == sorted(want)
    names = list(want[0])
    listed = api.get(f"/api/runs/{run_id}/tensors").json()["tensors"]
    assert [t["name"] for t in listed] == names  # module paths, in the model's order
    for step, snap in want.items():
        for name, value in snap.items():
            got = get_npy(api, f"/api/runs/{run_id}/tensors/{name}", step=step)
            assert same_bits(got, value), f"{name} at step {step} differs from the loop's copy"


def test_sdk_run_bit_identical_diff_exact_metrics_complete(
    api: httpx.Client, stack: Stack, tmp_path: Path
) -> None:
    out = tmp_path / "loop"
    info = train(stack, out, "--steps", "9", "--skip-at", "3")
    run_id, steps = info["run_id"], info["steps"]
    assert steps == 8  # 9 iterations, GradScaler skipped one optimizer step: no snapshot for it

    run = wait_terminal(api, run_id, timeout=60)
    assert run["status"] == "succeeded" and run["source"] == "sdk" and run["tape_complete"]
    assert run["summary"]["steps_captured"] == steps + 1
    assert run["sdk"]["modules"]["block.a"] == "Conv2d" and run["sdk"]["buffers"] is True
    assert run["sdk"]["program"] is True and run["sdk"]["eval_data"] is True
    assert run["sdk"]["config"] == {"lr": 0.01, "steps": 9}
    assert run["progress"]["step"] == steps

    want = copies(out, steps)
    assert "block.bn_a.running_mean" in want[0] and "stem.bias" in want[0]
    assert same_bits(want[0]["stem.bias"], want[steps]["stem.bias"])  # frozen, recorded all the same
    assert_tape_matches(api, run_id, want)

    kinds = {t["name"]: t for t in api.get(f"/api/runs/{run_id}/tensors").json()["tensors"]}
    assert kinds["block.a.weight"]["layer"] == "block.a" and kinds["block.a.weight"]["kind"] == "conv2d"
    assert kinds["block.bn_a.running_var"]["kind"] == "batchnorm" and kinds["head.bias"]["kind"] == "linear"

    for name in ("block.a.weight", "head.weight", "block.bn_b.running_mean"):
        d = get_npy(api, f"/api/runs/{run_id}/diff/{name}", **{"from": 0, "to": steps})
        assert same_bits(d, want[steps][name] - want[0][name]), f"diff of {name} is not exact"

    # The exported program + eval data serve Eq. 1 through the same route as server runs (docs/sdk.md).
    r = api.post(f"/api/runs/{run_id}/activations", json={"step": steps, "layer": "block.a", "per_label": 5})
    assert r.status_code == 200, r.text
    act = r.json()
    assert act["labels"] == [0, 1, 2] and len(act["activation"]) == 4  # block.a has 4 filters

    logged = json.loads((out / "logged.json").read_text())
    metrics = api.get(f"/api/runs/{run_id}/metrics").json()
    assert metrics["steps"] == logged  # every logged row, exactly, at its optimizer step

    listed = {r["id"]: r for r in api.get("/api/runs").json()["runs"]}
    assert listed[run_id]["source"] == "sdk" and listed[run_id]["name"] == "sdk-resnet"


def test_offline_run_pushed_gives_identical_tensors_and_pushing_twice_one_run(
    api: httpx.Client, stack: Stack, tmp_path: Path
) -> None:
    out, runs_dir = tmp_path / "loop", tmp_path / "netlapse-runs"
    info = train(stack, out, "--steps", "6", "--skip-at", "-1", "--offline", str(runs_dir))
    run_id, steps = info["run_id"], info["steps"]
    assert Path(info["path"]) == runs_dir / run_id and (runs_dir / run_id / "run.json").is_file()
    assert api.get(f"/api/runs/{run_id}").status_code == 404  # offline: the server has not heard of it

    # An earlier push was interrupted after the first segment and its index part: the push resumes there.
    local = runs_dir / run_id / "tape"
    segs = sorted((local / "segments").iterdir())
    first = IngestClient(f"http://127.0.0.1:{stack.api_port}")
    first.create_run({"id": run_id, "name": "sdk-resnet", "offline": True})
    first.put_tape_object(run_id, f"segments/{segs[0].name}", segs[0].read_bytes())
    entry = json.loads((local / "manifest.json").read_text())["segments"][0]
    first.put_tape_object(run_id, index_part_key(0), json.dumps(index_part(0, entry)).encode())
    first.close()
    left = sum(p.stat().st_size for p in segs[1:])

    push = [sys.executable, "-m", "netlapse.cli.main", "push", str(runs_dir / run_id)]
    env = {**env_for(stack), "NETLAPSE_URL": ""}
    server = ["--server", f"http://127.0.0.1:{stack.api_port}"]
    pushed = subprocess.run([*push, *server], cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert pushed.returncode == 0, pushed.stderr
    assert f"run {run_id} is succeeded" in pushed.stdout
    assert (
        f"tape {left / 1024:.1f} KiB / {left / 1024:.1f} KiB" in pushed.stderr
    )  # the rest only, with progress

    run = api.get(f"/api/runs/{run_id}").json()
    assert run["status"] == "succeeded" and run["source"] == "sdk" and run["sdk"]["offline"] is True
    want = copies(out, steps)
    assert_tape_matches(api, run_id, want)
    assert api.get(f"/api/runs/{run_id}/metrics").json()["steps"] == json.loads(
        (out / "logged.json").read_text()
    )

    total = api.get("/api/runs").json()["total"]
    again = subprocess.run([*push, *server], cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert again.returncode == 0, again.stderr
    assert "already on the server" in again.stderr
    assert api.get("/api/runs").json()["total"] == total
    assert [r["id"] for r in api.get("/api/runs").json()["runs"]].count(run_id) == 1


def test_sigkill_of_the_training_process_fails_the_run_and_keeps_committed_steps(
    api: httpx.Client, stack: Stack, tmp_path: Path
) -> None:
    out = tmp_path / "loop"
    proc = subprocess.Popen(
        [*TRAIN, "--out", str(out), "--steps", "400", "--sleep", "0.2", "--segment-steps", "2"],
        cwd=REPO,
        env=env_for(stack),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    started = time.monotonic()
    try:
        deadline = started + 120
        run_id, committed = None, []
        # Live longer than the heartbeat timeout (15 s): heartbeats, not luck, keep the run alive.
        while time.monotonic() < deadline and (len(committed) < 5 or time.monotonic() - started < 20):
            assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
            if run_id is None and (out / "run.json").exists():
                run_id = json.loads((out / "run.json").read_text())["run_id"]
            if run_id is not None:
                r = api.get(f"/api/runs/{run_id}/steps")
                committed = r.json()["steps"] if r.status_code == 200 else []
            time.sleep(0.2)
        assert run_id is not None and len(committed) >= 5, "the loop never committed 5 steps"
        assert time.monotonic() - started >= 20
        assert api.get(f"/api/runs/{run_id}").json()["status"] == "running"
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    killed = time.monotonic()

    while time.monotonic() - killed < 120:
        run = api.get(f"/api/runs/{run_id}").json()
        if run["status"] != "running":
            break
        time.sleep(0.5)
    took = time.monotonic() - killed
    assert run["status"] == "failed", f"still {run['status']} {took:.0f} s after SIGKILL"
    assert "training process lost" in run["error"]
    assert took < 60  # heartbeat timeout 15 s (tests/conftest.py) + the check every second, with slack

    steps = api.get(f"/api/runs/{run_id}/steps").json()["steps"]
    assert steps[: len(committed)] == committed and steps == list(range(len(steps)))
    want = copies(out, steps[-1])
    for step in (0, steps[len(steps) // 2], steps[-1]):
        for name in ("block.a.weight", "head.bias", "block.bn_b.running_var"):
            got = get_npy(api, f"/api/runs/{run_id}/tensors/{name}", step=step)
            assert same_bits(got, want[step][name])
    r = api.post(f"/api/ingest/runs/{run_id}/heartbeat", json={})  # a late heartbeat does not revive it
    assert r.status_code == 200 and r.json()["status"] == "failed"

    # The live view's stream: the metrics as the loop logged them, snapshots, and the final status.
    events = ws_events(api, run_id, timeout=60)
    rows = [row for e in events if e["type"] == "metrics" for row in e["data"]["steps"]]
    logged = json.loads((out / "logged.json").read_text())
    assert rows and rows == logged[: len(rows)]  # a prefix: the last second of rows may not have left
    assert any(e["type"] == "snapshot" for e in events)
    assert events[-1]["type"] == "status" and events[-1]["data"]["status"] == "failed"


def test_serve_opens_the_ui_and_api_on_an_offline_runs_directory(tmp_path: Path) -> None:
    """`netlapse serve DIR`: the directory's runs are the server's runs, read in place."""
    runs_dir = tmp_path / "netlapse-runs"
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with netlapse.init(name="served", dir=runs_dir) as run:
        run.watch(model, opt)
        for _ in range(3):
            opt.zero_grad()
            model(torch.randn(5, 4)).sum().backward()
            opt.step()
            run.log({"loss": 1.0})
    final = {k: v.detach().numpy().copy() for k, v in model.state_dict().items()}

    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("NETLAPSE_")}
    proc = subprocess.Popen(
        [sys.executable, "-m", "netlapse.cli.main", "serve", str(runs_dir), "--port", str(port)],
        cwd=REPO,
        env={**env, "NETLAPSE_FRONTEND_DIR": str(REPO / "frontend" / "dist")},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as c:
            deadline = time.monotonic() + 120
            while True:
                assert proc.poll() is None, proc.stdout.read() if proc.stdout else ""
                try:
                    if c.get("/api/health").status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                assert time.monotonic() < deadline, "netlapse serve did not come up"
                time.sleep(0.5)
            runs = c.get("/api/runs").json()["runs"]
            assert [(r["id"], r["name"], r["source"], r["status"]) for r in runs] == [
                (run.id, "served", "sdk", "succeeded")
            ]
            assert c.get(f"/api/runs/{run.id}/steps").json()["steps"] == [0, 1, 2, 3]
            for name, value in final.items():
                assert same_bits(get_npy(c, f"/api/runs/{run.id}/tensors/{name}", step=3), value)
            assert c.get("/").status_code == 200
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)
    assert (runs_dir / run.id / "run.json").is_file()  # the runs stay where they were
