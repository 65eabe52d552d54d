"""A trainer SIGKILLed mid-run: the next attempt resumes from the last committed step, and the finished run
is bit-identical to an uninterrupted one (every tensor at every step, and the metrics).

The attempts run as real child processes (tests/integration/trainer_child.py) on a local store, without
Celery, so the kill lands at a chosen moment: after a resume checkpoint and after more segments were
committed past it (the resumed attempt must replay those steps without capturing them again)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from netlapse.core.metrics import read_metrics
from netlapse.core.modelspec import ModelRef
from netlapse.core.runs import RunRepository
from netlapse.core.schemas import CaptureConfig, RunRecord, TrainingConfig, tape_prefix
from netlapse.core.store import LocalStore
from netlapse.core.tape import TapeReader
from netlapse.trainer.resume import checkpoint_steps, resume_prefix

REPO = Path(__file__).resolve().parents[2]
RUN_ID = "resume0test01"
# Dropout (the global torch RNG) and Adam (optimizer state with a step counter) must both come back exactly.
SPEC = {
    "input_shape": [1, 28, 28],
    "num_classes": 10,
    "layers": [
        {"type": "conv2d", "name": "conv1", "out_channels": 4, "kernel_size": 3},
        {"type": "maxpool2d", "kernel_size": 2},
        {"type": "dropout", "p": 0.3},
        {"type": "flatten"},
        {"type": "linear", "name": "fc1", "out_features": 10},
    ],
}


def make_run(store_dir: Path, epochs: int = 4) -> LocalStore:
    store = LocalStore(store_dir)
    rec = RunRecord(
        id=RUN_ID,
        name="resume",
        model=ModelRef.model_validate(SPEC).resolve(),
        dataset="synthetic",
        training=TrainingConfig(epochs=epochs, batch_size=16, optimizer="adam", lr=0.01, seed=11),
        capture=CaptureConfig(every=1),
    )
    RunRepository(store).create(rec)
    return store


def child(store_dir: Path) -> subprocess.Popen:
    path = os.pathsep.join(p for p in (os.environ.get("PYTHONPATH", ""), str(REPO)) if p)
    env = {**os.environ, "PYTHONPATH": path, "OMP_NUM_THREADS": "1"}
    return subprocess.Popen(
        [sys.executable, "-m", "tests.integration.trainer_child", str(store_dir), RUN_ID],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )


def committed_step(store: LocalStore) -> int:
    """The last step a reader can see (-1 before the first segment)."""
    try:
        steps = TapeReader(store, tape_prefix(RUN_ID)).steps()
    except KeyError:  # no manifest yet
        return -1
    return steps[-1] if steps else -1


def assert_same_run(a: LocalStore, b: LocalStore) -> int:
    ra, rb = TapeReader(a, tape_prefix(RUN_ID)), TapeReader(b, tape_prefix(RUN_ID))
    steps = ra.steps()
    assert steps == rb.steps() == list(range(len(steps))), "a hole or a duplicate in the tape"
    names = [t.name for t in ra.tensors()]
    assert names == [t.name for t in rb.tensors()]
    for s in steps:
        for n in names:
            x, y = ra.read(n, s), rb.read(n, s)
            assert x.dtype == y.dtype and x.shape == y.shape
            assert np.array_equal(x.view(np.uint8), y.view(np.uint8)), f"{n} differs at step {s}"
    ma, mb = read_metrics(a, RUN_ID), read_metrics(b, RUN_ID)
    assert ma == mb and len(ma["steps"]) == steps[-1]
    return len(steps)


@pytest.fixture(scope="module")
def ref(tmp_path_factory: pytest.TempPathFactory) -> LocalStore:
    """The uninterrupted run both cases compare with."""
    d = tmp_path_factory.mktemp("resume-ref") / "store"
    store = make_run(d)
    p = child(d)
    out = p.communicate(timeout=300)[0].decode()
    assert p.returncode == 0, out
    return store


@pytest.mark.parametrize("kill_after_checkpoint", [True, False], ids=["from-checkpoint", "from-step-0"])
def test_sigkilled_trainer_resumes_bit_identical(
    tmp_path: Path, ref: LocalStore, kill_after_checkpoint: bool
) -> None:
    crashed = make_run(tmp_path / "crash" / "store")
    p = child(tmp_path / "crash" / "store")
    deadline = time.monotonic() + 120
    ck: list[int] = []
    while time.monotonic() < deadline and p.poll() is None:
        ck = checkpoint_steps(crashed, RUN_ID)
        last = committed_step(crashed)
        ready = (ck and last > ck[-1] + 2) if kill_after_checkpoint else last >= 4
        if ready:
            break
        time.sleep(0.01)
    assert p.poll() is None, (
        "the first attempt finished before it could be killed: " + p.communicate()[0].decode()
    )
    p.send_signal(signal.SIGKILL)
    p.wait()
    if not kill_after_checkpoint:
        for s in checkpoint_steps(crashed, RUN_ID):  # no checkpoint: the next attempt replays from step 0
            crashed.delete_prefix(f"{resume_prefix(RUN_ID)}{s:012d}.npz")
    killed_at = committed_step(crashed)
    rec = RunRepository(crashed).get(RUN_ID)
    assert rec.status == "running" and rec.attempts == 1

    p = child(tmp_path / "crash" / "store")  # takes over: the lease holder is a dead process on this host
    out = p.communicate(timeout=300)[0].decode()
    assert p.returncode == 0, out
    rec = RunRepository(crashed).get(RUN_ID)
    assert rec.status == "succeeded" and rec.attempts == 2 and rec.tape_complete
    assert rec.resumed_from is not None and rec.resumed_from <= killed_at
    if kill_after_checkpoint:
        assert rec.resumed_from > 0
    else:
        assert rec.resumed_from == 0
    assert rec.summary.steps_captured == assert_same_run(ref, crashed)
    assert not crashed.list(resume_prefix(RUN_ID)), "checkpoints of a finished run are removed"
