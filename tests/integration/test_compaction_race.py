"""Two compaction passes racing past the lock TTL (real redis-server, analyzer/compaction.py): no step is lost.

Pass A stalls with its lock (TTL 1 s, not refreshed: a stalled process) after uploading parts; its lock
expires, pass B takes it, removes A's unlisted parts as orphans, compacts and deletes the replaced
segments; then A wakes up. Without fencing, A would list parts that are gone and drop segments: steps lost
for good. A must neither commit nor delete, and every tensor at every step must still read back exactly."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import redis

from netlapse.analyzer.compaction import (
    PassLock,
    compact_lock_key,
    compact_run,
    compact_tape,
)
from netlapse.cli.stack import Stack
from netlapse.core.schemas import tape_prefix
from netlapse.core.settings import Settings
from netlapse.core.store import LocalStore
from netlapse.core.tape import COMPACT_DIR, COMPACTION_NAME, TapeReader, TapeWriter
from tests.unit.test_tape import TENSORS, bits, snapshots

RUN = "racec0mpact1"
PREFIX = tape_prefix(RUN)
SETTINGS = Settings(compact_group_steps=4, compact_unit_steps=8)


@pytest.fixture(scope="module")
def redis_client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[redis.Redis]:
    s = Stack(data_dir=tmp_path_factory.mktemp("compaction-race"))
    s.start_redis()
    assert s.redis_url is not None
    yield redis.Redis.from_url(s.redis_url, decode_responses=True)
    s.stop()


def write_tape(store: LocalStore) -> dict[int, dict[str, np.ndarray]]:
    snaps = snapshots(list(range(40)), seed=5)
    w = TapeWriter(store, PREFIX, TENSORS, segment_max_steps=4, keyframe_interval=5)
    for step, snap in snaps.items():
        w.append(step, snap)
    w.close()
    return snaps


def assert_every_step(store: LocalStore, snaps: dict[int, dict[str, np.ndarray]]) -> None:
    r = TapeReader(store, PREFIX)
    assert r.steps() == sorted(snaps)
    for s, snap in snaps.items():
        for name, want in snap.items():
            assert np.array_equal(bits(r.read(name, s)), bits(want)), (name, s)


class Stall:
    """A fence that stops the pass the first time it is called after the pass uploaded a part."""

    def __init__(self, store: LocalStore, lock: PassLock) -> None:
        self.store, self.lock = store, lock
        self.stalled, self.go = threading.Event(), threading.Event()

    def __call__(self) -> None:
        if not self.stalled.is_set() and self.store.list(PREFIX + COMPACT_DIR):
            self.stalled.set()
            self.go.wait(60)
        self.lock.check()


def run_in_thread(fn: Any) -> tuple[threading.Thread, list[Any]]:
    out: list[Any] = []
    t = threading.Thread(target=lambda: out.append(fn()))
    t.start()
    return t, out


def test_a_pass_that_outlived_its_lock_neither_commits_nor_deletes(
    tmp_path: Path, redis_client: redis.Redis
) -> None:
    store = LocalStore(tmp_path / "store")
    snaps = write_tape(store)
    segments_before = store.list(PREFIX + "segments/")

    lock_a = PassLock(redis_client, compact_lock_key(RUN), ttl_s=1.0, refresh=False)
    assert lock_a.acquire()
    stall = Stall(store, lock_a)
    ta, out_a = run_in_thread(lambda: compact_tape(store, PREFIX, group_steps=4, unit_steps=8, fence=stall))
    assert stall.stalled.wait(60), "pass A never uploaded a part"
    a_parts = set(store.list(PREFIX + COMPACT_DIR))
    deadline = time.monotonic() + 10
    while redis_client.exists(compact_lock_key(RUN)) and time.monotonic() < deadline:
        time.sleep(0.05)  # A's lock expires in Redis while A is stalled

    b = compact_run(store, SETTINGS, RUN, redis_client)  # B: takes the lock, cleans up, compacts everything
    assert b["skipped"] is None and b["orphans_removed"] == len(a_parts) and b["steps"] == 40, b
    assert not a_parts & set(store.list(PREFIX + COMPACT_DIR)), "A's unlisted parts were not removed"
    assert store.list(PREFIX + "segments/") == []

    stall.go.set()
    ta.join(60)
    report_a = out_a[0]
    assert report_a.skipped and "compaction lock" in report_a.skipped
    assert report_a.deleted == 0
    comp = store.get_json(PREFIX + COMPACTION_NAME)
    listed = {p["key"] for u in comp["units"] for p in u["parts"]}
    assert all(store.exists(PREFIX + k) for k in listed), "the index lists a part that is gone"
    assert len(segments_before) == 10
    assert_every_step(store, snaps)


def test_a_pass_whose_commit_lost_the_race_leaves_the_index_alone(
    tmp_path: Path, redis_client: redis.Redis
) -> None:
    """A passed its fence and is writing its index when its lock vanishes (Redis lost it) and B commits first:
    the compare-and-set write of compaction.json fails, A deletes nothing."""
    store = LocalStore(tmp_path / "store")
    snaps = write_tape(store)
    lock_a = PassLock(redis_client, compact_lock_key(RUN), ttl_s=30.0)
    assert lock_a.acquire()
    entered, go = threading.Event(), threading.Event()
    real_put_if = store.put_if

    def put_if(key: str, data: bytes, etag: str | None) -> str:
        if key.endswith(COMPACTION_NAME) and threading.current_thread().name == "pass-a":
            entered.set()
            go.wait(60)
        return real_put_if(key, data, etag)

    store.put_if = put_if  # type: ignore[method-assign]
    out_a: list[Any] = []
    ta = threading.Thread(
        target=lambda: out_a.append(
            compact_tape(store, PREFIX, group_steps=4, unit_steps=8, fence=lock_a.check)
        ),
        name="pass-a",
    )
    ta.start()
    assert entered.wait(60)
    redis_client.delete(compact_lock_key(RUN))  # the lock is gone (e.g. Redis restarted without it)
    b = compact_run(store, SETTINGS, RUN, redis_client)
    assert b["skipped"] is None and b["steps"] == 40 and b["orphans_removed"] >= 1, b
    go.set()
    ta.join(60)
    lock_a.release()
    assert out_a[0].skipped and "changed while this pass ran" in out_a[0].skipped
    assert out_a[0].deleted == 0
    assert_every_step(store, snaps)
    c = compact_run(store, SETTINGS, RUN, redis_client)  # the next pass finds nothing left to do
    assert c["skipped"] == "nothing to compact yet" and c["deleted"] == 0
    assert_every_step(store, snaps)
