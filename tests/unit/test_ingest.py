"""The ingest side that needs no services: upload body limits, which tape keys an SDK may write, and which
segments an index object lists (whatever the tape format's layout)."""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.testclient import TestClient

from netlapse.api.routes.ingest import SERVER_OWNED, TAPE_KEY_RE, UploadBodyLimit, _segment_refs


def app_with_limits() -> TestClient:
    app = FastAPI()
    app.add_middleware(UploadBodyLimit, limit=100, upload_limit=1000)

    @app.put("/api/ingest/runs/{run_id}/tape/{key:path}")
    async def upload(request: Request) -> dict[str, int]:
        return {"size": len(await request.body())}

    @app.post("/api/runs")
    async def create(request: Request) -> dict[str, int]:
        return {"size": len(await request.body())}

    return TestClient(app)


def test_uploads_get_their_own_body_limit_and_everything_else_keeps_the_api_one() -> None:
    c = app_with_limits()
    assert c.put("/api/ingest/runs/r/tape/segments/a.seg", content=b"x" * 900).json() == {"size": 900}
    r = c.put("/api/ingest/runs/r/tape/segments/a.seg", content=b"x" * 1001)
    assert r.status_code == 413 and "at most 1000 bytes" in r.json()["detail"]
    assert c.post("/api/runs", content=b"x" * 90).json() == {"size": 90}
    r = c.post("/api/runs", content=b"x" * 101)
    assert r.status_code == 413 and "at most 100 bytes" in r.json()["detail"]


def test_an_sdk_writes_only_its_tape_objects() -> None:
    ok = ["manifest.json", "index/00000003.json", "segments/000000000000-000000000015.seg"]
    bad = [
        "../run.json",
        "index/../../auth/x.json",
        "segments/.hidden.seg",
        "/abs.json",
        "tape.bin",
        "Manifest.json",
    ]
    assert all(TAPE_KEY_RE.match(k) for k in ok)
    assert not any(TAPE_KEY_RE.match(k) for k in bad)
    assert all(k.startswith(SERVER_OWNED) for k in ("compaction.json", "compact/000-001.0000.tm"))


def test_segment_entries_are_found_in_any_index_layout() -> None:
    manifest = {
        "format": 2,
        "segments": [{"key": "segments/a.seg", "size": 3, "sha256": "x"}],
        "complete": True,
    }
    part = {"seq": 1, "segment": {"key": "segments/b.seg", "size": 4, "sha256": "y"}, "sha256": "z"}
    assert [e["key"] for e in _segment_refs(manifest, [])] == ["segments/a.seg"]
    assert [e["key"] for e in _segment_refs(part, [])] == ["segments/b.seg"]
    assert _segment_refs({"tensors": [{"name": "w", "key": "not-a-segment"}]}, []) == []
