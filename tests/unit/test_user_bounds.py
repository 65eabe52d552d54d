"""Per-user bounds at run creation, in process: queued + running runs (429) and the raw capture a run plans
against the per-run limit and the user's remaining storage (422 suggesting a capture.every). Every limit is
read from the server (GET /api/limits)."""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from netlapse.api.main import create_app
from netlapse.core.settings import get_settings

SYNTHETIC_TRAIN = 1024


def _client(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, **env: str) -> TestClient:
    monkeypatch.setenv("NETLAPSE_STORE_URL", f"file://{tmp_path / 'store'}")
    monkeypatch.setenv("NETLAPSE_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("NETLAPSE_REDIS_URL", "redis://127.0.0.1:1/0")  # no trainer: accepted runs stay queued
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    get_settings.cache_clear()
    return TestClient(create_app(), base_url="http://127.0.0.1")


@pytest.fixture
def client(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[TestClient]:
    with _client(monkeypatch, tmp_path) as c:
        yield c
    get_settings.cache_clear()


def run(preset: str = "tiny-cnn", epochs: int = 1, batch_size: int = 512, every: int = 1) -> dict[str, Any]:
    return {
        "name": "bounds",
        "model": {"preset": preset},
        "dataset": "synthetic",
        "training": {"epochs": epochs, "batch_size": batch_size, "optimizer": "sgd", "lr": 0.01},
        "capture": {"every": every},
    }


def captured(total: int, every: int) -> int:  # step 0, every multiple of `every`, and the last step
    return 1 + total // every + (1 if total % every else 0)


def snapshot(client: TestClient, preset: str) -> int:
    p = next(p for p in client.get("/api/presets").json()["presets"] if p["name"] == preset)
    return 4 * p["params"]  # float32, no batchnorm buffers in these presets


def test_active_runs_per_user_at_the_bound_then_429(client: TestClient) -> None:
    cap = client.get("/api/limits").json()["user_max_active_runs"]
    for i in range(cap):  # just under: accepted
        assert client.post("/api/runs", json=run()).status_code == 201, i
    r = client.post("/api/runs", json=run())  # just over
    assert r.status_code == 429
    assert f"you have {cap} runs queued or running" in r.json()["detail"]
    assert "NETLAPSE_USER_MAX_ACTIVE_RUNS" in r.json()["detail"]
    first = client.get("/api/runs").json()["runs"][-1]["id"]
    assert client.post(f"/api/runs/{first}/cancel", json={}).json()["status"] == "cancelled"
    assert client.post("/api/runs", json=run()).status_code == 201  # a slot is free again


def test_the_issues_3_8_tb_run_is_refused_suggesting_a_capture_every(client: TestClient) -> None:
    limit = client.get("/api/limits").json()["run_max_raw_bytes"]
    snap = snapshot(client, "wide-cnn")
    total = 100 * SYNTHETIC_TRAIN  # 100 epochs at batch 1
    r = client.post("/api/runs", json=run("wide-cnn", epochs=100, batch_size=1))
    assert r.status_code == 422
    err = r.json()["detail"][0]
    assert err["loc"] == ["body", "capture", "every"] and "NETLAPSE_RUN_MAX_RAW_BYTES" in err["msg"]
    every = int(err["ctx"]["suggested_every"])
    assert f"capture.every >= {every}" in err["msg"]
    # the suggestion is exactly the boundary: it fits, one less does not
    assert captured(total, every) * snap <= limit < captured(total, every - 1) * snap
    assert client.post("/api/runs", json=run("wide-cnn", 100, 1, every - 1)).status_code == 422
    assert client.post("/api/runs", json=run("wide-cnn", 100, 1, every)).status_code == 201


def test_the_users_remaining_storage_bounds_a_new_run(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    env = {"NETLAPSE_USER_STORAGE_QUOTA_BYTES": "30000000000", "NETLAPSE_USER_MAX_ACTIVE_RUNS": "0"}
    with _client(monkeypatch, tmp_path, **env) as c:
        quota = c.get("/api/limits").json()["user_storage_quota_bytes"]
        snap = snapshot(c, "wide-cnn")
        total = 10 * math.ceil(SYNTHETIC_TRAIN / 4)  # 10 epochs at batch 4: 2,560 steps
        first = run("wide-cnn", 10, 4, every=20)
        held = captured(total, 20) * snap
        assert held < quota
        assert c.post("/api/runs", json=first).status_code == 201
        r = c.post("/api/runs", json=run("wide-cnn", 10, 4, every=1))
        assert r.status_code == 422
        err = r.json()["detail"][0]
        assert "remaining storage" in err["msg"] and "NETLAPSE_USER_STORAGE_QUOTA_BYTES" in err["msg"]
        every = int(err["ctx"]["suggested_every"])
        assert captured(total, every) * snap <= quota - held < captured(total, every - 1) * snap
        assert c.post("/api/runs", json=run("wide-cnn", 10, 4, every=every)).status_code == 201
    get_settings.cache_clear()
