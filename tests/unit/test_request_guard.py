"""Cross-site requests and DNS rebinding against the api in process: Content-Type, Origin and Host checks."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from starlette.testclient import WebSocketDenialResponse

from netlapse.api.limits import host_name
from netlapse.api.main import create_app
from netlapse.core.settings import get_settings

WS = "ws://127.0.0.1:8000"
RUN = {
    "name": "csrf",
    "model": {"preset": "tiny-cnn"},
    "dataset": "synthetic",
    "training": {"epochs": 1, "batch_size": 512, "optimizer": "sgd", "lr": 0.05, "seed": 0},
}


def _client(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, **env: str) -> TestClient:
    monkeypatch.setenv("NETLAPSE_STORE_URL", f"file://{tmp_path / 'store'}")
    monkeypatch.setenv("NETLAPSE_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("NETLAPSE_REDIS_URL", "redis://127.0.0.1:1/0")  # nothing listens: no run is queued
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    get_settings.cache_clear()
    return TestClient(create_app(), base_url="http://127.0.0.1:8000")


@pytest.fixture
def client(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[TestClient]:
    with _client(monkeypatch, tmp_path) as c:
        yield c
    get_settings.cache_clear()


def test_a_run_posted_without_json_content_type_is_415_and_not_created(client: TestClient) -> None:
    import json

    body = json.dumps(RUN)
    for ctype in (None, "text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x"):
        headers = {"content-type": ctype} if ctype else {}
        r = client.post("/api/runs", content=body, headers=headers)
        assert r.status_code == 415, (ctype, r.text)
        assert "Content-Type: application/json" in r.json()["detail"]
    assert client.get("/api/runs").json()["total"] == 0
    r = client.post("/api/runs/nosuchrun0001/cancel")  # a bodyless POST is a "simple" cross-site request too
    assert r.status_code == 415
    # JSON passes the guard (then 404 for the unknown run); so does a DELETE without a body
    assert client.post("/api/runs/nosuchrun0001/cancel", json={}).status_code == 404
    assert client.delete("/api/runs/nosuchrun0001").status_code == 404
    r = client.request(
        "DELETE", "/api/runs/nosuchrun0001", content=b"x=1", headers={"content-type": "text/plain"}
    )
    assert r.status_code == 415


def test_binary_bodies_only_on_the_sdk_upload_routes(client: TestClient) -> None:
    octet = {"content-type": "application/octet-stream"}
    assert client.post("/api/runs", content=b"{}", headers=octet).status_code == 415
    r = client.put("/api/ingest/runs/nosuchrun0001/tape/segments/seg-0.bin", content=b"\0" * 8, headers=octet)
    assert r.status_code != 415, r.text  # past the guard: the route itself answers


def test_a_foreign_origin_is_403_and_the_own_origin_passes(client: TestClient) -> None:
    evil = {"origin": "http://evil.example", "content-type": "application/json"}
    r = client.post("/api/runs", json=RUN, headers=evil)
    assert r.status_code == 403 and "NETLAPSE_ALLOWED_ORIGINS" in r.json()["detail"]
    assert client.get("/api/runs", headers={"origin": "http://evil.example"}).status_code == 403
    assert client.get("/api/runs", headers={"origin": "null"}).status_code == 403
    # the api's own page (same host and port as Host), and requests without Origin (curl, the Python client)
    assert client.get("/api/runs", headers={"origin": "http://127.0.0.1:8000"}).status_code == 200
    assert client.get("/api/runs", headers={"origin": "http://127.0.0.1:9999"}).status_code == 403
    assert client.get("/api/runs").status_code == 200
    assert client.get("/api/runs").json()["total"] == 0


def test_a_cross_site_websocket_is_refused(client: TestClient) -> None:
    # browsers apply no CORS to WebSockets: the handshake itself is refused, before any auth or run lookup
    with pytest.raises(WebSocketDenialResponse) as refused:
        with client.websocket_connect(
            WS + "/api/runs/nosuchrun0001/events", headers={"origin": "http://evil.example"}
        ):
            pass
    assert refused.value.status_code == 403 and "evil.example" in refused.value.json()["detail"]


def test_an_unknown_host_is_400_dns_rebinding(client: TestClient) -> None:
    r = client.get("/api/health", headers={"host": "attacker.example"})
    assert r.status_code == 400 and "NETLAPSE_ALLOWED_HOSTS" in r.json()["detail"]
    assert client.get("/", headers={"host": "attacker.example:8000"}).status_code == 400
    for ok in ("localhost:8000", "127.0.0.1", "LOCALHOST"):
        assert client.get("/api/health", headers={"host": ok}).status_code in (200, 503), ok
    with pytest.raises(WebSocketDenialResponse) as refused:
        with client.websocket_connect(
            WS + "/api/runs/nosuchrun0001/events", headers={"host": "attacker.example"}
        ):
            pass
    assert refused.value.status_code == 400


def test_allowed_hosts_and_origins_are_settings(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    env = {
        "NETLAPSE_ALLOWED_HOSTS": "lab.example, 127.0.0.1",
        "NETLAPSE_ALLOWED_ORIGINS": "http://dev.example:5173",
    }
    with _client(monkeypatch, tmp_path, **env) as c:
        assert c.get("/api/runs", headers={"host": "lab.example:8000"}).status_code == 200
        assert (
            c.get("/api/runs", headers={"host": "localhost"}).status_code == 400
        )  # the list replaces the default
        assert c.get("/api/runs", headers={"origin": "http://dev.example:5173"}).status_code == 200
        assert c.get("/api/runs", headers={"origin": "http://dev.example:5174"}).status_code == 403
    with _client(monkeypatch, tmp_path, NETLAPSE_ALLOWED_HOSTS="*") as c:
        assert c.get("/api/runs", headers={"host": "anything.example"}).status_code == 200
    get_settings.cache_clear()


def test_host_name_parsing() -> None:
    assert host_name("lab.example:8000") == "lab.example"
    assert host_name("[::1]:8000") == "::1"
    assert host_name("LOCALHOST") == "localhost"
    assert host_name("::1") == "::1"
