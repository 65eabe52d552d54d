"""`netlapse runs …` against the real stack: each command as a user runs it (a subprocess), its output and exit code."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from netlapse.cli.runs import follow, poll_events
from netlapse.cli.stack import Stack, free_port
from netlapse.client import Client
from netlapse.core.auth import Accounts
from netlapse.core.runs import RunRepository, new_run_id
from netlapse.core.schemas import RunRecord
from netlapse.core.settings import Settings
from netlapse.core.store import LocalStore, store_from_settings
from tests.conftest import REPO
from tests.integration.helpers import create_run, get_npy, wait_terminal

pytestmark = pytest.mark.integration

SPEC: dict[str, Any] = {
    "name": "cli-run",
    "model": {"preset": "tiny-cnn"},
    "dataset": "synthetic",
    "training": {"epochs": 2, "batch_size": 128, "optimizer": "sgd", "lr": 0.05, "momentum": 0.9, "seed": 0},
    "capture": {"every": 1},
}


def netlapse(
    stack: Stack, *args: str, env: dict[str, str | None] | None = None, timeout: float = 240
) -> subprocess.CompletedProcess[str]:
    """``netlapse ARGS`` in a fresh process, the server named by $NETLAPSE_URL (unless ``env`` says otherwise)."""
    e: dict[str, str | None] = {k: v for k, v in os.environ.items() if not k.startswith("NETLAPSE_")}
    e["NETLAPSE_URL"] = f"http://127.0.0.1:{stack.api_port}"
    e.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "netlapse.cli.main", *args],
        env={k: v for k, v in e.items() if v is not None},
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.fixture(scope="module")
def finished(stack: Stack, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A run made with `runs create SPEC.json --follow`: the command's result and the run."""
    spec = tmp_path_factory.mktemp("cli") / "spec.json"
    spec.write_text(json.dumps(SPEC))
    res = netlapse(stack, "runs", "create", str(spec), "--follow")
    return {"res": res, "id": res.stdout.strip()}


def test_create_and_follow_draws_progress_and_exits_with_success(
    finished: dict[str, Any], api: httpx.Client
) -> None:
    res = finished["res"]
    assert res.returncode == 0, res.stderr
    run = api.get(f"/api/runs/{finished['id']}").json()
    assert run["status"] == "succeeded" and run["name"] == "cli-run"
    total = 2 * 1024 // 128
    lines = res.stderr.splitlines()
    assert any(f"{total}/{total} steps 100%" in line and "loss " in line for line in lines), res.stderr
    assert lines[-1] == f"run {finished['id']} succeeded"


def test_follow_of_a_finished_run(stack: Stack, finished: dict[str, Any]) -> None:
    res = netlapse(stack, "runs", "follow", finished["id"])
    assert res.returncode == 0
    assert "16/16 steps 100%  loss " in res.stderr and "succeeded" in res.stderr


def test_list_and_show(stack: Stack, finished: dict[str, Any]) -> None:
    rid = finished["id"]
    res = netlapse(stack, "runs", "list")
    assert res.returncode == 0, res.stderr
    header, *rows = res.stdout.splitlines()
    assert header.split()[:4] == ["ID", "NAME", "STATUS", "SOURCE"]
    row = next(r for r in rows if r.startswith(rid))
    assert row.split()[1:6] == ["cli-run", "succeeded", "server", "tiny-cnn", "synthetic"]
    assert "16/16" in row
    as_json = json.loads(netlapse(stack, "runs", "list", "--json").stdout)
    assert rid in [r["id"] for r in as_json]
    show = netlapse(stack, "runs", "show", rid)
    assert show.returncode == 0
    assert f"run       {rid}  cli-run" in show.stdout and "status    succeeded" in show.stdout
    assert json.loads(netlapse(stack, "runs", "show", rid, "--json").stdout)["id"] == rid


def test_export_is_bit_exact(
    stack: Stack, finished: dict[str, Any], api: httpx.Client, tmp_path: Path
) -> None:
    rid, out = finished["id"], tmp_path / "w" / "conv1.npz"
    res = netlapse(
        stack, "runs", "export", rid, "--tensor", "conv1.weight", "--steps", "3:6", "--out", str(out)
    )
    assert res.returncode == 0, res.stderr
    assert "wrote" in res.stdout and "[4, 1, 3, 3] at 4 step(s) 3..6" in res.stdout
    with np.load(out, allow_pickle=False) as z:
        assert z["steps"].tolist() == [3, 4, 5, 6]
        assert str(z["name"]) == "conv1.weight"
        for i, s in enumerate(z["steps"]):
            expected = get_npy(api, f"/api/runs/{rid}/tensors/conv1.weight", step=int(s))
            assert z["values"][i].dtype == expected.dtype
            assert z["values"][i].tobytes() == expected.tobytes()
    whole = tmp_path / "all.npz"
    assert netlapse(stack, "runs", "export", rid, "--tensor", "fc1.bias", "--out", str(whole)).returncode == 0
    with np.load(whole, allow_pickle=False) as z:
        assert z["steps"].tolist() == list(range(17)) and z["values"].shape == (17, 10)


def test_export_errors_say_what_to_fix(stack: Stack, finished: dict[str, Any], tmp_path: Path) -> None:
    rid = finished["id"]
    res = netlapse(stack, "runs", "export", rid, "--tensor", "conv9.weight", "--out", str(tmp_path / "x.npz"))
    assert res.returncode == 2
    assert "has no tensor 'conv9.weight'; its tensors: conv1.weight, conv1.bias" in res.stderr
    res = netlapse(
        stack,
        "runs",
        "export",
        rid,
        "--tensor",
        "conv1.weight",
        "--steps",
        "40:50",
        "--out",
        str(tmp_path / "y"),
    )
    assert res.returncode == 2 and "no captured step in that range (captured: 0..16)" in res.stderr
    assert not (tmp_path / "x.npz").exists() and not (tmp_path / "y").exists()


def test_cancel_then_follow_exits_3_then_delete(stack: Stack, api: httpx.Client) -> None:
    run = create_run(api, training={**SPEC["training"], "epochs": 100})
    res = netlapse(stack, "runs", "cancel", run["id"])
    assert res.returncode == 0, res.stderr
    assert res.stdout.startswith(f"run {run['id']}: ")
    follow = netlapse(stack, "runs", "follow", run["id"])
    assert follow.returncode == 3, follow.stderr
    assert follow.stderr.splitlines()[-1] == f"run {run['id']} cancelled"
    again = netlapse(stack, "runs", "cancel", run["id"])
    assert again.returncode == 2 and "409" in again.stderr and "already cancelled" in again.stderr
    deleted = netlapse(stack, "runs", "delete", run["id"])
    assert deleted.returncode == 0 and f"deleted run {run['id']}" in deleted.stdout
    gone = netlapse(stack, "runs", "show", run["id"])
    assert gone.returncode == 2 and "404" in gone.stderr and "not found" in gone.stderr


def test_delete_of_a_running_run_is_refused(stack: Stack, api: httpx.Client) -> None:
    run = create_run(api, training={**SPEC["training"], "epochs": 100})
    try:
        res = netlapse(stack, "runs", "delete", run["id"])
        assert res.returncode == 2
        assert "cancel it first" in res.stderr
        assert api.get(f"/api/runs/{run['id']}").status_code == 200
    finally:
        api.post(f"/api/runs/{run['id']}/cancel", json={})
        wait_terminal(api, run["id"])


def test_follow_of_a_failed_run_exits_1(stack: Stack) -> None:
    store = store_from_settings(Settings(data_dir=stack.data_dir))
    rec = RunRecord.model_validate(
        {
            "id": new_run_id(),
            "name": "broke",
            "status": "failed",
            "error": "training process lost",
            "model": {
                "input_shape": [1, 28, 28],
                "num_classes": 10,
                "layers": [{"type": "flatten"}, {"type": "linear", "out_features": 10}],
            },
            "dataset": "synthetic",
            "training": SPEC["training"],
        }
    )
    RunRepository(store).create(rec)
    res = netlapse(stack, "runs", "follow", rec.id)
    assert res.returncode == 1
    assert res.stderr.splitlines()[-1] == f"run {rec.id} failed: training process lost"


def test_server_from_the_alias_the_flag_and_unreachable(stack: Stack, finished: dict[str, Any]) -> None:
    url = f"http://127.0.0.1:{stack.api_port}"
    alias = netlapse(
        stack, "runs", "show", finished["id"], env={"NETLAPSE_URL": None, "NETLAPSE_SERVER": url}
    )
    assert alias.returncode == 0 and finished["id"] in alias.stdout
    flag = netlapse(
        stack, "runs", "--server", url, "show", finished["id"], env={"NETLAPSE_URL": "http://127.0.0.1:9"}
    )
    assert flag.returncode == 0
    dead = f"http://127.0.0.1:{free_port()}"
    res = netlapse(stack, "runs", "list", env={"NETLAPSE_URL": dead})
    assert res.returncode == 2 and f"cannot reach {dead}" in res.stderr
    bad = netlapse(stack, "runs", "create", "/nonexistent/spec.json")
    assert bad.returncode == 2 and "cannot read /nonexistent/spec.json" in bad.stderr


def test_follow_without_websockets_polls_the_run(stack: Stack, api: httpx.Client) -> None:
    """Where the `websockets` package is missing (a light SDK install), follow polls the run record instead."""
    run = create_run(api)
    out = io.StringIO()
    with Client(f"http://127.0.0.1:{stack.api_port}") as c:
        final = follow(c, run["id"], out, events=lambda cl, rid: poll_events(cl, rid, every_s=0.3))
    assert final["status"] == "succeeded"
    assert "16/16 steps 100%  loss " in out.getvalue().splitlines()[-1]


def test_follow_an_sdk_run_while_it_trains(stack: Stack, tmp_path: Path) -> None:
    out = tmp_path / "loop"
    e = {k: v for k, v in os.environ.items() if not k.startswith("NETLAPSE_")}
    e["NETLAPSE_URL"] = f"http://127.0.0.1:{stack.api_port}"
    loop = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tests.integration.sdk_train",
            "--out",
            str(out),
            "--steps",
            "16",
            "--sleep",
            "1.0",
        ],
        env=e,
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 120
        while not (out / "run.json").exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        run_id = json.loads((out / "run.json").read_text())["run_id"]
        res = netlapse(stack, "runs", "follow", run_id)
    finally:
        loop.wait(timeout=120)
    assert res.returncode == 0, res.stderr
    steps = json.loads((out / "run.json").read_text())["steps"]
    assert f"step {steps}  loss " in res.stderr and res.stderr.splitlines()[-1] == f"run {run_id} succeeded"
    row = next(r for r in netlapse(stack, "runs", "list").stdout.splitlines() if r.startswith(run_id))
    assert row.split()[1:5] == ["sdk-resnet", "succeeded", "sdk", "own"]


@pytest.fixture(scope="module")
def auth_stack(tmp_path_factory: pytest.TempPathFactory, artifacts_dir: Path) -> Iterator[tuple[Stack, str]]:
    """A stack that requires tokens, and a token of its one user."""
    data = tmp_path_factory.mktemp("netlapse-cli-auth")
    token = Accounts(LocalStore(data / "store")).add_user("carol")
    s = Stack(
        data_dir=data,
        api_port=free_port(),
        log_dir=artifacts_dir / "stack-logs-cli-auth",
        extra_env={"NETLAPSE_AUTH_REQUIRED": "1", "NETLAPSE_STORE_URL": f"file://{data / 'store'}"},
    )
    s.start()
    try:
        yield s, token
    finally:
        s.stop()


def test_commands_on_a_server_that_requires_tokens(auth_stack: tuple[Stack, str], tmp_path: Path) -> None:
    stack, token = auth_stack
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps({**SPEC, "training": {**SPEC["training"], "epochs": 1}}))
    refused = netlapse(stack, "runs", "list")
    assert refused.returncode == 2 and "401" in refused.stderr and "Authorization: Bearer" in refused.stderr
    # the token from the environment, the event stream through a single-use ticket
    res = netlapse(stack, "runs", "create", str(spec), "--follow", env={"NETLAPSE_TOKEN": token})
    assert res.returncode == 0, res.stderr
    assert "8/8 steps 100%" in res.stderr
    listed = netlapse(stack, "runs", "--token", token, "list")
    assert listed.returncode == 0 and res.stdout.strip() in listed.stdout
