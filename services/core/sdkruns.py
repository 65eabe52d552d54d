"""Metrics and tape summary of SDK runs in a store, shared by the api's ingest routes and the SDK's offline mode.

Metrics arrive in numbered batches; each is stored once as its own part, ``runs/{id}/metrics/sdk-{seq}.jsonl``
(one JSON row per line), read like the trainer's parts (netlapse.core.metrics), and when the run ends the parts
are merged into ``runs/{id}/metrics.json`` and dropped.
"""

from __future__ import annotations

import json
from typing import Any

from netlapse.core.metrics import metrics_parts_prefix, read_metrics
from netlapse.core.schemas import metrics_key, tape_prefix
from netlapse.core.store import ObjectNotFound, Store
from netlapse.core.tape import TapeReader


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


def finalize_metrics(store: Store, run_id: str) -> dict[str, list[dict[str, Any]]]:
    """Merge the parts into metrics.json (written first) and drop them; returns the merged metrics."""
    merged = read_metrics(store, run_id)
    if store.list(metrics_parts_prefix(run_id)):
        store.put_json(metrics_key(run_id), merged)
        store.delete_prefix(metrics_parts_prefix(run_id))
    return merged


def tape_summary(store: Store, run_id: str) -> dict[str, Any]:
    """Whether the run's tape is complete, its captured steps and sizes (zeros before its first manifest)."""
    try:
        r = TapeReader(store, tape_prefix(run_id))
    except ObjectNotFound:
        return {"complete": False, "steps_captured": 0, "last_step": None, "raw_bytes": 0, "stored_bytes": 0}
    steps = r.steps()
    return {
        "complete": bool(r.complete),
        "steps_captured": len(steps),
        "last_step": steps[-1] if steps else None,
        "raw_bytes": r.raw_bytes,
        "stored_bytes": r.stored_bytes,
    }
