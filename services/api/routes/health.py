"""GET /api/health: is the api up, can it reach Redis and the store."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from netlapse.api.deps import RedisDep, StoreDep

router = APIRouter(tags=["health"])


@router.get("/health")
def health(r: RedisDep, store: StoreDep) -> JSONResponse:
    """Status of api, redis and store; 503 when a dependency is down."""
    out = {"status": "ok", "api": "ok", "redis": "ok", "store": "ok", "store_url": store.url.split("?")[0]}
    try:
        r.ping()
    except Exception as exc:  # reported in the body, with the 503 below
        out["redis"] = f"error: {exc}"
    try:
        store.exists("runs/.health")
    except Exception as exc:  # reported in the body, with the 503 below
        out["store"] = f"error: {exc}"
    ok = out["redis"] == "ok" and out["store"] == "ok"
    if not ok:
        out["status"] = "degraded"
    return JSONResponse(out, status_code=200 if ok else 503)
