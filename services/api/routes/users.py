"""GET /api/me: who the caller is, and whether this server asks for tokens."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from netlapse.api.deps import CurrentUser, SettingsDep

router = APIRouter(tags=["users"])


@router.get("/me")
def me(user: CurrentUser, settings: SettingsDep) -> dict[str, Any]:
    """The calling user (``local`` when auth is off); 401 when this server needs a token and none valid came."""
    return {"user": user, "auth_required": settings.auth_required}
