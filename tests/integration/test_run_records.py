"""Run records are written compare-and-set on both backends (local dir, moto's S3 server): a cancel racing the
trainer's save ends the run cancelled, and a run deleted while it trains stays deleted."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from netlapse.core.modelspec import ModelRef
from netlapse.core.runs import RunExists, RunNotFound, RunRepository
from netlapse.core.schemas import RunRecord, RunSummary, TrainingConfig, run_key
from netlapse.core.settings import Settings
from netlapse.core.store import LocalStore, PreconditionFailed, Store
from netlapse.trainer.scheduler import claim_next, new_owner_token
from netlapse.trainer.training import Outcome, execute_run, finish_run
from tests.integration.conftest_s3 import S3Server, s3_server  # noqa: F401 - the fixture

TINY = ModelRef.model_validate({"preset": "tiny-cnn"})


@pytest.fixture(params=["local", "s3"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    if request.param == "local":
        yield LocalStore(tmp_path / "store")
    else:
        server: S3Server = request.getfixturevalue("s3_server")
        yield server.store()


def record(run_id: str, **training: Any) -> RunRecord:
    return RunRecord(
        id=run_id,
        name="cas",
        model=TINY.resolve(),
        dataset="synthetic",
        training=TrainingConfig(**{"epochs": 1, "batch_size": 64, **training}),
    )


def test_conditional_writes(store: Store) -> None:
    etag = store.put_if("runs/a/run.json", b"v1", None)
    with pytest.raises(PreconditionFailed):
        store.put_if("runs/a/run.json", b"again", None)  # a create never overwrites
    data, tag = store.get_versioned("runs/a/run.json")
    assert data == b"v1" and tag == etag
    store.put_if("runs/a/run.json", b"v2", etag)
    with pytest.raises(PreconditionFailed):
        store.put_if("runs/a/run.json", b"stale", etag)  # written over since that version
    assert store.get("runs/a/run.json") == b"v2"
    store.delete_prefix("runs/a/")
    with pytest.raises(PreconditionFailed):
        store.put_if("runs/a/run.json", b"resurrected", store.put_if("runs/b/run.json", b"x", None))
    assert not store.exists("runs/a/run.json")

    repo = RunRepository(store)
    repo.create(record("cas00000001"))
    with pytest.raises(RunExists):
        repo.create(record("cas00000001"))


def test_cancel_racing_the_trainers_final_save_ends_cancelled(store: Store) -> None:
    repo = RunRepository(store)
    repo.create(record("race0000001"))
    owner = new_owner_token()
    claimed = claim_next(repo, owner, lease_s=60, max_attempts=3)
    assert claimed is not None and claimed.status == "running"

    # The cancel lands between the trainer's read of the record and its write.
    real_put_if = store.put_if
    raced: list[bool] = []

    def put_if(key: str, data: bytes, etag: str | None) -> str:
        if key == run_key("race0000001") and not raced:
            raced.append(True)
            _, applied = repo.request_cancel("race0000001")
            assert applied
        return real_put_if(key, data, etag)

    store.put_if = put_if  # type: ignore[method-assign]
    outcome = Outcome("succeeded", claimed.progress, RunSummary(final_loss=0.5), tape_complete=True)
    final = finish_run(repo, "race0000001", owner, outcome)
    store.put_if = real_put_if  # type: ignore[method-assign]
    assert raced and final is not None
    rec = repo.get("race0000001")
    assert rec.status == "cancelled" and rec.cancel_requested and rec.tape_complete
    assert rec.summary.final_loss == 0.5 and rec.lease_owner is None
    _, applied = repo.request_cancel("race0000001")  # already terminal: nothing changes
    assert not applied and repo.get("race0000001").status == "cancelled"


def test_cancel_of_a_queued_run_wins_over_a_trainer_taking_it(store: Store) -> None:
    repo = RunRepository(store)
    repo.create(record("race0000002"))
    repo.request_cancel("race0000002")
    assert claim_next(repo, new_owner_token(), lease_s=60, max_attempts=3) is None
    rec = repo.get("race0000002")
    assert rec.status == "cancelled" and rec.attempts == 0


def test_a_run_deleted_while_it_trains_stays_deleted(store: Store, tmp_path: Path) -> None:
    repo = RunRepository(store)
    repo.create(record("gone0000001", epochs=40, batch_size=16))
    owner = new_owner_token()
    rec = claim_next(repo, owner, lease_s=5, max_attempts=3)
    assert rec is not None
    settings = Settings(data_dir=tmp_path, segment_max_steps=4, run_lease_s=5, resume_interval_s=0)
    done: list[RunRecord] = []
    t = threading.Thread(target=lambda: done.append(execute_run(rec, owner, settings, store, None)))
    t.start()
    deadline = time.monotonic() + 120
    while len(store.list("runs/gone0000001/tape/segments/")) < 3 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert t.is_alive(), "the run ended before it could be deleted"
    repo.delete("gone0000001")
    t.join(timeout=120)
    assert not t.is_alive() and done
    with pytest.raises(RunNotFound):
        repo.get("gone0000001")
    time.sleep(0.5)
    assert store.list("runs/gone0000001/") == [], "the trainer wrote after the delete"


def test_a_cancel_reaches_the_trainer_through_the_record_without_redis(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "store")
    repo = RunRepository(store)
    repo.create(record("noredis0001", epochs=40, batch_size=16))
    owner = new_owner_token()
    rec = claim_next(repo, owner, lease_s=5, max_attempts=3)
    assert rec is not None
    settings = Settings(data_dir=tmp_path, segment_max_steps=4, run_lease_s=5)
    done: list[RunRecord] = []
    t = threading.Thread(target=lambda: done.append(execute_run(rec, owner, settings, store, None)))
    t.start()  # events=None: no Redis at all, so the cancel can only arrive through the run record
    deadline = time.monotonic() + 120
    while len(store.list("runs/noredis0001/tape/segments/")) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert t.is_alive(), "the run ended before it could be cancelled"
    _, applied = repo.request_cancel("noredis0001")
    assert applied
    t.join(timeout=120)
    final = repo.get("noredis0001")
    assert final.status == "cancelled" and final.tape_complete and final.lease_owner is None
    assert 0 < final.progress.step < final.progress.total_steps
