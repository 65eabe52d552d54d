"""Runs: create (enqueue on the trainer), list, read, cancel, delete, metrics."""

from __future__ import annotations

import logging
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
from netlapse.api.errors import invalid, not_found
from netlapse.api.limits import refuse_costly_spec, refuse_over_user_bounds
from netlapse.core.auth import may_access
from netlapse.core.datasets import list_datasets
from netlapse.core.events import EventStream
from netlapse.core.metrics import read_metrics
from netlapse.core.modelspec import ModelSpec
from netlapse.core.queue import TASK_TRAIN, TRAIN_GPU_QUEUE, TRAIN_QUEUE
from netlapse.core.results import forget_tape
from netlapse.core.runs import RunNotFound, new_run_id
from netlapse.core.schemas import (
    TERMINAL_STATUSES,
    Progress,
    RunCreate,
    RunPublic,
    RunRecord,
    TrainTask,
)

log = logging.getLogger(__name__)
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
        # Redis may have restarted with older progress than the trainer's last record write: newest wins.
        if "progress" in live and int(live["progress"].get("step", 0)) >= out.progress.step:
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
    if body.training.device == "cuda" and not settings.cuda_trainers:
        raise invalid(
            ["body", "training", "device"],
            "this server has no GPU trainers (NETLAPSE_CUDA_TRAINERS is off): use device 'auto' or 'cpu'",
        )
    spec: ModelSpec = body.model.resolve()
    refuse_costly_spec(spec, body.training.batch_size, settings, inline=body.model.preset is None)
    if list(spec.input_shape) != list(ds.input_shape) or spec.num_classes != ds.num_classes:
        raise invalid(
            ["body", "model"],
            f"the model takes input {list(spec.input_shape)} with {spec.num_classes} classes, "
            f"dataset {body.dataset!r} has input {list(ds.input_shape)} with {ds.num_classes} classes",
        )
    refuse_over_user_bounds(  # 429 over the active-run quota, 422 over the capture budget
        spec,
        body.training,
        body.capture,
        ds.train_size,
        settings,
        user,
        repo.list(),
        {d.name: d.train_size for d in known.values()},
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
    repo.create(rec)  # the stored record is the queue; the message below only wakes a trainer
    queue = TRAIN_GPU_QUEUE if body.training.device == "cuda" else TRAIN_QUEUE
    try:
        events.publish(rec.id, "status", {"status": "queued", "error": None})
        celery.send_task(
            TASK_TRAIN,
            args=[TrainTask(run_id=rec.id).model_dump()],
            queue=queue,
            retry_policy={"max_retries": 1, "interval_start": 0, "interval_step": 0.5},
        )
    except Exception:  # Redis away: the trainers' reaper wakes a trainer for every queued record
        log.warning("could not send the wake-up for run %s; the reaper will", rec.id, exc_info=True)
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
    try:
        rec, applied = repo.request_cancel(run_id)  # compare-and-set: never overwrites a trainer's save
    except RunNotFound:
        raise not_found(f"run {run_id!r} not found") from None
    if not applied:
        raise HTTPException(
            409, detail=f"run {run_id} already {rec.status}; only queued or running runs can be cancelled"
        )
    try:
        events.request_cancel(run_id)  # the fast path; the record above is the truth
        if rec.status == "cancelled":
            events.publish(run_id, "status", {"status": "cancelled", "error": None})
    except Exception:  # Redis is a cache: the trainer sees the cancel in the record
        log.warning("could not publish the cancel of run %s to Redis", run_id, exc_info=True)
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
    return read_metrics(store, run_id)
