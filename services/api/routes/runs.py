"""Runs: create (enqueue on the trainer), list, read, cancel, delete, metrics."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, HTTPException, Query, Response

from netlapse.api.deps import (
    CeleryDep,
    CurrentUser,
    EventsDep,
    RepoDep,
    RunDep,
    SettingsDep,
    StoreDep,
)
from netlapse.api.errors import invalid
from netlapse.core.auth import may_access
from netlapse.core.datasets import list_datasets
from netlapse.core.events import EventStream
from netlapse.core.modelspec import ModelSpec
from netlapse.core.queue import TASK_TRAIN, TRAIN_QUEUE
from netlapse.core.results import forget_tape
from netlapse.core.runs import new_run_id
from netlapse.core.schemas import (
    TERMINAL_STATUSES,
    Progress,
    RunCreate,
    RunPublic,
    RunRecord,
    TrainTask,
    metrics_key,
    utcnow,
)
from netlapse.core.store import ObjectNotFound

router = APIRouter(tags=["runs"])

MAX_LISTED_RUNS = 1000


def public(rec: RunRecord, events: EventStream) -> RunPublic:
    """The record, with live progress from Redis while the run is active (the store is updated at the end)."""
    out = RunPublic.model_validate(rec.model_dump())
    if rec.status not in TERMINAL_STATUSES:
        try:
            live = events.live(rec.id)
        except Exception:  # Redis down: the stored record is still a correct, if older, answer
            live = {}
        if "progress" in live:
            out.progress = Progress.model_validate({**out.progress.model_dump(), **live["progress"]})
    return out


@router.post("/runs", status_code=201)
def create_run(
    body: RunCreate,
    settings: SettingsDep,
    repo: RepoDep,
    events: EventsDep,
    celery: CeleryDep,
    user: CurrentUser,
) -> RunPublic:
    """Validate, store the run record (status queued, owned by the caller), and enqueue training."""
    if body.training.epochs > settings.max_epochs:
        raise invalid(
            ["body", "training", "epochs"],
            f"epochs must be at most {settings.max_epochs} on this server (got {body.training.epochs})",
        )
    known = {d.name: d for d in list_datasets(settings)}
    ds = known.get(body.dataset)
    if ds is None:
        raise invalid(
            ["body", "dataset"], f"unknown dataset {body.dataset!r}; available: {', '.join(sorted(known))}"
        )
    if not ds.available:
        raise invalid(["body", "dataset"], f"dataset {body.dataset!r} is not available here: {ds.reason}")
    spec: ModelSpec = body.model.resolve()
    if list(spec.input_shape) != list(ds.input_shape) or spec.num_classes != ds.num_classes:
        raise invalid(
            ["body", "model"],
            f"the model takes input {list(spec.input_shape)} with {spec.num_classes} classes, "
            f"dataset {body.dataset!r} has input {list(ds.input_shape)} with {ds.num_classes} classes",
        )
    rec = RunRecord(
        id=new_run_id(),
        name=body.name,
        owner=user,
        preset=body.model.preset,
        model=spec,
        dataset=body.dataset,
        training=body.training,
        capture=body.capture,
    )
    repo.save(rec)
    events.publish(rec.id, "status", {"status": "queued", "error": None})
    celery.send_task(TASK_TRAIN, args=[TrainTask(run_id=rec.id).model_dump()], queue=TRAIN_QUEUE)
    return public(rec, events)


@router.get("/runs")
def list_runs(
    repo: RepoDep,
    events: EventsDep,
    settings: SettingsDep,
    user: CurrentUser,
    limit: int = Query(MAX_LISTED_RUNS, ge=1, le=MAX_LISTED_RUNS, description="at most this many runs"),
) -> dict[str, Any]:
    """The caller's runs (every run when auth is off), newest first; ``total`` counts them all."""
    mine = [r for r in repo.list() if may_access(settings.auth_required, user, r)]
    return {"runs": [public(r, events).model_dump(mode="json") for r in mine[:limit]], "total": len(mine)}


@router.get("/runs/{run_id}")
def get_run(run_id: str, rec: RunDep, events: EventsDep) -> RunPublic:
    """One run: status, spec, progress, summary."""
    return public(rec, events)


@router.post("/runs/{run_id}/cancel")
def cancel_run(run_id: str, rec: RunDep, repo: RepoDep, events: EventsDep) -> RunPublic:
    """Ask a queued or running run to stop; the trainer sees the flag within a few batches."""
    if rec.status in TERMINAL_STATUSES:
        raise HTTPException(
            409, detail=f"run {run_id} already {rec.status}; only queued or running runs can be cancelled"
        )
    events.request_cancel(run_id)
    if rec.status == "queued":
        rec.status, rec.finished_at = "cancelled", utcnow()
        repo.save(rec)
        events.publish(run_id, "status", {"status": "cancelled", "error": None})
    return public(rec, events)


@router.delete("/runs/{run_id}", status_code=204)
def delete_run(run_id: str, rec: RunDep, repo: RepoDep, events: EventsDep, store: StoreDep) -> Response:
    """Delete a finished run with its tape, metrics and cached analyses."""
    if rec.status not in TERMINAL_STATUSES:
        raise HTTPException(409, detail=f"run {run_id} is {rec.status}; cancel it first, then delete")
    repo.delete(run_id)
    forget_tape(store, run_id)
    events.delete(run_id)
    return Response(status_code=204)


@router.get("/runs/{run_id}/metrics")
def metrics(run_id: str, rec: RunDep, store: StoreDep) -> dict[str, Any]:
    """Loss/accuracy per step and validation per epoch (a running run's are at most a few seconds old)."""
    try:
        return store.get_json(metrics_key(run_id))
    except ObjectNotFound:
        return {"steps": [], "epochs": []}
