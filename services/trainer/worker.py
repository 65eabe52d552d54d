"""Celery trainer worker (queue ``train``): ``celery -A netlapse.trainer.worker worker -Q train``."""

from __future__ import annotations

import logging
import os
import socket
import threading
import uuid

import redis
import torch
from celery import Task
from celery.signals import worker_process_init, worker_ready

from netlapse.core.events import EventStream, connect, lock_key
from netlapse.core.queue import TASK_TRAIN, make_celery
from netlapse.core.runs import RunRepository
from netlapse.core.schemas import TrainTask, utcnow
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

    def __init__(self, r: redis.Redis, run_id: str) -> None:
        self.r, self.key = r, lock_key(run_id)
        self.token = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex}"
        self._stop = threading.Event()

    def _holder_dead(self) -> bool:
        """True when the lock is held by a process on this host that no longer exists (killed mid-run)."""
        holder = self.r.get(self.key)
        if not holder:
            return False
        host, _, rest = str(holder).partition(":")
        pid = rest.partition(":")[0]
        if host != socket.gethostname() or not pid.isdigit():
            return False
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            return True
        except PermissionError:
            return False
        return False

    def acquire(self) -> bool:
        if not self.r.set(self.key, self.token, nx=True, ex=LOCK_TTL_S):
            if not self._holder_dead():
                return False
            self.r.set(self.key, self.token, ex=LOCK_TTL_S)
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


@worker_ready.connect
def _reconcile(**_: object) -> None:
    """Runs left 'running' by a trainer that is gone (no live lock) can never finish: mark them failed."""
    try:
        r = connect(settings.redis_url)
        repo = RunRepository(store_from_settings(settings))
        events = EventStream(r, settings.events_maxlen)
        for rec in repo.list():
            if rec.status == "running" and not r.exists(lock_key(rec.id)):
                rec.status, rec.finished_at = "failed", utcnow()
                rec.error = "the trainer stopped while this run was running (worker restarted); the committed tape is kept"
                repo.save(rec)
                events.publish(rec.id, "status", {"status": "failed", "error": rec.error})
                log.warning("run %s was left running by a stopped trainer: marked failed", rec.id)
    except Exception:  # never keep the worker from starting; the next start tries again
        log.exception("reconciling runs at start-up failed")


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
