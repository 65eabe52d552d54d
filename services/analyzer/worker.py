"""Celery analyzer worker (queue ``analyze``): ``celery -A netlapse.analyzer.worker worker -Q analyze``."""

from __future__ import annotations

import torch
from celery.signals import worker_process_init

from netlapse.analyzer import analyses
from netlapse.core.queue import TASK_DIFF, make_celery
from netlapse.core.schemas import AnalysisResult, DiffTask
from netlapse.core.settings import get_settings
from netlapse.core.store import Store, store_from_settings

settings = get_settings()
app = make_celery("netlapse-analyzer", settings)
_store: Store | None = None


def store() -> Store:
    global _store
    if _store is None:
        _store = store_from_settings(settings)
    return _store


@worker_process_init.connect
def _init_process(**_: object) -> None:
    torch.set_num_threads(settings.torch_threads)


@app.task(name=TASK_DIFF)
def diff(payload: dict) -> dict:
    """Compute value(to) − value(from) of one tensor with summary stats; cached in the store under the request."""
    t = DiffTask.model_validate(payload)
    key, meta = analyses.compute_diff(store(), t.run_id, t.name, t.from_step, t.to_step)
    return AnalysisResult(
        key=key, cached=meta.get("cached", False), seconds=meta.get("seconds", 0.0)
    ).model_dump()
