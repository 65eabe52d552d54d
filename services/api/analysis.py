"""Serving registered analyses from the api: check, find the cached result or send the task and wait, answer.

Every error on the way goes through :func:`netlapse.analyzer.registry.failure_of` (the one mapping, see
docs/architecture.md "Analyses"), so a run deleted mid-analysis answers 404, never 500.
"""

from __future__ import annotations

from typing import Any

from celery import Celery
from celery.exceptions import TimeoutError as CeleryTimeout
from fastapi import HTTPException, Request, Response
from pydantic import BaseModel

from netlapse.analyzer.registry import (
    Analysis,
    AnalysisFailure,
    Answer,
    Context,
    Stored,
    complete,
    describe_steps,
    ensure,
    failure_of,
    load,
)
from netlapse.api.responses import NPY, FastJSONResponse, bound_values, wants_npy
from netlapse.core.queue import ANALYZE_QUEUE
from netlapse.core.results import npy_bytes
from netlapse.core.settings import Settings

__all__ = ["answer_response", "describe_steps", "http_error", "run_analysis", "serve", "wait_analysis"]


def http_error(exc: BaseException) -> HTTPException | None:
    """The HTTP error for what an analysis raised (None: not an analysis failure, let it propagate)."""
    f = failure_of(exc)
    if f is None:
        return None
    return HTTPException(f.status, detail=f.detail())


def answer_response(request: Request, ans: Answer, what: str) -> Response:
    """An analysis' answer over HTTP: its JSON, or its array as ``.npy`` when the client asks for it (with
    ``ans.headers``, default ``X-Netlapse-<Field>`` of the scalar JSON fields); 422 beyond the value bounds."""
    npy = wants_npy(request)
    if ans.npy is not None:
        bound_values(int(ans.npy.size), npy, what)
    if ans.npy is not None and npy:
        headers = ans.headers if ans.headers is not None else _npy_headers(ans.content)
        return Response(npy_bytes(ans.npy), media_type=NPY, headers=headers)
    return FastJSONResponse(ans.content)


def _npy_headers(content: dict[str, Any]) -> dict[str, str]:
    return {
        f"X-Netlapse-{k.capitalize()}": str(v)
        for k, v in content.items()
        if isinstance(v, int | str) and not isinstance(v, bool)
    }


def run_analysis(celery: Celery, settings: Settings, task: str, payload: dict[str, Any]) -> str:
    """Send an analysis task to the analyzer, wait for it, and return the store key of its result."""
    # expires: a task still queued when the api has stopped waiting for it is dropped, not computed for no one
    res = celery.send_task(task, args=[payload], queue=ANALYZE_QUEUE, expires=settings.analysis_timeout_s)
    return wait_analysis(res, settings)


def wait_analysis(res: Any, settings: Settings) -> str:
    """Wait for a sent analysis task; its own error (e.g. a 422, a 404) becomes the HTTP error."""
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
        raise AnalysisFailure.from_meta(meta)
    return str(out["key"])


def dispatcher(celery: Celery, settings: Settings, ctx: Context) -> Any:
    """``Context.dispatch`` for the api: send every request to the worker at once, then wait for each."""

    def dispatch(a: Analysis, reqs: list[BaseModel]) -> list[Stored]:
        sent = [
            celery.send_task(
                a.task_name,
                args=[r.model_dump(mode="json")],
                queue=ANALYZE_QUEUE,
                expires=settings.analysis_timeout_s,
            )
            for r in reqs
        ]
        return [load(ctx, wait_analysis(s, settings), False) for s in sent]

    return dispatch


def serve(a: Analysis, req: BaseModel, ctx: Context, celery: Celery) -> Stored:
    """The result of ``req``: checked, then from the store, computed here (``inline``) or by the analyzer."""
    try:
        if a.check is not None:
            a.check(ctx, req)
        if a.inline or not a.cache:
            return ensure(a, ctx, req)
        key = a.key(req)
        cached = complete(ctx.store, key)
        if not cached:
            key = run_analysis(celery, ctx.settings, a.task_name, req.model_dump(mode="json"))
        return load(ctx, key, cached)
    except HTTPException:
        raise
    except Exception as exc:
        err = http_error(exc)
        if err is None:
            raise
        raise err from None
