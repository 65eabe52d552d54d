"""The watchdog stops a runaway task in its own thread with a readable reason; the Celery app carries the limits."""

from __future__ import annotations

import time

import pytest

from netlapse.core.queue import HARD_LIMIT_GRACE_S, TASK_TRAIN, make_celery
from netlapse.core.settings import Settings
from netlapse.core.watchdog import MemoryCeilingExceeded, TaskTimeLimitExceeded, Watchdog, rss_bytes


def spin(seconds: float) -> None:
    end = time.monotonic() + seconds
    while time.monotonic() < end:  # pure Python: the async exception lands between two instructions
        sum(range(100))


def test_a_task_over_its_time_limit_is_stopped_with_the_reason() -> None:
    dog = Watchdog(max_rss_bytes=0)
    dog.arm(0.4, "NETLAPSE_TRAIN_TIME_LIMIT_S")
    start = time.monotonic()
    with pytest.raises(TaskTimeLimitExceeded) as stopped:
        spin(10)
    dog.disarm()
    assert 0.4 <= time.monotonic() - start < 5
    assert (
        str(stopped.value)
        == "stopped: the task ran longer than this server's limit of 0.4 s (NETLAPSE_TRAIN_TIME_LIMIT_S)"
    )
    assert type(stopped.value).__name__ == "TaskTimeLimitExceeded"
    assert isinstance(stopped.value, Exception)  # a trainer's `except Exception` marks its run failed with it


def test_a_task_just_under_its_limit_finishes() -> None:
    dog = Watchdog(max_rss_bytes=0)
    dog.arm(3.0, "NETLAPSE_TASK_TIME_LIMIT_S")
    spin(1.0)
    dog.disarm()
    spin(1.0)  # disarmed: nothing fires later
    assert dog.fired is None


def test_a_process_over_its_memory_ceiling_is_stopped_with_the_reason() -> None:
    rss = rss_bytes()
    assert rss > 0
    dog = Watchdog(max_rss_bytes=rss // 2, memory_setting="NETLAPSE_WORKER_MAX_MEMORY_MB")
    dog.arm(None, "NETLAPSE_TASK_TIME_LIMIT_S")
    with pytest.raises(MemoryCeilingExceeded) as stopped:
        spin(10)
    dog.disarm()
    assert "over this server's ceiling" in str(stopped.value) and "NETLAPSE_WORKER_MAX_MEMORY_MB" in str(
        stopped.value
    )
    high = Watchdog(max_rss_bytes=rss * 4)
    high.arm(None, "NETLAPSE_TASK_TIME_LIMIT_S")
    spin(1.0)
    high.disarm()
    assert high.fired is None


def test_celery_apps_carry_hard_limits_and_the_memory_ceiling() -> None:
    s = Settings(train_time_limit_s=100, task_time_limit_s=10, worker_max_memory_mb=512)
    app = make_celery("t", s)
    assert app.conf.task_time_limit == 10 + HARD_LIMIT_GRACE_S
    assert app.conf.task_annotations[TASK_TRAIN]["time_limit"] == 100 + HARD_LIMIT_GRACE_S
    assert app.conf.worker_max_memory_per_child == 512 * 1024
