"""Run records in the object store: the source of truth for every run."""

from __future__ import annotations

import secrets

from netlapse.core.schemas import RunRecord, run_key
from netlapse.core.store import ObjectNotFound, Store


class RunNotFound(KeyError):
    def __init__(self, run_id: str) -> None:
        super().__init__(run_id)
        self.run_id = run_id

    def __str__(self) -> str:
        return f"run {self.run_id!r} not found"


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

    def save(self, rec: RunRecord) -> None:
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
        return self.store.delete_prefix(f"runs/{run_id}/")
