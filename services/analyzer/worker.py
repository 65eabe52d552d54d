"""Celery analyzer worker (queue ``analyze``): ``celery -A netlapse.analyzer.worker worker -Q analyze``.

Each task computes one analysis, caches it in the store under a key derived from the request, and returns
where it lies (:class:`AnalysisResult`). A request the analyzer cannot answer returns ``meta.error`` with an
HTTP status instead of raising, so the api can pass the message on.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import torch
from celery.signals import worker_process_init

from netlapse.analyzer import analyses
from netlapse.analyzer.activations import AnalysisError, compute_activations, compute_featuremaps
from netlapse.analyzer.compaction import compact_run
from netlapse.core.datasets import DatasetUnavailable, UnknownDataset
from netlapse.core.events import EventStream, connect
from netlapse.core.queue import (
    TASK_ACTIVATIONS,
    TASK_COMPACT,
    TASK_DIFF,
    TASK_FEATUREMAPS,
    TASK_SCATTER,
    make_celery,
)
from netlapse.core.runs import RunNotFound
from netlapse.core.schemas import (
    ActivationTask,
    AnalysisResult,
    CompactTask,
    DiffTask,
    FeatureMapTask,
    ScatterTask,
)
from netlapse.core.settings import get_settings
from netlapse.core.store import Store, store_from_settings

log = logging.getLogger(__name__)
settings = get_settings()
app = make_celery("netlapse-analyzer", settings)
_store: Store | None = None
_events: EventStream | None = None


def store() -> Store:
    global _store
    if _store is None:
        _store = store_from_settings(settings)
    return _store


def events() -> EventStream:
    global _events
    if _events is None:
        _events = EventStream(connect(settings.redis_url), settings.events_maxlen)
    return _events


@worker_process_init.connect
def _init_process(**_: object) -> None:
    if settings.torch_threads:
        torch.set_num_threads(settings.torch_threads)


def _publisher(run_id: str) -> Any:
    def publish(data: dict[str, Any]) -> None:
        try:
            events().publish(run_id, "analysis", data)
        except Exception:  # an event is a courtesy; the analysis itself must not fail for it
            log.warning("could not publish an analysis event for run %s", run_id, exc_info=True)

    return publish


def _result(key: str, meta: dict[str, Any]) -> dict:
    return AnalysisResult(
        key=key, cached=meta.get("cached", False), seconds=meta.get("seconds", 0.0), meta=meta
    ).model_dump()


def _error(exc: Exception, status: int) -> dict:
    return AnalysisResult(key="", meta={"error": str(exc), "status": status}).model_dump()


def _answer(compute: Callable[[], tuple[str, dict[str, Any]]]) -> dict:
    """Run a model-evaluating analysis; a request it cannot answer becomes ``meta.error`` with an HTTP status."""
    try:
        key, meta = compute()
    except (AnalysisError, UnknownDataset) as exc:
        return _error(exc, 422)
    except RunNotFound as exc:
        return _error(exc, 404)
    except DatasetUnavailable as exc:  # the analyzer's data dir lacks the files: a deployment problem
        return _error(exc, 503)
    return _result(key, meta)


@app.task(name=TASK_DIFF)
def diff(payload: dict) -> dict:
    """Compute value(to) − value(from) of one tensor with summary stats; cached in the store under the request."""
    t = DiffTask.model_validate(payload)
    key, meta = analyses.compute_diff(store(), t.run_id, t.name, t.from_step, t.to_step)
    return _result(key, meta)


@app.task(name=TASK_SCATTER)
def scatter(payload: dict) -> dict:
    """Initial value vs change of one tensor: a seeded sample, an exact 2-D histogram, Pearson r, sign fractions."""
    t = ScatterTask.model_validate(payload)
    key, meta = analyses.compute_scatter(store(), t)
    return _result(key, meta)


@app.task(name=TASK_ACTIVATIONS)
def activations(payload: dict) -> dict:
    """Per-label normalized activations (Eq. 1) of one conv layer at one step; every conv layer is cached at once."""
    t = ActivationTask.model_validate(payload)
    return _answer(lambda: compute_activations(store(), settings, t, publish=_publisher(t.run_id)))


@app.task(name=TASK_FEATUREMAPS)
def featuremaps(payload: dict) -> dict:
    """The feature maps of one input for one conv layer at one step, with label and prediction."""
    t = FeatureMapTask.model_validate(payload)
    return _answer(lambda: compute_featuremaps(store(), settings, t))


@app.task(name=TASK_COMPACT)
def compact(payload: dict) -> dict:
    """Rewrite a run's closed tape segments time-major, verified bit-exact before the step-major copy goes."""
    t = CompactTask.model_validate(payload)
    return compact_run(store(), settings, t.run_id, connect(settings.redis_url))
