"""GET /api/health: is the api up, can it reach Redis and the store."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from netlapse.api.deps import AccountsDep, AuthFailed, RedisDep, SettingsDep, StoreDep, authenticate

router = APIRouter(tags=["health"])


@router.get("/health")
async def health(
    request: Request, r: RedisDep, store: StoreDep, settings: SettingsDep, accounts: AccountsDep
) -> JSONResponse:
    """Status of api, redis and store; 503 when a dependency is down. On a server with tokens, a caller without a
    valid one learns only ``{"status": "ok"|"degraded"}`` (no store location, no error text)."""
    out = {"status": "ok", "api": "ok", "redis": "ok", "store": "ok", "store_url": store.url.split("?")[0]}
    try:
        await asyncio.to_thread(r.ping)
    except Exception as exc:  # reported in the body, with the 503 below
        out["redis"] = f"error: {exc}"
    try:
        await asyncio.to_thread(store.exists, "runs/.health")
    except Exception as exc:  # reported in the body, with the 503 below
        out["store"] = f"error: {exc}"
    ok = out["redis"] == "ok" and out["store"] == "ok"
    if not ok:
        out["status"] = "degraded"
    status = 200 if ok else 503
    if settings.auth_required:
        try:
            await asyncio.to_thread(authenticate, request, settings, accounts)
        except AuthFailed:
            return JSONResponse({"status": out["status"]}, status_code=status)
    return JSONResponse(out, status_code=status)
