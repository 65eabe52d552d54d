"""Which run a trainer takes next, and the lease that says a trainer holds it.

The queue is the store: every ``queued`` run record is work, and so is a ``running`` record whose lease
expired (its trainer died) or whose holder is a dead process on this host. A Celery message on ``train``
is only a wake-up: the trainer that gets one takes the next claimable run, round-robin across owners (the
owner with the fewest running runs, then the one whose last run started longest ago, then that owner's
oldest run), so one user's backlog never starves another's. Taking a run is a compare-and-set write of its
record (status ``running``, ``lease_owner`` = this trainer, ``lease_until``), so two trainers can never both
take it; the trainer renews the lease while it trains (:class:`RunLease`) and every write it makes is
fenced by it. The reaper (:func:`reap`) sends wake-ups for claimable runs nobody is waking.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from netlapse.core.runs import RunNotFound, RunRepository
from netlapse.core.schemas import Progress, RunRecord, utcnow

log = logging.getLogger(__name__)

NEVER = datetime.min.replace(tzinfo=UTC)


def new_owner_token() -> str:
    """``host:pid:random``: who holds a lease (the pid lets a trainer on the same host see a dead holder)."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:12]}"


def holder_dead(owner: str | None) -> bool:
    """True when ``owner`` is a process on this host that no longer exists (killed mid-run)."""
    if not owner:
        return False
    host, _, rest = owner.partition(":")
    pid = rest.partition(":")[0]
    if host != socket.gethostname() or not pid.isdigit():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


def claimable(rec: RunRecord, now: datetime | None = None) -> bool:
    """Whether a trainer may take this run now: queued, or running under a lease that is dead."""
    if rec.source != "server":
        return False
    if rec.status == "queued":
        return not rec.cancel_requested
    if rec.status == "running":
        now = now or utcnow()
        return rec.lease_until is None or rec.lease_until < now or holder_dead(rec.lease_owner)
    return False


def fair_order(recs: list[RunRecord], can_run: Callable[[RunRecord], bool]) -> list[RunRecord]:
    """Claimable runs in the order a trainer should try them.

    Interrupted runs first (they were started; resuming them is owed), then queued runs owner by owner:
    fewest running runs, then the owner served longest ago (never served = first), then oldest run."""
    now = utcnow()
    running = Counter(r.owner for r in recs if r.status == "running" and not claimable(r, now))
    served: dict[str, datetime] = {}
    for r in recs:
        if r.started_at is not None and r.status != "queued":
            served[r.owner] = max(served.get(r.owner, NEVER), r.started_at)
    work = [r for r in recs if claimable(r, now) and can_run(r)]
    interrupted = sorted((r for r in work if r.status == "running"), key=lambda r: r.created_at)
    queued = [r for r in work if r.status == "queued"]
    by_owner: dict[str, list[RunRecord]] = {}
    for r in sorted(queued, key=lambda r: r.created_at):
        by_owner.setdefault(r.owner, []).append(r)
    owners = sorted(by_owner, key=lambda o: (running[o], served.get(o, NEVER), by_owner[o][0].created_at))
    # Round-robin across owners for the whole list (the first entry is what a wake-up takes).
    ordered: list[RunRecord] = []
    depth = 0
    while any(depth < len(by_owner[o]) for o in owners):
        ordered.extend(by_owner[o][depth] for o in owners if depth < len(by_owner[o]))
        depth += 1
    return interrupted + ordered


def claim_next(
    repo: RunRepository,
    owner: str,
    *,
    lease_s: float,
    max_attempts: int,
    can_run: Callable[[RunRecord], bool] = lambda r: True,
) -> RunRecord | None:
    """Take the next run (see fair_order) for ``owner`` with a compare-and-set write; None if there is none.

    A run past ``max_attempts`` is marked failed with the reason instead of being taken."""
    for cand in fair_order(repo.list(), can_run):
        outcome: dict[str, Any] = {}

        def take(cur: RunRecord, outcome: dict[str, Any] = outcome) -> bool:
            outcome.clear()
            if not claimable(cur) or not can_run(cur):
                return False
            now = utcnow()
            if cur.status == "running" and cur.attempts >= max_attempts:
                cur.status, cur.finished_at, cur.lease_owner, cur.lease_until = "failed", now, None, None
                cur.error = (
                    f"the trainer stopped {cur.attempts} times while running this run (killed, out of memory "
                    f"or its host lost); giving up after NETLAPSE_MAX_RUN_ATTEMPTS={max_attempts} attempts. "
                    "The tape up to the last committed segment is kept"
                )
                outcome["gave_up"] = True
                return True
            cur.status, cur.lease_owner = "running", owner
            cur.lease_until = now + timedelta(seconds=lease_s)
            cur.attempts += 1
            cur.started_at = cur.started_at or now
            cur.error = None
            outcome["taken"] = True
            return True

        try:
            rec = repo.update(cand.id, take)
        except RunNotFound:
            continue
        if outcome.get("gave_up"):
            log.warning("run %s failed after %d attempts", rec.id, rec.attempts)
            continue
        if outcome.get("taken"):
            return rec
    return None


class LeaseLost(RuntimeError):
    """This trainer no longer holds the run (another took it over, or it was deleted): it must stop writing."""


class RunLease:
    """Renews a run's lease in its record while it trains, and learns from the record about cancels,
    deletion and a takeover (so they reach the trainer even with Redis down).

    ``valid()`` is false from the moment the lease may have passed to someone else: every store write of
    the run goes through it (a fenced store), so a stalled trainer never writes over its successor."""

    def __init__(
        self,
        repo: RunRepository,
        run_id: str,
        owner: str,
        lease_s: float,
        progress: Callable[[], Progress | None] = lambda: None,
        interval_s: float | None = None,
    ) -> None:
        self.repo, self.run_id, self.owner, self.lease_s = repo, run_id, owner, lease_s
        self.progress = progress
        self.interval_s = interval_s if interval_s is not None else min(5.0, lease_s / 4)
        self.expires = time.monotonic() + lease_s * 0.8  # a safety margin against clock skew
        self.cancelled = False
        self.deleted = False
        self.lost = False
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def valid(self) -> bool:
        return not (self.lost or self.deleted) and time.monotonic() < self.expires

    def check(self) -> None:
        """Raise LeaseLost unless the lease is still ours."""
        if self.deleted:
            raise LeaseLost(f"run {self.run_id} was deleted while it trained")
        if not self.valid():
            raise LeaseLost(f"run {self.run_id}: this trainer lost its lease (another trainer may hold it)")

    def renew(self) -> None:
        """One renewal (compare-and-set); also picks up a cancel or deletion from the record."""
        started = time.monotonic()

        def change(cur: RunRecord) -> bool:
            if cur.lease_owner != self.owner or cur.status != "running":
                self.lost = True
                return False
            cur.lease_until = utcnow() + timedelta(seconds=self.lease_s)
            p = self.progress()
            if p is not None and p.step >= cur.progress.step:
                cur.progress = p
            self.cancelled = self.cancelled or cur.cancel_requested
            return True

        try:
            self.repo.update(self.run_id, change)
        except RunNotFound:
            self.deleted = True
            return
        if not self.lost:
            self.expires = started + self.lease_s * 0.8

    def _loop(self) -> None:
        while not self._stop.wait(self.interval_s):
            try:
                self.renew()
            except Exception:  # a store blip: try again next tick; valid() fences us if it lasts
                log.warning("renewing the lease of run %s failed", self.run_id, exc_info=True)
            if self.lost or self.deleted:
                return

    def start(self) -> RunLease:
        self._thread = threading.Thread(target=self._loop, name="netlapse-run-lease", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
