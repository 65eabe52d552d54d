"""WS /api/runs/{id}/events: a run's Redis Stream bridged to a WebSocket, with replay from ``since``."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable
from typing import cast

import redis.asyncio as aioredis
from fastapi import APIRouter, WebSocket, WebSocketDisconnect

from netlapse.api.deps import AccountsDep, AuthFailed, SettingsDep, StoreDep, TicketsDep, authenticate
from netlapse.core.auth import Accounts, WsTickets, may_access
from netlapse.core.events import EventStream, is_trimmed, stream_key, valid_stream_id
from netlapse.core.runs import RunNotFound, RunRepository
from netlapse.core.schemas import TERMINAL_STATUSES, RunRecord
from netlapse.core.settings import Settings

router = APIRouter(tags=["events"])
POLL_MS = 1000
POOL_CONNECTIONS = 512
"""Redis connections the WebSockets of one api process share (one per socket waiting in XREAD)."""
BAD_TICKET = (
    "this WebSocket ticket is unknown, expired or already used; get a new one with POST /api/ws-ticket"
)

_pools: dict[tuple[str, int], aioredis.BlockingConnectionPool] = {}
_open: dict[str, int] = {}  # open WebSockets per user, in this process


def shared_redis(url: str) -> aioredis.Redis:
    """A client on the process-wide pool for ``url`` (one pool per event loop: pools are bound to theirs)."""
    key = (url, id(asyncio.get_running_loop()))
    pool = _pools.get(key)
    if pool is None:
        pool = _pools[key] = aioredis.BlockingConnectionPool.from_url(
            url, decode_responses=True, max_connections=POOL_CONNECTIONS, timeout=10
        )
    return aioredis.Redis(connection_pool=pool)


async def websocket_user(
    websocket: WebSocket, settings: Settings, accounts: Accounts, tickets: WsTickets
) -> str:
    """The WebSocket's user: from a single-use ``?ticket=`` (browsers), else ``Authorization: Bearer``."""
    ticket = websocket.query_params.get("ticket")
    if settings.auth_required and ticket:
        user = await asyncio.to_thread(tickets.redeem, ticket)
        if user is None:
            raise AuthFailed(BAD_TICKET)
        return user
    return await asyncio.to_thread(authenticate, websocket, settings, accounts)


def _current_state(rec: RunRecord, live: dict) -> list[dict]:
    """What a client needs when it cannot replay: the status and the latest progress."""
    now = time.time()
    out = [
        {
            "id": "",
            "type": "status",
            "run_id": rec.id,
            "ts": now,
            "data": {"status": rec.status, "error": rec.error},
        }
    ]
    progress = live.get("progress") or rec.progress.model_dump()
    out.append({"id": "", "type": "progress", "run_id": rec.id, "ts": now, "data": progress})
    return out


@router.websocket("/runs/{run_id}/events")
async def run_events(
    websocket: WebSocket,
    run_id: str,
    settings: SettingsDep,
    store: StoreDep,
    accounts: AccountsDep,
    tickets: TicketsDep,
    since: str | None = None,
    ticket: str | None = None,
) -> None:
    """Replay the run's events after ``since`` (all, if absent), then stream new ones; closes after the final status.

    When auth is on, a browser authenticates with ``?ticket=`` from ``POST /api/ws-ticket`` (single use, short
    lived: browsers cannot set headers on a WebSocket, and a token never goes in a URL), other clients with
    ``Authorization: Bearer``. Without either the server sends an error and closes with 4401; another user's
    run closes with 4404 like an unknown one; more than ``ws_max_per_user`` sockets of one user close with 4429."""
    repo = RunRepository(store)
    await websocket.accept()
    try:
        user = await websocket_user(websocket, settings, accounts, tickets)
    except AuthFailed as exc:
        await websocket.send_json({"type": "error", "run_id": run_id, "data": {"detail": str(exc)}})
        await websocket.close(code=4401)
        return
    if _open.get(user, 0) >= settings.ws_max_per_user:
        detail = (
            f"at most {settings.ws_max_per_user} live event streams per user are open at once on this server "
            "(NETLAPSE_WS_MAX_PER_USER); close another tab or view"
        )
        await websocket.send_json({"type": "error", "run_id": run_id, "data": {"detail": detail}})
        await websocket.close(code=4429)
        return
    _open[user] = _open.get(user, 0) + 1
    try:
        await _serve(websocket, run_id, settings, repo, user, since)
    finally:
        _open[user] -= 1
        if _open[user] <= 0:
            del _open[user]


async def _serve(
    websocket: WebSocket, run_id: str, settings: Settings, repo: RunRepository, user: str, since: str | None
) -> None:
    try:
        rec = await asyncio.to_thread(repo.get, run_id)
        if not may_access(settings.auth_required, user, rec):
            raise RunNotFound(run_id)
    except (RunNotFound, ValueError):
        await websocket.send_json(
            {"type": "error", "run_id": run_id, "data": {"detail": f"run {run_id!r} not found"}}
        )
        await websocket.close(code=4404)
        return
    if since is not None and not valid_stream_id(since):
        await websocket.send_json(
            {
                "type": "error",
                "run_id": run_id,
                "data": {"detail": f"since={since!r} is not a stream id like 1700000000000-0"},
            }
        )
        await websocket.close(code=4422)
        return
    r = shared_redis(settings.redis_url)
    key = stream_key(run_id)
    cursor = since or "0-0"
    try:
        first = await r.xrange(key, count=1)
        first_id = first[0][0] if first else None
        if first_id is None and rec.status in TERMINAL_STATUSES:  # the stream expired after the run ended
            for ev in _current_state(rec, {}):
                await websocket.send_json(ev)
            await websocket.close(code=1000)
            return
        if since and is_trimmed(since, first_id):
            raw = await cast("Awaitable[dict[str, str]]", r.hgetall(f"netlapse:run:{run_id}:live"))
            live = {k: json.loads(v) for k, v in raw.items()}
            await websocket.send_json(
                {
                    "id": "",
                    "type": "trimmed",
                    "run_id": run_id,
                    "ts": time.time(),
                    "data": {
                        "since": since,
                        "oldest": first_id,
                        "detail": "events after `since` were trimmed; current state follows",
                    },
                }
            )
            for ev in _current_state(rec, live):
                await websocket.send_json(ev)
            last = await r.xrevrange(key, count=1)
            cursor = last[0][0] if last else "0-0"
        ended = rec.status in TERMINAL_STATUSES
        idle_polls = 0
        while True:
            res = await r.xread({key: cursor}, count=500, block=POLL_MS)
            entries = res[0][1] if res else []
            for sid, fields in entries:
                ev = EventStream.decode(run_id, sid, fields).model_dump()
                await websocket.send_json(ev)
                cursor = sid
                if ev["type"] == "status" and ev["data"].get("status") in TERMINAL_STATUSES:
                    ended = True
            if entries:
                idle_polls = 0
                continue
            idle_polls += 1
            if ended:
                break  # everything up to the final status has been sent
            if idle_polls % 5 == 0:  # a run whose stream went quiet: look at the record in case it ended
                rec = await asyncio.to_thread(repo.get, run_id)
                if rec.status in TERMINAL_STATUSES:
                    ended = True
        await websocket.close(code=1000)
    except WebSocketDisconnect:
        pass
    finally:
        await r.aclose()
