"""Arms :mod:`netlapse.core.watchdog` around every Celery task of a worker process (signal handlers)."""

from __future__ import annotations

from typing import Any

from celery.signals import task_postrun, task_prerun

from netlapse.core.settings import Settings
from netlapse.core.watchdog import Watchdog

_settings: Settings | None = None
_dog: Watchdog | None = None
TRAIN_TASK = "netlapse.trainer.train_run"


def configure(settings: Settings) -> None:
    """Use these limits for the tasks of this process (the last Celery app made wins: one per worker)."""
    global _settings, _dog
    _settings = settings
    _dog = Watchdog(settings.worker_max_memory_mb * 2**20)


@task_prerun.connect(weak=False, dispatch_uid="netlapse-watchdog-arm")
def _arm(task: Any = None, **_: Any) -> None:
    if _dog is None or _settings is None:
        return
    if getattr(task, "name", "") == TRAIN_TASK:
        _dog.arm(_settings.train_time_limit_s, "NETLAPSE_TRAIN_TIME_LIMIT_S")
    else:
        _dog.arm(_settings.task_time_limit_s, "NETLAPSE_TASK_TIME_LIMIT_S")


@task_postrun.connect(weak=False, dispatch_uid="netlapse-watchdog-disarm")
def _disarm(**_: Any) -> None:
    if _dog is not None:
        _dog.disarm()
