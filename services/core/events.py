"""Run events over Redis Streams: one stream per run, so a client that reconnects replays what it missed."""

from __future__ import annotations

import json
import time
from typing import Any, Literal, cast

import redis
from pydantic import BaseModel, Field

ENDED = frozenset({"succeeded", "failed", "cancelled"})
ENDED_STREAM_TTL_S = 3600
"""A run's event stream and live hash expire this long after its final status (late viewers get the current
state from the run record instead)."""

EventType = Literal["status", "progress", "metrics", "snapshot", "epoch", "analysis", "error", "trimmed"]


class Event(BaseModel):
    """One event; ``id`` is the Redis stream id, the cursor a client passes back as ``since``."""

    id: str = ""
    type: EventType
    run_id: str
    ts: float = Field(default_factory=time.time)
    data: dict[str, Any] = {}


def stream_key(run_id: str) -> str:
    return f"netlapse:run:{run_id}:events"


def live_key(run_id: str) -> str:
    return f"netlapse:run:{run_id}:live"


def cancel_key(run_id: str) -> str:
    return f"netlapse:run:{run_id}:cancel"


def lock_key(run_id: str) -> str:
    return f"netlapse:run:{run_id}:lock"


def connect(url: str) -> redis.Redis:
    """A Redis client that returns str, with short timeouts so a dead Redis fails fast."""
    return redis.Redis.from_url(
        url, decode_responses=True, socket_connect_timeout=3, health_check_interval=30
    )


class EventStream:
    """Publish and read a run's events."""

    def __init__(self, client: redis.Redis, maxlen: int = 100_000) -> None:
        self.r = client
        self.maxlen = maxlen

    def publish(self, run_id: str, type_: EventType, data: dict[str, Any]) -> str:
        """Append an event; progress events also refresh the run's live-progress hash."""
        ev = Event(type=type_, run_id=run_id, data=data)
        payload = {"type": ev.type, "ts": repr(ev.ts), "data": json.dumps(ev.data)}
        pipe = self.r.pipeline(transaction=False)
        pipe.xadd(stream_key(run_id), payload, maxlen=self.maxlen, approximate=True)  # type: ignore[arg-type]
        if type_ in ("progress", "status"):
            pipe.hset(live_key(run_id), mapping={type_: json.dumps(data)})
            pipe.expire(live_key(run_id), 7 * 24 * 3600)
        if type_ == "status" and data.get("status") in ENDED:  # the store keeps the truth; Redis forgets
            pipe.expire(stream_key(run_id), ENDED_STREAM_TTL_S)
            pipe.expire(live_key(run_id), ENDED_STREAM_TTL_S)
        res = pipe.execute()
        return str(res[0])

    @staticmethod
    def decode(run_id: str, sid: str, fields: dict[str, str]) -> Event:
        """An event from a stream entry."""
        return Event(
            id=sid,
            type=fields["type"],
            run_id=run_id,
            ts=float(fields["ts"]),
            data=json.loads(fields["data"]),
        )  # type: ignore[arg-type]

    def read(
        self, run_id: str, since: str = "0-0", block_ms: int | None = None, count: int = 500
    ) -> list[Event]:
        """Events strictly after ``since``; blocks up to ``block_ms`` when none are there yet."""
        res = cast(list[Any], self.r.xread({stream_key(run_id): since}, count=count, block=block_ms))
        out: list[Event] = []
        for _key, entries in res or []:
            out.extend(self.decode(run_id, sid, fields) for sid, fields in entries)
        return out

    def first_id(self, run_id: str) -> str | None:
        """Oldest id still in the stream (None if empty)."""
        res = cast(list[Any], self.r.xrange(stream_key(run_id), count=1))
        return str(res[0][0]) if res else None

    def last_id(self, run_id: str) -> str | None:
        res = cast(list[Any], self.r.xrevrange(stream_key(run_id), count=1))
        return str(res[0][0]) if res else None

    def live(self, run_id: str) -> dict[str, Any]:
        """Latest progress/status published for a run ({} if none)."""
        raw = cast(dict[str, str], self.r.hgetall(live_key(run_id)))
        return {k: json.loads(v) for k, v in raw.items()}

    def delete(self, run_id: str) -> None:
        self.r.delete(stream_key(run_id), live_key(run_id), cancel_key(run_id), lock_key(run_id))

    def request_cancel(self, run_id: str) -> None:
        self.r.set(cancel_key(run_id), "1", ex=7 * 24 * 3600)

    def cancel_requested(self, run_id: str) -> bool:
        return bool(self.r.exists(cancel_key(run_id)))


def is_trimmed(since: str, first: str | None) -> bool:
    """True when ``since`` points before the oldest entry still kept (entries in between were lost)."""
    if first is None or since in ("0", "0-0", ""):
        return False

    def parse(s: str) -> tuple[int, int]:
        a, _, b = s.partition("-")
        return int(a), int(b or 0)

    # since is an id the client saw; if it is older than the oldest kept entry, it (and maybe more) was trimmed.
    return parse(since) < parse(first)


def valid_stream_id(s: str) -> bool:
    a, sep, b = s.partition("-")
    return a.isdigit() and (not sep or b.isdigit())
