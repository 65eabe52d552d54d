"""Celery wiring shared by the api (which sends tasks by name) and the workers (which run them)."""

from __future__ import annotations

from celery import Celery

from netlapse.core.settings import Settings

TRAIN_QUEUE = "train"
TRAIN_GPU_QUEUE = "train-gpu"  # wake-ups for runs that need CUDA: only GPU trainers consume it
ANALYZE_QUEUE = "analyze"
COMPACT_QUEUE = "compact"  # its own worker process, so diffs never wait behind a compaction
TASK_TRAIN = "netlapse.trainer.train_run"
TASK_DIFF = "netlapse.analyzer.diff"
TASK_SCATTER = "netlapse.analyzer.scatter"
TASK_ACTIVATIONS = "netlapse.analyzer.activations"
TASK_FEATUREMAPS = "netlapse.analyzer.featuremaps"
TASK_TRAJECTORY = "netlapse.analyzer.trajectory"
TASK_COMPACT = "netlapse.analyzer.compact"


def make_celery(name: str, settings: Settings) -> Celery:
    """A Celery app with the reliability settings of DESIGN §8: late acks, requeue on worker loss, prefetch 1, JSON."""
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
    return app
