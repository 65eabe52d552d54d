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

TRAIN_LIMIT_S = 6


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
        extra_env={"NETLAPSE_TRAIN_TIME_LIMIT_S": str(TRAIN_LIMIT_S)},
    )
    s.start()
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{s.api_port}", timeout=60) as c:
            yield c
    finally:
        s.stop()


def test_a_run_over_the_training_time_limit_is_stopped_and_failed_with_the_reason(
    limited: httpx.Client,
) -> None:
    r = limited.post("/api/runs", json=body(epochs=40, batch_size=8))  # minutes of work on this machine
    assert r.status_code == 201, r.text
    run = wait_terminal(limited, r.json()["id"], timeout=TRAIN_LIMIT_S + 120)
    assert run["status"] == "failed"
    assert f"limit of {TRAIN_LIMIT_S} s (NETLAPSE_TRAIN_TIME_LIMIT_S)" in run["error"], run["error"]
    # the trainer is free again: a short run afterwards succeeds
    ok = wait_terminal(limited, limited.post("/api/runs", json=body()).json()["id"])
    assert ok["status"] == "succeeded", ok
