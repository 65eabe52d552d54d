"""Run records in the object store: the source of truth for every run, written compare-and-set.

Every change after creation goes through :meth:`RunRepository.update`: read the record with its version
(ETag on S3, a content digest on disk), change it, and write it only if nobody wrote in between
(``If-Match``), else read again and re-apply. So the api's cancel, a delete and the trainer's saves cannot
overwrite each other, and a deleted record is never written back (there is no version left to match).
"""

from __future__ import annotations

import secrets
from collections.abc import Callable

from netlapse.core.schemas import TERMINAL_STATUSES, RunRecord, run_key, utcnow
from netlapse.core.store import ObjectNotFound, PreconditionFailed, Store

CAS_ATTEMPTS = 50


class RunNotFound(KeyError):
    def __init__(self, run_id: str) -> None:
        super().__init__(run_id)
        self.run_id = run_id

    def __str__(self) -> str:
        return f"run {self.run_id!r} not found"


class RunExists(ValueError):
    """create() of an id that already has a record."""


def new_run_id() -> str:
    return secrets.token_hex(6)


class RunRepository:
    """Reads and writes ``runs/{id}/run.json``."""

    def __init__(self, store: Store) -> None:
        self.store = store

    def get(self, run_id: str) -> RunRecord:
        try:
            return RunRecord.model_validate_json(self.store.get(run_key(run_id)))
        except ObjectNotFound:
            raise RunNotFound(run_id) from None

    def get_versioned(self, run_id: str) -> tuple[RunRecord, str]:
        """The record and its version tag."""
        try:
            data, etag = self.store.get_versioned(run_key(run_id))
        except ObjectNotFound:
            raise RunNotFound(run_id) from None
        return RunRecord.model_validate_json(data), etag

    def create(self, rec: RunRecord) -> None:
        """Store a new record; RunExists if the id is taken (never overwrites)."""
        try:
            self.store.put_if(run_key(rec.id), rec.model_dump_json().encode(), None)
        except PreconditionFailed:
            raise RunExists(f"run {rec.id!r} already exists") from None

    def update(self, run_id: str, change: Callable[[RunRecord], bool | None]) -> RunRecord:
        """Apply ``change`` to the current record and write it compare-and-set, retrying on a conflict.

        ``change`` mutates the record it is given; returning False means "nothing to write" (the record is
        returned as read). It may run several times, each time on a freshly read record, so it must decide
        from what it is given. RunNotFound when the record is (or becomes) deleted: it is never re-created."""
        for _ in range(CAS_ATTEMPTS):
            rec, etag = self.get_versioned(run_id)
            if change(rec) is False:
                return rec
            try:
                self.store.put_if(run_key(run_id), rec.model_dump_json().encode(), etag)
            except PreconditionFailed:
                if not self.store.exists(run_key(run_id)):
                    raise RunNotFound(run_id) from None
                continue
            return rec
        raise RuntimeError(f"run {run_id}: {CAS_ATTEMPTS} conflicting writes in a row, giving up")

    def request_cancel(self, run_id: str) -> tuple[RunRecord, bool]:
        """Cancel a run (compare-and-set): a queued run ends ``cancelled`` at once, a running one gets
        ``cancel_requested`` (its trainer stops at its next check). Returns (record, whether it applied);
        False means the run was already terminal."""
        applied = False

        def change(cur: RunRecord) -> bool:
            nonlocal applied
            applied = cur.status not in TERMINAL_STATUSES
            if not applied:
                return False
            cur.cancel_requested = True
            if cur.status == "queued":
                cur.status, cur.finished_at = "cancelled", utcnow()
            return True

        rec = self.update(run_id, change)
        return rec, applied

    def save(self, rec: RunRecord) -> None:
        """Write ``rec`` whole, creating it if absent: only for a record nobody else can be writing yet
        (a new run, a test). Everything else uses update(), which never loses a concurrent change."""
        self.store.put(run_key(rec.id), rec.model_dump_json().encode())

    def exists(self, run_id: str) -> bool:
        return self.store.exists(run_key(run_id))

    def list(self) -> list[RunRecord]:
        """Every run, newest first."""
        out = []
        for run_id in self.store.children("runs/"):
            try:
                out.append(RunRecord.model_validate_json(self.store.get(run_key(run_id))))
            except ObjectNotFound:
                continue  # deleted between list and get, or a folder without a record
        out.sort(key=lambda r: r.created_at, reverse=True)
        return out

    def delete(self, run_id: str) -> int:
        """Delete the run with everything under ``runs/{id}/``; the record goes first, so no writer can
        update it afterwards (their conditional writes fail) and readers stop finding the run at once."""
        try:
            self.store.delete_prefix(run_key(run_id))
        except ObjectNotFound:
            pass
        return self.store.delete_prefix(f"runs/{run_id}/")
