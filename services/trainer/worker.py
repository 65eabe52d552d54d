"""Celery trainer worker (queue ``train``): ``celery -A netlapse.trainer.worker worker -Q train``."""

from __future__ import annotations

import logging
import os
import threading
import uuid

import torch
from celery import Task
from celery.signals import worker_process_init

from netlapse.core.events import EventStream, connect, lock_key
from netlapse.core.queue import TASK_TRAIN, make_celery
from netlapse.core.schemas import TrainTask
from netlapse.core.settings import get_settings
from netlapse.core.store import store_from_settings
from netlapse.trainer.training import execute_run

log = logging.getLogger(__name__)
settings = get_settings()
app = make_celery("netlapse-trainer", settings)
LOCK_TTL_S = 60


@worker_process_init.connect
def _init_process(**_: object) -> None:
    if settings.torch_threads:
        torch.set_num_threads(settings.torch_threads)


class RunLock:
    """A per-run Redis lock, refreshed in the background, so a redelivered task never runs twice at once."""

    def __init__(self, r, run_id: str) -> None:  # type: ignore[no-untyped-def]
        self.r, self.key, self.token = r, lock_key(run_id), f"{os.getpid()}-{uuid.uuid4().hex}"
        self._stop = threading.Event()

    def acquire(self) -> bool:
        if not self.r.set(self.key, self.token, nx=True, ex=LOCK_TTL_S):
            return False
        threading.Thread(target=self._refresh, daemon=True).start()
        return True

    def _refresh(self) -> None:
        while not self._stop.wait(LOCK_TTL_S / 3):
            if self.r.get(self.key) == self.token:
                self.r.expire(self.key, LOCK_TTL_S)

    def release(self) -> None:
        self._stop.set()
        if self.r.get(self.key) == self.token:
            self.r.delete(self.key)


@app.task(name=TASK_TRAIN, bind=True, max_retries=20)
def train_run(self: Task, payload: dict) -> dict:
    """Train one run to a terminal status, capturing every batch; retried while another attempt holds its lock."""
    task = TrainTask.model_validate(payload)
    r = connect(settings.redis_url)
    lock = RunLock(r, task.run_id)
    if not lock.acquire():
        raise self.retry(countdown=LOCK_TTL_S / 2)
    try:
        rec = execute_run(
            task.run_id, settings, store_from_settings(settings), EventStream(r, settings.events_maxlen)
        )
        return {"run_id": rec.id, "status": rec.status}
    finally:
        lock.release()
