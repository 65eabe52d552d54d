"""GET /api/me: who the caller is; POST /api/ws-ticket: a single-use ticket for the events WebSocket."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from netlapse.api.deps import CurrentUser, SettingsDep, TicketsDep

router = APIRouter(tags=["users"])


@router.get("/me")
def me(user: CurrentUser, settings: SettingsDep) -> dict[str, Any]:
    """The calling user (``local`` when auth is off); 401 when this server needs a token and none valid came."""
    return {"user": user, "auth_required": settings.auth_required}


@router.post("/ws-ticket")
def ws_ticket(user: CurrentUser, settings: SettingsDep, tickets: TicketsDep) -> dict[str, Any]:
    """A ticket for ``WS /api/runs/{id}/events?ticket=…``: it works once, within ``expires_in`` seconds, so the
    API token itself never goes in a URL. With auth off it is ``null`` (the WebSocket needs none)."""
    if not settings.auth_required:
        return {"ticket": None, "expires_in": 0}
    return {"ticket": tickets.issue(user), "expires_in": settings.ws_ticket_ttl_s}
