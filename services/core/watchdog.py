"""A per-worker-process watchdog that stops a runaway Celery task with a readable reason (docs/security.md).

While a task runs, a daemon thread polls the process' resident memory and the task's deadline. When either is
passed it raises an exception *inside the task's thread* (``PyThreadState_SetAsyncExc``): the task's own error
handling then runs as for any other error, so a trainer marks its run ``failed`` with this reason
("the trainer used 17.2 GiB, over this server's ceiling of 16 GiB (NETLAPSE_WORKER_MAX_MEMORY_MB)").
Celery's hard ``time_limit`` (a little later) and ``worker_max_memory_per_child`` stay as the backstop for code
that never returns to Python.
"""

from __future__ import annotations

import ctypes
import os
import threading
import time
from dataclasses import dataclass

POLL_S = 0.25


class TaskLimitExceeded(Exception):
    """Base of the exceptions the watchdog raises; ``detail`` is the reason (class attribute: see ``raise_in``)."""

    detail = "the task exceeded a limit of this server"

    def __str__(self) -> str:
        return self.detail


class MemoryCeilingExceeded(TaskLimitExceeded):
    """The worker process' resident memory passed ``NETLAPSE_WORKER_MAX_MEMORY_MB``."""


class TaskTimeLimitExceeded(TaskLimitExceeded):
    """The task ran longer than its time limit (``NETLAPSE_TRAIN_TIME_LIMIT_S`` / ``NETLAPSE_TASK_TIME_LIMIT_S``)."""


def rss_bytes() -> int:
    """Resident memory of this process (Linux /proc; 0 where unavailable)."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0


def raise_in(thread_id: int, base: type[TaskLimitExceeded], detail: str) -> bool:
    """Raise ``base`` with ``detail`` in thread ``thread_id`` at its next Python instruction (CPython only takes
    a class, so the message travels on a one-off subclass of the same name)."""
    exc = type(base.__name__, (base,), {"detail": detail, "__module__": base.__module__})
    n = ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(thread_id), ctypes.py_object(exc))
    return bool(n == 1)


@dataclass
class _Armed:
    thread_id: int
    deadline: float | None
    time_limit_s: float | None
    time_setting: str


class Watchdog:
    """One per process: ``arm`` when a task starts (in its thread), ``disarm`` when it ends."""

    def __init__(self, max_rss_bytes: int, memory_setting: str = "NETLAPSE_WORKER_MAX_MEMORY_MB") -> None:
        self.max_rss_bytes = max_rss_bytes
        self.memory_setting = memory_setting
        self._armed: _Armed | None = None
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self.fired: str | None = None

    def arm(self, time_limit_s: float | None, time_setting: str) -> None:
        """Watch the calling thread's task: at most ``time_limit_s`` seconds (None: no limit) and the ceiling."""
        deadline = time.monotonic() + time_limit_s if time_limit_s else None
        with self._lock:
            self._armed = _Armed(threading.get_ident(), deadline, time_limit_s, time_setting)
            self.fired = None
        if self._thread is None or not self._thread.is_alive():
            self._thread = threading.Thread(target=self._loop, name="netlapse-watchdog", daemon=True)
            self._thread.start()

    def disarm(self) -> None:
        with self._lock:
            self._armed = None

    def _loop(self) -> None:
        while True:
            time.sleep(POLL_S)
            with self._lock:
                armed = self._armed
                if armed is None:
                    continue
                reason = self._over(armed)
                if reason is None:
                    continue
                base, detail = reason
                self._armed = None  # once per task
                self.fired = detail
            raise_in(armed.thread_id, base, detail)

    def _over(self, armed: _Armed) -> tuple[type[TaskLimitExceeded], str] | None:
        if self.max_rss_bytes > 0:
            rss = rss_bytes()
            if rss > self.max_rss_bytes:
                return MemoryCeilingExceeded, (
                    f"stopped: the worker process used {rss / 2**20:,.0f} MiB of memory, over this server's "
                    f"ceiling of {self.max_rss_bytes / 2**20:,.0f} MiB ({self.memory_setting})"
                )
        if armed.deadline is not None and time.monotonic() > armed.deadline:
            return TaskTimeLimitExceeded, (
                f"stopped: the task ran longer than this server's limit of {armed.time_limit_s:g} s "
                f"({armed.time_setting})"
            )
        return None
