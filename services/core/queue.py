"""Celery wiring shared by the api (which sends tasks by name) and the workers (which run them)."""

from __future__ import annotations

from celery import Celery

from netlapse.core.settings import Settings

TRAIN_QUEUE = "train"
TRAIN_GPU_QUEUE = "train-gpu"  # wake-ups for runs that need CUDA: only GPU trainers consume it
ANALYZE_QUEUE = "analyze"
COMPACT_QUEUE = "compact"  # its own worker process, so diffs never wait behind a compaction
TASK_TRAIN = "netlapse.trainer.train_run"
# Each analysis' task is netlapse.analyzer.<name>, named by its descriptor (netlapse.analyzer.registry).
TASK_COMPACT = "netlapse.analyzer.compact"


def make_celery(name: str, settings: Settings) -> Celery:
    """A Celery app with the settings of docs/architecture.md ("Components"): late acks, requeue on worker loss,
    prefetch 1, JSON."""
    app = Celery(name, broker=settings.redis_url, backend=settings.redis_url)
    app.conf.update(
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        task_serializer="json",
        result_serializer="json",
        accept_content=["json"],
        result_expires=3600,
        task_routes={
            "netlapse.trainer.*": {"queue": TRAIN_QUEUE},
            TASK_COMPACT: {"queue": COMPACT_QUEUE},
            "netlapse.analyzer.*": {"queue": ANALYZE_QUEUE},
        },
        broker_connection_retry_on_startup=True,
        broker_transport_options={"visibility_timeout": 6 * 3600},
        worker_hijack_root_logger=False,
        task_track_started=True,
    )
    apply_task_limits(app, settings)
    return app


HARD_LIMIT_GRACE_S = 60.0
"""Celery's hard time limit (it kills the worker child) comes this long after the watchdog's readable stop."""


def apply_task_limits(app: Celery, settings: Settings) -> None:
    """Time limits per task and a memory ceiling per worker process (docs/security.md): the watchdog stops a
    task over either with a readable reason (a trainer marks its run failed with it); Celery's hard limit and
    ``worker_max_memory_per_child`` are the backstop for code that never returns to Python."""
    from netlapse.core import watchdog_celery  # noqa: PLC0415 - signal handlers, connected once per process

    app.conf.update(
        task_time_limit=settings.task_time_limit_s + HARD_LIMIT_GRACE_S,
        task_annotations={TASK_TRAIN: {"time_limit": settings.train_time_limit_s + HARD_LIMIT_GRACE_S}},
        worker_max_memory_per_child=settings.worker_max_memory_mb * 1024 or None,  # KiB
    )
    watchdog_celery.configure(settings)
