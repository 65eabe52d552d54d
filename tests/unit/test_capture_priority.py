"""The capture writer yields to training: under Linux SCHED_IDLE (capture_priority "idle", and "auto" for a CPU
model) its thread, and the encoder threads it starts, run only on CPU time no normal thread wants; "nice" keeps
the niceness alone. Every policy writes the same exact snapshots."""

from __future__ import annotations

import os
import sys
import threading
from typing import Any

import pytest
import torch
from pydantic import ValidationError
from torch import nn

from netlapse.core.capture import CapturePipeline, capturable_tensors, resolve_capture_priority
from netlapse.core.settings import Settings
from netlapse.core.store import LocalStore
from netlapse.core.tape import TapeReader, TapeWriter
from netlapse.core.tape.util import lower_thread_priority

linux = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="per-thread scheduling is Linux's")


def _policy(tid: int = 0) -> tuple[int, int]:
    """(scheduling policy, niceness) of a thread (0: the calling one)."""
    tid = tid or threading.get_native_id()
    return os.sched_getscheduler(tid), os.getpriority(os.PRIO_PROCESS, tid)


def _in_thread(fn: Any) -> Any:
    out: dict[str, Any] = {}
    t = threading.Thread(target=lambda: out.setdefault("v", fn()))
    t.start()
    t.join()
    return out["v"]


@linux
def test_idle_puts_the_thread_and_the_threads_it_starts_under_sched_idle_and_leaves_others_alone() -> None:
    main_before = _policy()

    def body() -> tuple[str, tuple[int, int], tuple[int, int]]:
        got = lower_thread_priority(7, idle=True)
        return got, _policy(), _in_thread(_policy)

    got, mine, child = _in_thread(body)
    assert got == "idle"
    assert mine == (os.SCHED_IDLE, main_before[1] + 7)
    assert child == mine, "a thread started by the writer (an encoder helper) inherits its priority"
    assert _policy() == main_before, "the calling test's thread is untouched"
    assert _in_thread(lambda: (lower_thread_priority(5), _policy())) == (
        "nice",
        (os.SCHED_OTHER, main_before[1] + 5),
    )
    assert _in_thread(lambda: lower_thread_priority(0)) == "normal"


def test_priority_is_checked_and_auto_means_idle_only_for_tensors_on_the_cpu() -> None:
    cpu, other = [torch.zeros(3)], [torch.zeros(3), torch.zeros(3, device="meta")]
    assert resolve_capture_priority("auto", cpu) == "idle"
    assert resolve_capture_priority("auto", other) == "nice"  # a GPU model: its encoder helpers keep a share
    assert (
        resolve_capture_priority("nice", cpu) == "nice" and resolve_capture_priority("idle", other) == "idle"
    )
    with pytest.raises(ValueError, match="capture priority must be one of auto, idle, nice, got 'low'"):
        resolve_capture_priority("low", cpu)
    assert Settings().capture_priority == "auto"
    assert Settings(capture_priority="nice").capture_priority == "nice"
    with pytest.raises(ValidationError, match="capture_priority"):
        Settings(capture_priority="realtime")


@linux
@pytest.mark.parametrize(("priority", "policy"), [("auto", "SCHED_IDLE"), ("nice", "SCHED_OTHER")])
def test_the_writer_thread_and_its_encoder_threads_run_at_the_asked_priority_and_write_exact_snapshots(
    tmp_path: Any, priority: str, policy: str
) -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(64, 300), nn.ReLU(), nn.Linear(300, 10))
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    store = LocalStore(tmp_path)
    # Small blocks so the two encoder threads both get work.
    writer = TapeWriter(store, "t/", capturable_tensors(model), threads=2, thread_nice=3, block_lanes=1024)
    seen: list[tuple[int, int]] = []
    append = writer.append

    def spying_append(step: int, arrays: Any, **kw: Any) -> None:
        seen.append(_policy())
        append(step, arrays, **kw)

    writer.append = spying_append  # type: ignore[method-assign]
    base_nice = _policy()[1]
    expected = {}
    with CapturePipeline(model, writer, buffers=2, nice=3, priority=priority) as pipe:
        for step in range(6):
            if step:
                opt.zero_grad()
                model(torch.randn(8, 64)).square().mean().backward()
                opt.step()
            expected[step] = {k: v.detach().clone() for k, v in model.state_dict().items()}
            pipe.capture(step)
        helpers = [t for t in threading.enumerate() if t.name.startswith("tape-encode") and t.native_id]
        helper_policies = {_policy(t.native_id) for t in helpers if t.is_alive()}
    want = (getattr(os, policy), base_nice + 3)
    assert pipe.priority == ("idle" if priority == "auto" else "nice")
    assert seen and set(seen) == {want}
    assert helpers and helper_policies == {want}, "the encoder's helper threads inherit the writer's priority"
    r = TapeReader(store, "t/")
    for step, snap in expected.items():
        for name, want_t in snap.items():
            assert r.read(name, step).tobytes() == want_t.numpy().tobytes()
