"""Run records and metrics of SDK runs in a store, shared by the api's ingest routes and the SDK's offline mode.

Metrics arrive in numbered batches; each is stored once as its own part, ``runs/{id}/metrics/sdk-{seq}.jsonl``
(one JSON row per line), and when the run ends the parts are merged into ``runs/{id}/metrics.json`` (one row per
step, later rows of a step win) and dropped — the layout the trainer's metrics use as well.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from netlapse.core.runs import RunNotFound, RunRepository
from netlapse.core.schemas import RunRecord, metrics_key
from netlapse.core.store import ObjectNotFound, Store


def metrics_parts_prefix(run_id: str) -> str:
    return f"runs/{run_id}/metrics/"


def metrics_part_key(run_id: str, seq: int) -> str:
    """Where metric batch ``seq`` of an SDK run is stored."""
    return f"{metrics_parts_prefix(run_id)}sdk-{seq:08d}.jsonl"


def put_metrics_part(store: Store, run_id: str, seq: int, rows: list[dict[str, Any]]) -> bool:
    """Store batch ``seq`` unless it is stored already (a retried batch); True when it was new."""
    key = metrics_part_key(run_id, seq)
    if store.exists(key):
        return False
    store.put(
        key, "".join(json.dumps(r, separators=(",", ":"), allow_nan=False) + "\n" for r in rows).encode()
    )
    return True


def read_metric_rows(store: Store, run_id: str) -> dict[str, list[dict[str, Any]]]:
    """``{"steps": [...], "epochs": [...]}`` from metrics.json and any parts, one row per step, in step order."""
    steps: dict[int, dict[str, Any]] = {}
    epochs: dict[int, dict[str, Any]] = {}
    try:
        whole = store.get_json(metrics_key(run_id))
        steps.update((int(r["step"]), r) for r in whole.get("steps", []))
        epochs.update((int(r["epoch"]), r) for r in whole.get("epochs", []))
    except ObjectNotFound:
        pass
    for key in store.list(metrics_parts_prefix(run_id)):
        try:
            text = store.get(key).decode()
        except ObjectNotFound:  # merged and dropped meanwhile
            continue
        for line in text.splitlines():
            if line:
                row = json.loads(line)
                if row.pop("kind", "step") == "epoch":
                    epochs[int(row["epoch"])] = row
                else:
                    steps[int(row["step"])] = {**steps.get(int(row["step"]), {}), **row}
    return {"steps": [steps[k] for k in sorted(steps)], "epochs": [epochs[k] for k in sorted(epochs)]}


def finalize_metrics(store: Store, run_id: str) -> dict[str, list[dict[str, Any]]]:
    """Merge the parts into metrics.json (written first) and drop them; returns the merged metrics."""
    merged = read_metric_rows(store, run_id)
    if store.list(metrics_parts_prefix(run_id)):
        store.put_json(metrics_key(run_id), merged)
        store.delete_prefix(metrics_parts_prefix(run_id))
    return merged


def update_record(repo: RunRepository, run_id: str, change: Callable[[RunRecord], bool | None]) -> RunRecord:
    """Read the record, let ``change`` mutate it (False = nothing to write), write it back; the record as
    stored afterwards. RunNotFound if there is none."""
    rec = repo.get(run_id)
    if change(rec) is False:
        return rec
    repo.save(rec)
    return rec


def create_record(repo: RunRepository, rec: RunRecord) -> RunRecord | None:
    """Store a new record; None when created, else the record already stored under that id (never replaced)."""
    try:
        return repo.get(rec.id)
    except RunNotFound:
        repo.save(rec)
        return None
