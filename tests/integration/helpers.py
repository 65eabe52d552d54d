"""Helpers for integration tests that drive the real api."""

from __future__ import annotations

import io
import json
import time
from typing import Any

import httpx
import numpy as np
from websockets.sync.client import connect


def create_run(api: httpx.Client, **overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "name": "it",
        "model": {"preset": "tiny-cnn"},
        "dataset": "synthetic",
        "training": {
            "epochs": 2,
            "batch_size": 128,
            "optimizer": "sgd",
            "lr": 0.05,
            "momentum": 0.9,
            "seed": 0,
        },
        "capture": {"every": 1},
    }
    body.update(overrides)
    r = api.post("/api/runs", json=body)
    assert r.status_code == 201, r.text
    return r.json()


def wait_terminal(api: httpx.Client, run_id: str, timeout: float = 180) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        run = api.get(f"/api/runs/{run_id}").json()
        if run["status"] in ("succeeded", "failed", "cancelled"):
            return run
        time.sleep(0.2)
    raise AssertionError(f"run {run_id} did not finish in {timeout} s")


def ws_events(
    api: httpx.Client, run_id: str, since: str | None = None, timeout: float = 180
) -> list[dict[str, Any]]:
    """All events the server sends until it closes the socket (after the final status)."""
    url = str(api.base_url).replace("http://", "ws://") + f"/api/runs/{run_id}/events"
    if since:
        url += f"?since={since}"
    out = []
    with connect(url, open_timeout=10, close_timeout=5) as ws:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                msg = ws.recv(timeout=max(0.1, deadline - time.monotonic()))
            except Exception:  # the server closed after the final status
                break
            out.append(json.loads(msg))
    return out


def get_npy(api: httpx.Client, path: str, **params: Any) -> np.ndarray:
    r = api.get(path, params=params, headers={"Accept": "application/x-npy"})
    assert r.status_code == 200, r.text
    return np.load(io.BytesIO(r.content), allow_pickle=False)
