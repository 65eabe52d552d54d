"""The trainer's scheduling: users served round-robin (one user's backlog never starves another's run), the
reaper wakes trainers for runs nobody works on, and a run whose trainer keeps dying fails with the reason."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
import redis

from netlapse.cli.stack import Stack
from netlapse.core.modelspec import ModelRef
from netlapse.core.queue import TRAIN_GPU_QUEUE, TRAIN_QUEUE, make_celery
from netlapse.core.runs import RunRepository
from netlapse.core.schemas import RunRecord, TrainingConfig, utcnow
from netlapse.core.settings import Settings
from netlapse.core.store import LocalStore
from netlapse.trainer.scheduler import claim_next, new_owner_token
from netlapse.trainer.training import execute_run
from netlapse.trainer.worker import reap


def record(run_id: str, owner: str, **training: object) -> RunRecord:
    return RunRecord(
        id=run_id,
        name=run_id,
        owner=owner,
        model=ModelRef.model_validate({"preset": "tiny-cnn"}).resolve(),
        dataset="synthetic",
        training=TrainingConfig(**{"epochs": 1, "batch_size": 512, **training}),  # type: ignore[arg-type]
    )


def test_one_trainer_serves_users_round_robin(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "store")
    repo = RunRepository(store)
    settings = Settings(data_dir=tmp_path)
    for i in range(1, 4):
        repo.create(record(f"alice0000{i}", "alice"))
    started: list[str] = []

    def train_next() -> bool:
        owner = new_owner_token()
        rec = claim_next(repo, owner, lease_s=60, max_attempts=3)
        if rec is None:
            return False
        started.append(rec.id)
        if rec.id == "alice00001":  # bob submits while alice's first run is in progress
            repo.create(record("bob000001", "bob"))
        assert execute_run(rec, owner, settings, store, None).status == "succeeded"
        return True

    while train_next():
        pass
    assert started == ["alice00001", "bob000001", "alice00002", "alice00003"]


@pytest.fixture(scope="module")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    s = Stack(data_dir=tmp_path_factory.mktemp("scheduling-redis"))
    s.start_redis()
    assert s.redis_url is not None
    yield s.redis_url
    s.stop()


def test_reaper_wakes_a_trainer_for_every_run_nobody_works_on(tmp_path: Path, redis_url: str) -> None:
    store = LocalStore(tmp_path / "store")
    repo = RunRepository(store)
    r = redis.Redis.from_url(redis_url, decode_responses=True)
    r.delete(TRAIN_QUEUE, TRAIN_GPU_QUEUE)
    app = make_celery("reaper-test", Settings(redis_url=redis_url))
    past, future = utcnow() - timedelta(minutes=5), utcnow() + timedelta(minutes=5)
    repo.create(record("queued0001", "alice"))  # its Celery message was lost with Redis
    repo.create(record("gpuqueued01", "bob", device="cuda"))
    dead = record("deadlease01", "bob")
    dead.status, dead.lease_owner, dead.lease_until, dead.attempts = "running", "elsewhere:1:x", past, 1
    repo.create(dead)  # its trainer died on another host: the lease ran out
    live = record("liveleas01", "bob")
    live.status, live.lease_owner, live.lease_until = "running", "elsewhere:2:y", future
    repo.create(live)  # someone is training it
    done = record("finished01", "alice")
    done.status = "succeeded"
    repo.create(done)

    assert reap(store, r, app) == 3
    assert r.llen(TRAIN_QUEUE) == 2 and r.llen(TRAIN_GPU_QUEUE) == 1
    assert reap(store, r, app) == 0  # the wake-ups are waiting: nothing more to send
    # A trainer that takes the dead-lease run resumes it: interrupted runs come first.
    rec = claim_next(
        repo, new_owner_token(), lease_s=60, max_attempts=5, can_run=lambda x: x.id != "gpuqueued01"
    )
    assert rec is not None and rec.id == "deadlease01" and rec.attempts == 2
    r.delete(TRAIN_QUEUE, TRAIN_GPU_QUEUE)


def test_a_run_whose_trainer_keeps_dying_fails_with_the_reason(tmp_path: Path) -> None:
    repo = RunRepository(LocalStore(tmp_path / "store"))
    rec = record("dying00001", "alice")
    rec.status, rec.lease_owner, rec.lease_until, rec.attempts = "running", "gone:1:z", utcnow(), 3
    repo.create(rec)
    assert claim_next(repo, new_owner_token(), lease_s=60, max_attempts=3) is None
    failed = repo.get("dying00001")
    assert failed.status == "failed" and failed.lease_owner is None and failed.finished_at is not None
    assert (
        failed.error is not None
        and "stopped 3 times" in failed.error
        and "NETLAPSE_MAX_RUN_ATTEMPTS=3" in failed.error
    )
