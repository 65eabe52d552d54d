"""Running an analysis on the analyzer worker from the api: send the task by name, wait, map its errors to HTTP."""

from __future__ import annotations

from typing import Any

from celery import Celery
from celery.exceptions import TimeoutError as CeleryTimeout
from fastapi import HTTPException

from netlapse.core.queue import ANALYZE_QUEUE
from netlapse.core.settings import Settings


def describe_steps(steps: list[int]) -> str:
    """A short description of the captured steps, for messages: ``0..63 (every step, 64 steps)``."""
    if not steps:
        return "no steps are captured yet"
    if len(steps) == 1:
        return f"the only captured step is {steps[0]}"
    gaps = {b - a for a, b in zip(steps, steps[1:], strict=False)}
    if gaps == {1}:
        return f"captured steps are {steps[0]}..{steps[-1]} (every step)"
    if len(gaps) == 1:
        return f"captured steps are {steps[0]}..{steps[-1]} every {gaps.pop()}"
    inner = {b - a for a, b in zip(steps[:-1], steps[1:-1], strict=False)}
    if len(inner) == 1:  # capture.every = N: the last step is always kept, so only the last gap differs
        return f"captured steps are {steps[0]}..{steps[-1]} every {inner.pop()} (and the last)"
    return f"{len(steps)} captured steps between {steps[0]} and {steps[-1]}"


def run_analysis(celery: Celery, settings: Settings, task: str, payload: dict[str, Any]) -> str:
    """Send an analysis task to the analyzer, wait for it, and return the store key of its result."""
    res = celery.send_task(task, args=[payload], queue=ANALYZE_QUEUE)
    return wait_analysis(res, settings)


def wait_analysis(res: Any, settings: Settings) -> str:
    """Wait for a sent analysis task; its own error (e.g. a 422) becomes the HTTP error."""
    try:
        out = res.get(timeout=settings.analysis_timeout_s)
    except CeleryTimeout:
        raise HTTPException(
            504,
            detail=f"the analyzer did not answer within {settings.analysis_timeout_s:.0f} s; is it running?",
        ) from None
    except Exception as exc:  # the task raised: an analyzer bug or a broken store, not bad input
        raise HTTPException(500, detail=f"the analysis failed: {type(exc).__name__}: {exc}") from None
    meta = out.get("meta") or {}
    if meta.get("error"):
        raise HTTPException(int(meta.get("status", 422)), detail=str(meta["error"]))
    return str(out["key"])
