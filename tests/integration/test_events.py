"""WebSocket replay edge cases: a trimmed `since`, a bad `since`, an unknown run."""

from __future__ import annotations

import httpx
import redis

from netlapse.cli.stack import Stack
from netlapse.core.events import stream_key
from tests.integration.helpers import create_run, wait_terminal, ws_events


def test_trimmed_since_says_so_and_sends_current_state(api: httpx.Client, stack: Stack) -> None:
    rid = create_run(api, training={"epochs": 1, "batch_size": 256, "seed": 7})["id"]
    assert wait_terminal(api, rid)["status"] == "succeeded"
    events = ws_events(api, rid)
    assert len(events) > 3
    r = redis.Redis.from_url(stack.redis_url or "", decode_responses=True)
    r.xtrim(stream_key(rid), maxlen=1, approximate=False)  # what MAXLEN ~ does to a long run's old events
    replay = ws_events(api, rid, since=events[0]["id"])
    assert replay[0]["type"] == "trimmed" and replay[0]["data"]["since"] == events[0]["id"]
    state = {e["type"]: e["data"] for e in replay[1:3]}
    assert state["status"]["status"] == "succeeded"
    assert state["progress"]["step"] == state["progress"]["total_steps"] == 4


def test_bad_since_and_unknown_run_get_an_error_message(api: httpx.Client) -> None:
    rid = create_run(api, training={"epochs": 1, "batch_size": 512, "seed": 8})["id"]
    bad = ws_events(api, rid, since="yesterday", timeout=10)
    assert bad[0]["type"] == "error" and "since" in bad[0]["data"]["detail"]
    missing = ws_events(api, "nosuchrun99", timeout=10)
    assert missing[0]["type"] == "error" and "not found" in missing[0]["data"]["detail"]
    wait_terminal(api, rid)
