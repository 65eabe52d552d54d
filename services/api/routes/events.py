"""WS /api/runs/{id}/events: a run's Redis Stream bridged to a WebSocket, with replay from ``since``."""

from __future__ import annotations

import asyncio
import json
import time

import redis.asyncio as aioredis
from fastapi import APIRouter, WebSocket, WebSocketDisconnect

from netlapse.api.deps import AccountsDep, AuthFailed, SettingsDep, StoreDep, authenticate
from netlapse.core.auth import may_access
from netlapse.core.events import EventStream, is_trimmed, stream_key, valid_stream_id
from netlapse.core.runs import RunNotFound, RunRepository
from netlapse.core.schemas import TERMINAL_STATUSES, RunRecord

router = APIRouter(tags=["events"])
POLL_MS = 1000


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
    since: str | None = None,
) -> None:
    """Replay the run's events after ``since`` (all, if absent), then stream new ones; closes after the final status.

    When auth is on, the token comes as ``Authorization: Bearer`` or ``?token=`` (browsers cannot set headers on
    a WebSocket): without a valid one the server sends an error and closes with 4401; another user's run
    closes with 4404 like an unknown one."""
    repo = RunRepository(store)
    await websocket.accept()
    try:
        user = await asyncio.to_thread(authenticate, websocket, settings, accounts)
    except AuthFailed as exc:
        await websocket.send_json({"type": "error", "run_id": run_id, "data": {"detail": str(exc)}})
        await websocket.close(code=4401)
        return
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
    r = aioredis.from_url(settings.redis_url, decode_responses=True)
    key = stream_key(run_id)
    cursor = since or "0-0"
    try:
        first = await r.xrange(key, count=1)
        first_id = first[0][0] if first else None
        if since and is_trimmed(since, first_id):
            live = {k: json.loads(v) for k, v in (await r.hgetall(f"netlapse:run:{run_id}:live")).items()}
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
