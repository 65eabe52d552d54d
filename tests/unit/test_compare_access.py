"""Comparing runs needs every run named to be visible to the caller: another user's run answers the same 404 as
an unknown one, on every compare route (the api alone, with tokens required; no worker is reached)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from netlapse.api.main import create_app
from netlapse.core.auth import Accounts
from netlapse.core.modelspec import PRESETS
from netlapse.core.runs import RunRepository
from netlapse.core.schemas import CaptureConfig, RunRecord, TrainingConfig
from netlapse.core.settings import get_settings
from netlapse.core.store import LocalStore

ALICE_RUN, BOB_RUN, BOB_RUN2 = "alicerun01", "bobrun0001", "bobrun0002"


@pytest.fixture
def tokens(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[TestClient, dict[str, str]]]:
    monkeypatch.setenv("NETLAPSE_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("NETLAPSE_AUTH_REQUIRED", "1")
    monkeypatch.setenv("NETLAPSE_FRONTEND_DIR", str(tmp_path / "no-ui"))
    get_settings.cache_clear()
    store = LocalStore(tmp_path / "store")
    accounts = Accounts(store)
    toks = {u: accounts.add_user(u) for u in ("alice", "bob")}
    repo = RunRepository(store)
    for rid, owner in ((ALICE_RUN, "alice"), (BOB_RUN, "bob"), (BOB_RUN2, "bob")):
        repo.save(
            RunRecord(
                id=rid,
                name=rid,
                owner=owner,
                model=PRESETS["tiny-cnn"].spec,
                dataset="synthetic",
                training=TrainingConfig(),
                capture=CaptureConfig(),
                status="succeeded",
            )
        )
    try:
        yield TestClient(create_app(), base_url="http://127.0.0.1"), toks
    finally:
        get_settings.cache_clear()


def test_another_users_run_is_404_on_every_compare_route(tokens: tuple[TestClient, dict[str, str]]) -> None:
    c, tok = tokens
    bob = {"Authorization": f"Bearer {tok['bob']}"}
    requests = [
        ("GET", "/api/compare/diff/conv1.weight", {"a": f"{ALICE_RUN}:0", "b": f"{BOB_RUN}:0"}),
        ("GET", "/api/compare/diff/conv1.weight", {"a": f"{BOB_RUN}:0", "b": f"{ALICE_RUN}:0"}),
        ("GET", "/api/compare/scatter/conv1.weight", {"a": f"{BOB_RUN}:1", "b": f"{ALICE_RUN}:1"}),
        ("GET", "/api/compare/metrics", {"runs": f"{BOB_RUN},{ALICE_RUN}"}),
        ("POST", "/api/compare/activations", {"a": f"{BOB_RUN}:0", "b": f"{ALICE_RUN}:0", "layer": "conv1"}),
    ]
    for method, path, params in requests:
        if method == "GET":
            r = c.get(path, params=params, headers=bob)
        else:
            r = c.post(path, json=params, headers=bob)
        assert r.status_code == 404 and r.json()["detail"] == f"run {ALICE_RUN!r} not found", (path, r.text)
    # Bob's own two runs pass the access check (and then miss their tapes: nothing was trained here).
    r = c.get(
        "/api/compare/diff/conv1.weight", params={"a": f"{BOB_RUN}:0", "b": f"{BOB_RUN2}:0"}, headers=bob
    )
    assert r.status_code == 404 and "no committed snapshots" in r.json()["detail"], r.text
    m = c.get("/api/compare/metrics", params={"runs": f"{BOB_RUN},{BOB_RUN2}"}, headers=bob)
    assert m.status_code == 200 and [x["id"] for x in m.json()["runs"]] == [BOB_RUN, BOB_RUN2]
    # Without a token: 401 before anything else.
    assert c.get("/api/compare/metrics", params={"runs": BOB_RUN}).status_code == 401
