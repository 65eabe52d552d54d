"""Celery trainer worker: ``celery -A netlapse.trainer.worker worker -Q train`` (GPU hosts: ``-Q train-gpu,train``).

A ``train`` message is a wake-up, not an order: the worker takes the next claimable run from the store,
round-robin across owners (trainer/scheduler.py). A run that needs CUDA is woken on ``train-gpu``, which only
GPU workers consume, and a CPU-only worker never takes it. A reaper thread in each worker's main process
sends wake-ups for claimable runs nobody is waking: runs whose Celery message was lost with Redis, and
runs whose trainer died (its lease in the run record expired), which are then resumed.
"""

from __future__ import annotations

import faulthandler
import logging
import signal
import threading
from typing import Any

import torch
from celery import Celery, Task
from celery.signals import worker_process_init, worker_ready, worker_shutdown

from netlapse.core.events import EventStream
from netlapse.core.queue import TASK_TRAIN, TRAIN_GPU_QUEUE, TRAIN_QUEUE, make_celery
from netlapse.core.runs import RunRepository
from netlapse.core.schemas import RunRecord, TrainTask
from netlapse.core.settings import Settings, get_settings
from netlapse.core.store import Store, store_from_settings
from netlapse.trainer.scheduler import claim_next, claimable, new_owner_token
from netlapse.trainer.training import execute_run

log = logging.getLogger(__name__)
settings = get_settings()
app = make_celery("netlapse-trainer", settings)
_reaper_stop = threading.Event()


def connect_cache(url: str) -> Any:
    """A Redis client for events with short timeouts, so a dead or hung Redis costs the loop little."""
    import redis

    return redis.Redis.from_url(
        url, decode_responses=True, socket_connect_timeout=2, socket_timeout=5, health_check_interval=10
    )


def has_cuda() -> bool:
    return torch.cuda.is_available()


def can_run_here(rec: RunRecord) -> bool:
    """A CPU-only worker never takes a run that asks for CUDA."""
    return rec.training is None or rec.training.device != "cuda" or has_cuda()


def queue_for(rec: RunRecord) -> str:
    """The queue whose workers can train ``rec``."""
    return TRAIN_GPU_QUEUE if rec.training is not None and rec.training.device == "cuda" else TRAIN_QUEUE


@worker_process_init.connect
def _init_process(**_: object) -> None:
    faulthandler.register(signal.SIGUSR1, all_threads=True)  # `kill -USR1 <pid>` prints every thread's stack
    if settings.torch_threads:
        torch.set_num_threads(settings.torch_threads)


def reap(store: Store, r: Any, celery: Celery) -> int:
    """One reaper pass: send a wake-up for every claimable run beyond the wake-ups already waiting.

    Extra wake-ups are harmless (a trainer that finds nothing to take returns), missing ones strand runs;
    so count the claimable runs per queue against the messages waiting in it. Returns wake-ups sent."""
    work: dict[str, int] = {}
    for rec in RunRepository(store).list():
        if claimable(rec):
            q = queue_for(rec)
            work[q] = work.get(q, 0) + 1
    sent = 0
    for q, n in work.items():
        missing = n - int(r.llen(q))
        for _ in range(max(0, missing)):
            celery.send_task(TASK_TRAIN, args=[TrainTask(run_id="").model_dump()], queue=q)
            sent += 1
    if sent:
        log.warning(
            "reaper: %d run(s) had nobody working on them; sent %d wake-up(s)", sum(work.values()), sent
        )
    return sent


def _reaper_loop(cfg: Settings) -> None:
    store = store_from_settings(cfg)
    r = connect_cache(cfg.redis_url)
    while not _reaper_stop.wait(cfg.reaper_interval_s):
        try:
            reap(store, r, app)
        except Exception:  # Redis or the store away: the next pass tries again
            log.warning("reaper pass failed", exc_info=True)


@worker_ready.connect
def _start_reaper(**_: object) -> None:
    """A timer in each trainer worker's main process (no beat needed; passes of several workers are harmless)."""
    try:
        reap(store_from_settings(settings), connect_cache(settings.redis_url), app)
    except Exception:  # never keep the worker from starting
        log.warning("first reaper pass failed", exc_info=True)
    threading.Thread(target=_reaper_loop, args=(settings,), name="netlapse-reaper", daemon=True).start()


@worker_shutdown.connect
def _stop_reaper(**_: object) -> None:
    _reaper_stop.set()


@app.task(name=TASK_TRAIN, bind=True)
def train_run(self: Task, payload: dict) -> dict:
    """A wake-up: take the next run this worker may train (fair across users, resuming interrupted ones
    first) and train it to a terminal status; returns which run and how it ended (None when idle)."""
    TrainTask.model_validate(payload)  # the run id is only a hint: the store says what to train next
    store = store_from_settings(settings)
    owner = new_owner_token()
    repo = RunRepository(store)
    rec = None
    if (self.request.delivery_info or {}).get("routing_key") == TRAIN_GPU_QUEUE:
        # A wake-up meant for a CUDA run: take one of those first, whatever the round-robin says.
        rec = claim_next(
            repo,
            owner,
            lease_s=settings.run_lease_s,
            max_attempts=settings.max_run_attempts,
            can_run=lambda r: can_run_here(r) and queue_for(r) == TRAIN_GPU_QUEUE,
        )
    rec = rec or claim_next(
        repo,
        owner,
        lease_s=settings.run_lease_s,
        max_attempts=settings.max_run_attempts,
        can_run=can_run_here,
    )
    if rec is None:
        return {"run_id": None, "status": "idle"}
    try:
        events: EventStream | None = EventStream(connect_cache(settings.redis_url), settings.events_maxlen)
    except Exception:  # Redis is a cache: train without live events, the record and tape stay the truth
        log.warning(
            "run %s: no event stream (Redis unreachable); training without live events", rec.id, exc_info=True
        )
        events = None
    final = execute_run(rec, owner, settings, store, events)
    return {"run_id": final.id, "status": final.status, "attempt": rec.attempts}
