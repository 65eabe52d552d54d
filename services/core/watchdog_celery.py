"""Arms :mod:`netlapse.core.watchdog` around every Celery task of a worker process (signal handlers)."""

from __future__ import annotations

import logging
import os
from typing import Any

from celery.signals import task_postrun, task_prerun

from netlapse.core.settings import Settings
from netlapse.core.watchdog import Watchdog

_settings: Settings | None = None
_dog: Watchdog | None = None
TRAIN_TASK = "netlapse.trainer.train_run"
log = logging.getLogger(__name__)


def configure(settings: Settings) -> None:
    """Use these limits for the tasks of this process (the last Celery app made wins: one per worker)."""
    global _settings, _dog
    _settings = settings
    _dog = Watchdog(settings.worker_max_memory_mb * 2**20)


_poisoned = False
"""The watchdog stopped a task of this process: the exception may have landed anywhere (even inside an import),
so this process takes no further task. It exits at the start of the next one, whose message (late ack, reject on
worker loss) goes back to the queue for a fresh child process."""


@task_prerun.connect(weak=False, dispatch_uid="netlapse-watchdog-arm")
def _arm(task: Any = None, **_: Any) -> None:
    if _poisoned:
        log.warning("this worker process stopped a runaway task; exiting so a fresh one takes this task")
        logging.shutdown()
        os._exit(3)
    if _dog is None or _settings is None:
        return
    if getattr(task, "name", "") == TRAIN_TASK:
        _dog.arm(_settings.train_time_limit_s, "NETLAPSE_TRAIN_TIME_LIMIT_S")
    else:
        _dog.arm(_settings.task_time_limit_s, "NETLAPSE_TASK_TIME_LIMIT_S")


@task_postrun.connect(weak=False, dispatch_uid="netlapse-watchdog-disarm")
def _disarm(**_: Any) -> None:
    global _poisoned
    if _dog is not None:
        _dog.disarm()
        _poisoned = _poisoned or _dog.fired is not None
