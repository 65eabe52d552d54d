"""Per-run and per-user bounds against a real stack: a runaway training task is stopped and its run marked failed
with the reason. Limits are read from the server (GET /api/limits), not copied."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from netlapse.cli.stack import Stack, free_port
from tests.integration.helpers import wait_terminal

TRAIN_LIMIT_S = 20  # a fresh worker process needs several seconds to import what training uses


def body(**training: Any) -> dict[str, Any]:
    return {
        "name": "limits",
        "model": {"preset": "tiny-cnn"},
        "dataset": "synthetic",
        "training": {"epochs": 1, "batch_size": 512, "optimizer": "sgd", "lr": 0.05, "seed": 0, **training},
        "capture": {"every": 1},
    }


@pytest.fixture(scope="module")
def limited(tmp_path_factory: pytest.TempPathFactory, artifacts_dir: Path) -> Iterator[httpx.Client]:
    s = Stack(
        data_dir=tmp_path_factory.mktemp("netlapse-limits"),
        api_port=free_port(),
        log_dir=artifacts_dir / "stack-logs-limits",
        extra_env={
            "NETLAPSE_TRAIN_TIME_LIMIT_S": str(TRAIN_LIMIT_S),
            "NETLAPSE_MAX_JSON_VALUES": "500",
            "NETLAPSE_MAX_RESPONSE_VALUES": "1000",
            "NETLAPSE_USER_MAX_ANALYSES": "1",
        },
    )
    s.start()
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{s.api_port}", timeout=60) as c:
            c.stack = s  # type: ignore[attr-defined]
            yield c
    finally:
        s.stop()


@pytest.fixture(scope="module")
def finished(limited: httpx.Client) -> dict[str, Any]:
    run = wait_terminal(limited, limited.post("/api/runs", json=body()).json()["id"])
    assert run["status"] == "succeeded", run
    return run


def test_a_run_over_the_training_time_limit_is_stopped_and_failed_with_the_reason(
    limited: httpx.Client,
) -> None:
    r = limited.post("/api/runs", json=body(epochs=100, batch_size=8))  # minutes of work here
    assert r.status_code == 201, r.text
    run = wait_terminal(limited, r.json()["id"], timeout=TRAIN_LIMIT_S + 120)
    assert run["status"] == "failed"
    assert f"limit of {TRAIN_LIMIT_S} s (NETLAPSE_TRAIN_TIME_LIMIT_S)" in run["error"], run["error"]
    # the trainer is free again: a short run afterwards succeeds
    ok = wait_terminal(limited, limited.post("/api/runs", json=body()).json()["id"])
    assert ok["status"] == "succeeded", ok


def test_responses_scaling_with_steps_and_elements_are_bounded(
    limited: httpx.Client, finished: dict[str, Any]
) -> None:
    rid = finished["id"]
    lim = limited.get("/api/limits").json()
    json_max, npy_max = lim["max_json_values"], lim["max_response_values"]
    steps = len(limited.get(f"/api/runs/{rid}/steps").json()["steps"])
    npy = {"Accept": "application/x-npy"}

    def trajectory(k: int, headers: dict[str, str] | None = None) -> httpx.Response:
        index = ",".join(str(i) for i in range(k))
        return limited.get(f"/api/runs/{rid}/trajectory/fc1.weight", params={"index": index}, headers=headers)

    k = json_max // steps  # just under the JSON bound, then just over
    assert trajectory(k).status_code == 200
    r = trajectory(k + 1)
    assert r.status_code == 422 and "NETLAPSE_MAX_JSON_VALUES" in r.text and "application/x-npy" in r.text
    assert trajectory(k + 1, npy).status_code == 200  # the same numbers as .npy are fine
    k = npy_max // steps  # just under the bound of any response, then just over (refused before decoding)
    assert trajectory(k, npy).status_code == 200
    r = trajectory(k + 1, npy)
    assert r.status_code == 422 and "NETLAPSE_MAX_RESPONSE_VALUES" in r.text
    # a whole tensor over the JSON bound: 422 as JSON, bytes as .npy (fc1.weight has 2,000 values)
    r = limited.get(f"/api/runs/{rid}/tensors/fc1.weight", params={"step": 0})
    assert r.status_code == 422 and "NETLAPSE_MAX_JSON_VALUES" in r.text
    r = limited.get(f"/api/runs/{rid}/tensors/fc1.weight", params={"step": 0}, headers=npy)
    assert r.status_code == 422 and "NETLAPSE_MAX_RESPONSE_VALUES" in r.text  # 2,000 > 1,000
    assert limited.get(f"/api/runs/{rid}/tensors/conv1.weight", params={"step": 0}).status_code == 200


def test_a_runs_event_stream_expires_after_it_ends(limited: httpx.Client, finished: dict[str, Any]) -> None:
    import redis

    from netlapse.core.events import ENDED_STREAM_TTL_S, stream_key
    from tests.integration.helpers import ws_events

    r = redis.Redis.from_url(limited.stack.redis_url)  # type: ignore[attr-defined]
    ttl = r.ttl(stream_key(finished["id"]))
    assert 0 < ttl <= ENDED_STREAM_TTL_S
    r.delete(stream_key(finished["id"]))  # as if it had expired: a late viewer still learns how the run ended
    events = ws_events(limited, finished["id"], timeout=30)
    assert [e["type"] for e in events] == ["status", "progress"]
    assert events[0]["data"]["status"] == "succeeded"


def test_one_user_cannot_pin_the_api_with_analyses(limited: httpx.Client, finished: dict[str, Any]) -> None:
    """While a user's analyses are in flight, more of theirs get 429 at once. The requests are differences
    the analyzer computes (not cached, not answered in the api), and the analyzer is paused (SIGSTOP) while
    they arrive, so the admitted ones stay in flight however fast analyses are (trajectories, read in the api,
    had become fast enough to answer before the next request arrived, and this test saw no 429)."""
    import itertools
    import math
    import os
    import signal
    import threading
    import time

    rid = finished["id"]
    lim = limited.get("/api/limits").json()
    cap = lim["user_max_analyses"]
    n = cap + 7
    steps = limited.get(f"/api/runs/{rid}/steps").json()["steps"]
    # Only tensors whose difference fits a JSON answer here (a larger one is a 422 by design, and which request
    # is admitted is up to the race: the run has 3 steps, so the asks reach past the biases).
    tensors = limited.get(f"/api/runs/{rid}/tensors").json()["tensors"]
    names = [t["name"] for t in tensors if math.prod(t["shape"]) <= lim["max_json_values"]]
    asks = list(itertools.product(names, itertools.combinations(steps, 2)))[:n]
    assert len(asks) == n  # distinct requests: none is answered from the cache
    barrier = threading.Barrier(n)
    codes: list[int] = []

    def ask(i: int) -> None:
        name, (a, b) = asks[i]
        barrier.wait()
        r = limited.get(f"/api/runs/{rid}/diff/{name}", params={"from": a, "to": b})
        codes.append(r.status_code)
        if r.status_code == 429:
            assert "NETLAPSE_USER_MAX_ANALYSES" in r.json()["detail"] and r.headers["retry-after"] == "2"

    analyzer = limited.stack.procs["analyzer"]  # type: ignore[attr-defined]
    os.kill(analyzer.pid, signal.SIGSTOP)
    try:
        threads = [threading.Thread(target=ask, args=(i,)) for i in range(n)]
        for t in threads:
            t.start()
        deadline = time.monotonic() + 60
        while codes.count(429) < n - cap and time.monotonic() < deadline:
            time.sleep(0.05)
        assert codes.count(429) == n - cap and 200 not in codes  # the admitted ones are still waiting
    finally:
        os.kill(analyzer.pid, signal.SIGCONT)
    for t in threads:
        t.join(120)
    assert sorted(codes) == [200] * cap + [429] * (n - cap)
    r = limited.get(f"/api/runs/{rid}/trajectory/fc1.weight", params={"index": "999"})
    assert r.status_code == 200  # the slots were given back


def test_scatter_points_at_the_bound(limited: httpx.Client, finished: dict[str, Any]) -> None:
    spec = limited.get("/openapi.json").json()
    op = spec["paths"]["/api/runs/{run_id}/scatter/{name}"]["get"]
    limit = next(p for p in op["parameters"] if p["name"] == "max_points")["schema"]["maximum"]
    url = f"/api/runs/{finished['id']}/scatter/conv1.weight"
    last = limited.get(f"/api/runs/{finished['id']}/steps").json()["steps"][-1]
    ok = limited.get(url, params={"from": 0, "to": last, "max_points": limit})
    assert ok.status_code == 200, ok.text
    over = limited.get(url, params={"from": 0, "to": last, "max_points": limit + 1})
    assert over.status_code == 422 and over.json()["detail"][0]["loc"] == ["query", "max_points"]
