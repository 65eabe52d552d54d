"""Every request limit the README states, at its boundary: just under is accepted, just over refused. The limits
are read from what the server enforces (GET /api/limits, the OpenAPI document, the settings it runs with)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from netlapse.api.main import create_app
from netlapse.core import auth as core_auth
from netlapse.core.auth import Accounts
from netlapse.core.settings import get_settings
from netlapse.core.store import LocalStore

RUN = {
    "name": "edge",
    "model": {"preset": "tiny-cnn"},
    "dataset": "synthetic",
    "training": {"epochs": 1, "batch_size": 512, "optimizer": "sgd", "lr": 0.05},
}


@pytest.fixture
def client(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[TestClient]:
    monkeypatch.setenv("NETLAPSE_STORE_URL", f"file://{tmp_path / 'store'}")
    monkeypatch.setenv("NETLAPSE_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("NETLAPSE_REDIS_URL", "redis://127.0.0.1:1/0")  # no trainer: accepted runs stay queued
    monkeypatch.setenv("NETLAPSE_USER_MAX_ACTIVE_RUNS", "0")
    get_settings.cache_clear()
    with TestClient(create_app(), base_url="http://127.0.0.1") as c:
        yield c
    get_settings.cache_clear()


def padded(n: int) -> bytes:
    """A valid run request of exactly ``n`` bytes (JSON allows any amount of whitespace)."""
    body = json.dumps(RUN).encode()
    assert len(body) < n
    return body[:-1] + b" " * (n - len(body)) + b"}"


def test_request_body_size_at_the_bound(client: TestClient) -> None:
    limit = client.get("/api/limits").json()["max_body_bytes"]
    headers = {"content-type": "application/json"}
    r = client.post("/api/runs", content=padded(limit), headers=headers)
    assert r.status_code == 201, r.text[:300]
    r = client.post("/api/runs", content=padded(limit + 1), headers=headers)
    assert r.status_code == 413 and f"at most {limit} bytes" in r.json()["detail"]


def test_listed_runs_at_the_bound(client: TestClient) -> None:
    limit = client.get("/api/limits").json()["max_listed_runs"]
    spec = client.get("/openapi.json").json()
    param = next(p for p in spec["paths"]["/api/runs"]["get"]["parameters"] if p["name"] == "limit")
    assert param["schema"]["maximum"] == limit  # the documented bound is the enforced one
    assert client.post("/api/runs", json=RUN).status_code == 201
    ok = client.get("/api/runs", params={"limit": limit})
    assert ok.status_code == 200 and ok.json()["total"] == 1
    over = client.get("/api/runs", params={"limit": limit + 1})
    assert over.status_code == 422 and over.json()["detail"][0]["loc"] == ["query", "limit"]


def test_sample_indices_at_the_bound(client: TestClient) -> None:
    limit = client.get("/api/limits").json()["max_sample_indices"]
    many = ",".join(str(i % 256) for i in range(limit))
    ok = client.get("/api/datasets/synthetic/samples", params={"indices": many})
    assert ok.status_code == 200 and len(ok.json()["labels"]) == limit
    over = client.get("/api/datasets/synthetic/samples", params={"indices": many + ",0"})
    assert over.status_code == 422 and f"between 1 and {limit} indices" in over.text


def test_a_revoked_token_works_until_the_cache_time_and_not_after(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ttl = get_settings().auth_cache_s  # what the api builds its Accounts with (netlapse.api.deps)
    clock = [1000.0]
    monkeypatch.setattr(core_auth.time, "monotonic", lambda: clock[0])
    store = LocalStore(tmp_path / "store")
    admin, api = Accounts(store), Accounts(store, cache_ttl_s=ttl)
    token = admin.add_user("alice")
    assert api.authenticate(token) == "alice"  # looked up and cached at t = 1000
    admin.revoke("alice")  # from another process (`netlapse user revoke`): the api's cache does not know
    clock[0] = 1000.0 + ttl - 0.01
    assert api.authenticate(token) == "alice"  # just under the cache time: still accepted
    clock[0] = 1000.0 + ttl + 0.01
    assert api.authenticate(token) is None  # just over: refused
    # an unknown token is remembered as briefly: a new one issued meanwhile works at once (another hash)
    assert api.authenticate("no-such-token") is None
    fresh = admin.issue_token("alice")
    assert api.authenticate(fresh) == "alice"
