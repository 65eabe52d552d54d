"""Celery analyzer worker (queue ``analyze``): ``celery -A netlapse.analyzer.worker worker -Q analyze``.

One task per registered analysis (:mod:`netlapse.analyzer.registry`), named ``netlapse.analyzer.<name>``:
it computes the analysis, caches it in the store under a key derived from the request, and returns where it
lies (:class:`AnalysisResult`). A request the analyzer cannot answer returns ``meta.error`` with an HTTP
status instead of raising, so the api can pass the message on. Compaction has its own task.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import torch
from celery.signals import worker_process_init

from netlapse.analyzer.compaction import compact_run
from netlapse.analyzer.registry import Analysis, Context, execute, registry
from netlapse.core.events import EventStream, connect
from netlapse.core.queue import TASK_COMPACT, make_celery
from netlapse.core.schemas import CompactTask
from netlapse.core.settings import get_settings
from netlapse.core.store import Store, store_from_settings

log = logging.getLogger(__name__)
settings = get_settings()
app = make_celery("netlapse-analyzer", settings)
_store: Store | None = None
_events: EventStream | None = None


def store() -> Store:
    global _store
    if _store is None:
        _store = store_from_settings(settings)
    return _store


def events() -> EventStream:
    global _events
    if _events is None:
        _events = EventStream(connect(settings.redis_url), settings.events_maxlen)
    return _events


@worker_process_init.connect
def _init_process(**_: object) -> None:
    if settings.torch_threads:
        torch.set_num_threads(settings.torch_threads)


def _publish(run_id: str, data: dict[str, Any]) -> None:
    try:
        events().publish(run_id, "analysis", data)
    except Exception:  # an event is a courtesy; the analysis itself must not fail for it
        log.warning("could not publish an analysis event for run %s", run_id, exc_info=True)


def _task(a: Analysis) -> Callable[[dict], dict]:
    def run(payload: dict) -> dict:
        return execute(a, Context(store(), settings, publish=_publish), payload)

    run.__name__ = run.__qualname__ = a.name
    run.__doc__ = a.summary
    return run


for _analysis in registry().values():
    if not _analysis.inline:
        app.task(name=_analysis.task_name)(_task(_analysis))


@contextmanager
def lowered_priority(nice: int) -> Iterator[None]:
    """Run the block at niceness ``nice`` (Linux: this thread, and the threads it starts meanwhile), then back.

    A run's compaction starts the moment the run ends, when its user opens the explorer: on a small machine the
    two would share the cores evenly and the first open would wait seconds for the compactor."""
    tid = threading.get_native_id()
    try:
        before = os.getpriority(os.PRIO_PROCESS, tid)
        if nice > before:
            os.setpriority(os.PRIO_PROCESS, tid, nice)
    except (AttributeError, OSError):  # not Linux, or not permitted: normal priority
        yield
        return
    try:
        yield
    finally:
        try:
            os.setpriority(os.PRIO_PROCESS, tid, before)
        except OSError:
            # Raising it again needs CAP_SYS_NICE: it stays lower (compaction has a worker of its own).
            log.debug("compaction: cannot restore niceness %d", before)


_AUTOGROUP = "/proc/self/autogroup"


def _autogroup_nice() -> int | None:
    """This process's autogroup niceness, or None where autogrouping is off or unknown."""
    try:
        with open("/proc/sys/kernel/sched_autogroup_enabled") as f:
            if f.read().strip() != "1":
                return None
        with open(_AUTOGROUP) as f:  # "/autogroup-123 nice 0"
            return int(f.read().split()[-1])
    except (OSError, ValueError, IndexError):
        return None


def _set_autogroup_nice(nice: int) -> bool:
    try:
        with open(_AUTOGROUP, "w") as f:
            f.write(str(nice))
        return True
    except OSError:
        return False


@contextmanager
def lowered_session_priority(nice: int) -> Iterator[None]:
    """Run the block with this process's session (its autogroup) at niceness ``nice``, then back; only where
    the session is this worker's own: led by this process or its parent (the stack, compose and systemd start
    each worker in a session of its own; a worker started from a shell shares the shell's, left alone).

    Linux with autogrouping (the default of most distributions' kernels) shares the CPU evenly between
    sessions first and by thread niceness only within one, so ``lowered_priority`` alone did not hold the
    compactor back: in its own session at nice 10 it still took half the CPU beside the analyzer reading the
    first explorer open of the run (measured against three busy sessions: a 0.40 share at thread nice 10,
    0.05 with the autogroup at nice 10)."""
    before = _autogroup_nice()
    own = os.getsid(0) in (os.getpid(), os.getppid()) if hasattr(os, "getsid") else False
    lowered = before is not None and own and nice > before and _set_autogroup_nice(nice)
    try:
        yield
    finally:
        if lowered and before is not None and not _set_autogroup_nice(before):
            log.debug("compaction: cannot restore the session's niceness %d", before)


@app.task(name=TASK_COMPACT)
def compact(payload: dict) -> dict:
    """Rewrite a run's closed tape segments time-major, verified bit-exact before the step-major copy goes."""
    t = CompactTask.model_validate(payload)
    with lowered_priority(settings.compact_nice), lowered_session_priority(settings.compact_nice):
        return compact_run(store(), settings, t.run_id, connect(settings.redis_url))
