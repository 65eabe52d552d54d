"""Analyses cannot pin the api's threads: a per-user bound on requests in flight (429 beyond), and every task
sent to the analyzer expires when the api stops waiting for it."""

from __future__ import annotations

from contextlib import ExitStack
from typing import Any

import pytest
from fastapi import HTTPException

from netlapse.api.analysis import run_analysis
from netlapse.api.limits import analysis_slot
from netlapse.core.settings import Settings


def test_analyses_in_flight_per_user_at_the_bound() -> None:
    settings = Settings()
    cap = settings.user_max_analyses
    with ExitStack() as held:
        for _ in range(cap):  # just under: each one gets a slot
            held.enter_context(analysis_slot("alice", settings))
        with pytest.raises(HTTPException) as over, analysis_slot("alice", settings):  # just over
            pass
        assert over.value.status_code == 429 and "NETLAPSE_USER_MAX_ANALYSES" in str(over.value.detail)
        assert over.value.headers == {"Retry-After": "2"}
        with analysis_slot("bob", settings):  # another user is not affected
            pass
    with analysis_slot("alice", settings):  # released when the requests answered (or failed)
        pass


class FakeResult:
    def get(self, timeout: float) -> dict[str, Any]:
        return {"key": "k", "meta": {}}


class FakeCelery:
    def __init__(self) -> None:
        self.sent: list[dict[str, Any]] = []

    def send_task(self, name: str, **kw: Any) -> FakeResult:
        self.sent.append({"name": name, **kw})
        return FakeResult()


def test_analysis_tasks_expire_when_the_api_stops_waiting() -> None:
    settings = Settings(analysis_timeout_s=42)
    celery = FakeCelery()
    assert run_analysis(celery, settings, "netlapse.analyzer.diff", {"run_id": "r"}) == "k"  # type: ignore[arg-type]
    assert celery.sent[0]["expires"] == 42 and celery.sent[0]["queue"] == "analyze"
