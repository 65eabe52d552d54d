"""A compaction task runs at a lower CPU priority (Linux niceness of its thread and the threads it starts), so the
explorer's first open of a run that has just ended is not slowed by the compactor, and goes back afterwards."""

from __future__ import annotations

import os
import sys
import threading

import pytest

from netlapse.analyzer.worker import lowered_priority
from netlapse.core.settings import Settings

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="per-thread niceness is Linux's")


def _nice() -> int:
    return os.getpriority(os.PRIO_PROCESS, threading.get_native_id())


def test_lowered_priority_applies_to_the_block_and_its_threads_then_goes_back() -> None:
    seen: dict[str, int] = {}

    def body() -> None:
        base = _nice()
        seen["before"] = base
        with lowered_priority(base + 7):
            seen["inside"] = _nice()
            child = threading.Thread(target=lambda: seen.setdefault("child", _nice()))
            child.start()
            child.join()
        seen["after"] = _nice()

    t = threading.Thread(target=body)  # a thread of its own: the test runner's niceness is left alone
    t.start()
    t.join()
    assert seen["inside"] == seen["before"] + 7 and seen["child"] == seen["before"] + 7
    if os.geteuid() == 0:  # raising the priority back needs CAP_SYS_NICE
        assert seen["after"] == seen["before"]


def test_a_lower_setting_never_raises_the_priority() -> None:
    out: dict[str, int] = {}

    def body() -> None:
        with lowered_priority(0):
            out["inside"] = _nice()
        out["base"] = _nice()

    t = threading.Thread(target=body)
    t.start()
    t.join()
    assert out["inside"] == out["base"]


def test_compaction_is_niced_by_default() -> None:
    assert Settings().compact_nice == 10


def _autogrouping() -> bool:
    try:
        with open("/proc/sys/kernel/sched_autogroup_enabled") as f:
            return f.read().strip() == "1" and os.path.exists("/proc/self/autogroup")
    except OSError:
        return False


@pytest.mark.skipif(not _autogrouping(), reason="needs Linux autogrouping (sched_autogroup_enabled)")
def test_a_worker_in_its_own_session_lowers_the_session_then_goes_back() -> None:
    """With autogrouping the scheduler shares the CPU between sessions before niceness counts, so the compactor
    (a session of its own) lowers its session's autogroup too; a child in a new session sees it and back."""
    import subprocess

    code = (
        "from netlapse.analyzer.worker import _autogroup_nice, lowered_session_priority\n"
        "before = _autogroup_nice()\n"
        "with lowered_session_priority(before + 7):\n"
        "    inside = _autogroup_nice()\n"
        "print(before, inside, _autogroup_nice())\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, start_new_session=True
    )
    assert out.returncode == 0, out.stderr[-2000:]
    before, inside, after = (int(v) for v in out.stdout.split())
    assert inside == before + 7 and after == before


@pytest.mark.skipif(not _autogrouping(), reason="needs Linux autogrouping (sched_autogroup_enabled)")
def test_a_session_that_is_not_the_workers_own_is_left_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    from netlapse.analyzer import worker

    monkeypatch.setattr(worker.os, "getsid", lambda _pid: -12345)  # led by some other process (a shell)
    written: list[int] = []
    monkeypatch.setattr(worker, "_set_autogroup_nice", lambda n: written.append(n) or True)
    with worker.lowered_session_priority(19):
        pass
    assert written == []
