"""A run's metrics: per-step loss/accuracy and per-epoch validation, appended while it trains.

While a run trains, the trainer appends small JSON-lines parts under ``runs/{id}/metrics/`` (one every few
seconds, never rewriting what is stored); when the run ends it writes ``runs/{id}/metrics.json`` whole once
and drops the parts. A resumed attempt re-appends the steps it replays; readers keep one row per step and
per epoch (the replayed rows are bit-identical to the ones they repeat).
"""

from __future__ import annotations

import json
import logging
from typing import Any

from netlapse.core.schemas import metrics_key
from netlapse.core.store import ObjectNotFound, Store

log = logging.getLogger(__name__)


def metrics_parts_prefix(run_id: str) -> str:
    return f"runs/{run_id}/metrics/"


def read_metrics(store: Store, run_id: str) -> dict[str, list[dict[str, Any]]]:
    """``{"steps": [...], "epochs": [...]}``: the final file and any parts, one row per step/epoch, sorted."""
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
        except ObjectNotFound:  # finalized meanwhile: metrics.json (read above or just written) has it
            return (
                read_metrics(store, run_id) if store.exists(metrics_key(run_id)) else _sorted(steps, epochs)
            )
        for line in text.splitlines():
            if not line:
                continue
            row = json.loads(line)
            kind = row.pop("kind", "step")
            if kind == "epoch":
                epochs[int(row["epoch"])] = row
            else:
                steps[int(row["step"])] = row
    return _sorted(steps, epochs)


def _sorted(steps: dict[int, dict[str, Any]], epochs: dict[int, dict[str, Any]]) -> dict[str, Any]:
    return {"steps": [steps[k] for k in sorted(steps)], "epochs": [epochs[k] for k in sorted(epochs)]}


class MetricsLog:
    """The trainer's side: rows are buffered and appended as one new part per flush."""

    def __init__(self, store: Store, run_id: str, attempt: int) -> None:
        self.store, self.run_id, self.attempt = store, run_id, attempt
        self._pending: list[str] = []
        self._seq = 0

    def add_step(self, row: dict[str, Any]) -> None:
        self._pending.append(json.dumps(row, separators=(",", ":")))

    def add_epoch(self, row: dict[str, Any]) -> None:
        self._pending.append(json.dumps({"kind": "epoch", **row}, separators=(",", ":")))

    def flush(self) -> None:
        """Append the buffered rows as one part (nothing stored is rewritten)."""
        if not self._pending:
            return
        key = f"{metrics_parts_prefix(self.run_id)}{self.attempt:04d}-{self._seq:08d}.jsonl"
        self.store.put(key, ("\n".join(self._pending) + "\n").encode())
        self._pending = []
        self._seq += 1

    def finalize(self) -> dict[str, Any]:
        """Write metrics.json whole (once, when the run ends) and drop the parts; returns what it wrote."""
        self.flush()
        merged = read_metrics(self.store, self.run_id)
        self.store.put_json(metrics_key(self.run_id), merged)
        if self.store.list(metrics_parts_prefix(self.run_id)):
            self.store.delete_prefix(metrics_parts_prefix(self.run_id))
        return merged
