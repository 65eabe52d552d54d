"""The whole stack on the S3 backend (moto's server), scaled out: two trainers and two analyzers on one Redis.

Six runs from three users submitted at once all succeed, none is trained twice, analyses are answered
meanwhile; a run is then read end to end through S3 (steps, tensors, diff, activations, metrics, the
WebSocket); and the api restarted mid-run loses no event for a WebSocket client that reconnects with
``since``."""

from __future__ import annotations

import json
import os
import signal
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import redis
from websockets.sync.client import connect

from netlapse.cli.stack import Stack, free_port, wait_for
from netlapse.core.auth import Accounts
from netlapse.core.events import EventStream
from tests.integration.conftest_s3 import S3Server, s3_server  # noqa: F401 - the fixture
from tests.integration.helpers import create_run, get_npy, wait_terminal

USERS = ("ada", "bo", "cy")


@pytest.fixture(scope="module")
def s3_stack(
    tmp_path_factory: pytest.TempPathFactory,
    s3_server: S3Server,  # noqa: F811 - the fixture imported above
    artifacts_dir: Path,
) -> Iterator[tuple[Stack, dict[str, str]]]:
    bucket = f"scale-{uuid.uuid4().hex[:12]}"
    accounts = Accounts(s3_server.store(bucket))
    tokens = {u: accounts.add_user(u) for u in USERS}
    stack = Stack(
        data_dir=tmp_path_factory.mktemp("scale-out"),
        api_port=free_port(),
        log_dir=artifacts_dir / "scale-out-logs",
        trainers=2,
        analyzers=2,
        extra_env={
            "NETLAPSE_S3_ENDPOINT": s3_server.endpoint,
            "NETLAPSE_S3_ACCESS_KEY": s3_server.access_key,
            "NETLAPSE_S3_SECRET_KEY": s3_server.secret_key,
            "NETLAPSE_S3_BUCKET": bucket,
            "NETLAPSE_AUTH_REQUIRED": "1",
            "NETLAPSE_SEGMENT_MAX_STEPS": "16",
        },
    )
    stack.start()
    yield stack, tokens
    stack.stop()


def client(stack: Stack, token: str) -> httpx.Client:
    return httpx.Client(
        base_url=f"http://127.0.0.1:{stack.api_port}",
        timeout=60,
        headers={"Authorization": f"Bearer {token}"},
    )


def ws_collect(
    stack: Stack, token: str, run_id: str, since: str | None, until: Any, timeout: float = 240
) -> list:
    """Events from the run's WebSocket until ``until(events)`` is true or the server closes the socket."""
    url = f"ws://127.0.0.1:{stack.api_port}/api/runs/{run_id}/events" + (f"?since={since}" if since else "")
    out: list[dict[str, Any]] = []
    headers = {"Authorization": f"Bearer {token}"}
    with connect(url, open_timeout=20, close_timeout=5, additional_headers=headers) as ws:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and not until(out):
            try:
                out.append(json.loads(ws.recv(timeout=max(0.1, deadline - time.monotonic()))))
            except Exception:  # closed by the server after the final status
                break
    return out


def test_six_runs_from_three_users_on_two_trainers(s3_stack: tuple[Stack, dict[str, str]]) -> None:
    stack, tokens = s3_stack
    apis = {u: client(stack, t) for u, t in tokens.items()}
    runs: dict[str, str] = {}
    for i in range(2):
        for u in USERS:
            rid = create_run(apis[u], name=f"{u}-{i}", training={"epochs": 2, "batch_size": 64, "seed": i})[
                "id"
            ]
            runs[rid] = u
    answered_meanwhile = 0
    done: dict[str, dict[str, Any]] = {}
    deadline = time.monotonic() + 480
    while len(done) < len(runs) and time.monotonic() < deadline:
        for rid, u in runs.items():
            if rid in done:
                continue
            run = apis[u].get(f"/api/runs/{rid}").json()
            if run["status"] in ("succeeded", "failed", "cancelled"):
                done[rid] = run
                if len(done) < len(runs):  # others are still queued or training: an analysis must be answered
                    last = run["progress"]["total_steps"]
                    r = apis[u].get(f"/api/runs/{rid}/diff/conv1.weight", params={"from": 0, "to": last})
                    assert r.status_code == 200, r.text
                    answered_meanwhile += 1
        time.sleep(0.3)
    assert len(done) == 6, f"runs not finished: {set(runs) - set(done)}"
    assert answered_meanwhile >= 1
    for rid, run in done.items():
        assert run["status"] == "succeeded" and run["error"] is None, run
        assert run["attempts"] == 1, f"run {rid} was taken more than once"
        assert run["owner"] == runs[rid]
        steps = apis[runs[rid]].get(f"/api/runs/{rid}/steps").json()["steps"]
        assert steps == list(range(run["progress"]["total_steps"] + 1))
    # Each user sees exactly their two runs.
    for u, api in apis.items():
        mine = {r["id"] for r in api.get("/api/runs").json()["runs"]}
        assert mine == {rid for rid, owner in runs.items() if owner == u}
    # Both trainers worked (runs were spread, not queued behind one worker).
    logs = (
        [(stack.log_dir / f"{n}.log").read_text() for n in ("trainer", "trainer2")] if stack.log_dir else []
    )
    assert all("'status': 'succeeded'" in text for text in logs), "a trainer took no run"


def test_a_run_end_to_end_on_s3_and_the_websocket(s3_stack: tuple[Stack, dict[str, str]]) -> None:
    stack, tokens = s3_stack
    api = client(stack, tokens["ada"])
    rid = create_run(api, training={"epochs": 2, "batch_size": 64, "seed": 9})["id"]
    run = wait_terminal(api, rid, timeout=300)
    assert run["status"] == "succeeded", run
    last = run["progress"]["total_steps"]
    names = [t["name"] for t in api.get(f"/api/runs/{rid}/tensors").json()["tensors"]]
    assert "conv1.weight" in names
    first = get_npy(api, f"/api/runs/{rid}/tensors/conv1.weight", step=0)
    end = get_npy(api, f"/api/runs/{rid}/tensors/conv1.weight", step=last)
    diff = get_npy(api, f"/api/runs/{rid}/diff/conv1.weight", **{"from": 0, "to": last})
    assert np.array_equal((end - first).view(np.uint32), diff.view(np.uint32))
    r = api.post(f"/api/runs/{rid}/activations", json={"step": last, "layer": "conv1", "per_label": 3})
    assert r.status_code == 200, r.text
    assert len(r.json()["activation"]) == 4  # tiny-cnn's conv1 has 4 filters
    metrics = api.get(f"/api/runs/{rid}/metrics").json()
    assert [m["step"] for m in metrics["steps"]] == list(range(1, last + 1)) and len(metrics["epochs"]) == 2
    events = ws_collect(stack, tokens["ada"], rid, None, lambda ev: False, timeout=60)
    types = [e["type"] for e in events]
    assert types.count("epoch") == 2 and "progress" in types and "snapshot" in types
    statuses = [e["data"]["status"] for e in events if e["type"] == "status"]
    assert statuses[0] == "queued" and statuses[-1] == "succeeded", statuses


def test_api_restarted_mid_run_loses_no_websocket_event(s3_stack: tuple[Stack, dict[str, str]]) -> None:
    stack, tokens = s3_stack
    api = client(stack, tokens["bo"])
    rid = create_run(api, training={"epochs": 3, "batch_size": 16, "seed": 2})["id"]
    before = ws_collect(
        stack, tokens["bo"], rid, None, lambda ev: sum(e["type"] == "progress" for e in ev) >= 5, timeout=240
    )
    assert sum(e["type"] == "progress" for e in before) >= 5
    os.kill(stack.procs["api"].pid, signal.SIGKILL)
    stack.procs["api"].wait(10)
    assert stack.supervise() == ["api"]
    wait_for(lambda: api.get("/api/health").status_code == 200, 60, "restarted api")
    after = ws_collect(stack, tokens["bo"], rid, before[-1]["id"], lambda ev: False, timeout=300)
    assert after and after[-1]["type"] == "status" and after[-1]["data"]["status"] == "succeeded", after[-3:]
    assert stack.redis_url is not None
    stream = EventStream(redis.Redis.from_url(stack.redis_url, decode_responses=True))
    everything = stream.read(rid, "0-0", count=100_000)
    ids = [e["id"] for e in before + after]
    assert ids == [e.id for e in everything], "an event was missed or repeated across the reconnect"
