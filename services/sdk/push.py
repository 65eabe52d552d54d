"""``netlapse push DIR/RUN_ID``: upload an offline run to a server, resumably and idempotently.

The server run gets the offline run's id, so pushing again finds it: a finished push changes nothing, an
interrupted one goes on where it stopped (segments the server has verified are not sent again).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from netlapse.core.metrics import read_metrics
from netlapse.core.program import program_key
from netlapse.core.runs import RunRepository
from netlapse.core.schemas import TERMINAL_STATUSES, tape_prefix
from netlapse.core.tape import SEGMENTS_DIR
from netlapse.sdk.offline import RunsDirStore, split_run_dir
from netlapse.sdk.sink import EVAL_KEYS
from netlapse.sdk.transport import IngestClient, sha256_hex

METRICS_BATCH = 1000


class PushRefused(RuntimeError):
    """The offline run cannot be pushed as it is (e.g. it is still being recorded)."""


def push_run(
    path: str | Path,
    server: str,
    token: str | None = None,
    *,
    force: bool = False,
    progress: Callable[[str, int, int], None] | None = None,
) -> dict[str, Any]:
    """Upload the offline run at ``path`` (``DIR/RUN_ID``) to ``server``; returns the server's run.

    A run still marked ``running`` (its process may be recording, or died) is refused unless ``force``:
    then it is pushed as ``failed``. ``progress(what, done, total)`` is called as uploads complete."""
    root, run_id = split_run_dir(path)
    store = RunsDirStore(root)
    rec = RunRepository(store).get(run_id)  # type: ignore[arg-type]
    status, error = rec.status, rec.error
    if status not in TERMINAL_STATUSES:
        if not force:
            raise PushRefused(
                f"run {run_id} is still marked running: its process is recording it, or died. Wait for it "
                "to finish, or push it as failed with --force"
            )
        status, error = "failed", "training process lost before the offline run was pushed"
    report = progress or (lambda what, done, total: None)
    sdk = rec.sdk
    client = IngestClient(server, token)
    try:
        out = client.create_run(
            {
                "id": run_id,
                "name": rec.name,
                "config": sdk.config if sdk else {},
                "offline": True,
                "created_at": rec.created_at.isoformat(),
            },
            retry=False,
        )
        if out["run"]["status"] in TERMINAL_STATUSES:
            report("already on the server", 1, 1)
            return dict(out["run"])
        if sdk is not None:
            client.watch(
                run_id,
                {
                    "modules": sdk.modules,
                    "buffers": sdk.buffers,
                    "every": rec.capture.every,
                    "torch_version": sdk.torch_version,
                    "host": sdk.host,
                },
            )
        state = client.state(run_id)
        _push_tape(client, store, run_id, state, report)
        _push_metrics(client, store, run_id, state, report)
        for key, put in ((program_key(run_id), "program"), *((k(run_id), p) for p, k in EVAL_KEYS.items())):
            if not store.exists(key):
                continue
            if put == "program":
                if not state["program"]:
                    client.put_program(run_id, store.get(key))
            elif not state["eval"].get(put):
                client.put_eval(run_id, put, store.get(key))
        summary = json.loads(rec.summary.model_dump_json())
        return dict(client.finish(run_id, {"status": status, "error": error, "summary": summary}))
    finally:
        client.close()


def _push_tape(
    client: IngestClient,
    store: RunsDirStore,
    run_id: str,
    state: dict[str, Any],
    report: Callable[[str, int, int], None],
) -> None:
    """Every segment the server has not verified, then the index objects (manifest last)."""
    prefix = tape_prefix(run_id)
    keys = [k.removeprefix(prefix) for k in store.list(prefix)]
    segments = sorted(k for k in keys if k.startswith(SEGMENTS_DIR))
    index = sorted(k for k in keys if not k.startswith(SEGMENTS_DIR) and k != "manifest.json")
    have: dict[str, str] = state.get("segments", {})
    todo = []
    for k in segments:
        data_sha = have.get(k.removeprefix(SEGMENTS_DIR))
        if data_sha is None or data_sha != sha256_hex(store.get(prefix + k)):
            todo.append(k)
    total = sum(store.size(prefix + k) for k in todo)
    done = 0
    report("segments", 0, total)
    for k in todo:
        data = store.get(prefix + k)
        client.put_tape_object(run_id, k, data)
        done += len(data)
        report("segments", done, total)
    for k in [*index, "manifest.json"]:
        if store.exists(prefix + k):
            client.put_tape_object(run_id, k, store.get(prefix + k))


def _push_metrics(
    client: IngestClient,
    store: RunsDirStore,
    run_id: str,
    state: dict[str, Any],
    report: Callable[[str, int, int], None],
) -> None:
    rows = read_metrics(store, run_id)["steps"]  # type: ignore[arg-type]
    sent = set(state.get("metrics_seqs", []))
    batches = [rows[i : i + METRICS_BATCH] for i in range(0, len(rows), METRICS_BATCH)]
    for seq, batch in enumerate(batches):
        if seq not in sent:
            client.metrics(run_id, seq, batch)
        report("metrics", seq + 1, len(batches))
