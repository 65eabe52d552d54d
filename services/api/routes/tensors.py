"""Captured tensors and steps of a run, and diffs between two steps (computed by the analyzer)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Query, Request, Response

from netlapse.api.analysis import describe_steps, run_analysis
from netlapse.api.deps import CeleryDep, RunDep, SettingsDep, StoreDep
from netlapse.api.errors import invalid, not_found
from netlapse.api.responses import tensor_response
from netlapse.core.modelspec import tensor_kind
from netlapse.core.queue import TASK_DIFF
from netlapse.core.results import npy_load, open_tape, request_key
from netlapse.core.schemas import DiffTask, RunRecord
from netlapse.core.store import ObjectNotFound, Store
from netlapse.core.tape import TapeReader

router = APIRouter(tags=["tensors"])


def load_tape(store: Store, rec: RunRecord) -> TapeReader:
    """The run's tape, or 404 when nothing has been committed yet."""
    try:
        return open_tape(store, rec.id)
    except ObjectNotFound:
        raise not_found(f"run {rec.id} has no committed snapshots yet (status {rec.status})") from None


def check_tensor(tape: TapeReader, name: str) -> None:
    names = [t.name for t in tape.tensors()]
    if name not in names:
        raise not_found(f"unknown tensor {name!r}; this run captured: {', '.join(names)}")


def check_step(tape: TapeReader, step: int, field: str) -> None:
    """404 naming the captured steps when ``step`` is not one of them."""
    steps = tape.steps()
    if step not in set(steps):
        raise not_found(f"{field}={step} was not captured; {describe_steps(steps)}")


def check_step_pair(store: Store, rec: RunRecord, name: str, from_: int, to: int) -> TapeReader:
    """The tape, after checking ``from <= to``, the tensor name and that both steps were captured."""
    if from_ > to:
        raise invalid(["query", "from"], f"from ({from_}) must not be greater than to ({to})")
    tape = load_tape(store, rec)
    check_tensor(tape, name)
    check_step(tape, from_, "from")
    check_step(tape, to, "to")
    return tape


@router.get("/runs/{run_id}/steps")
def steps(run_id: str, rec: RunDep, store: StoreDep) -> dict[str, Any]:
    """Captured (committed) steps."""
    return {"steps": load_tape(store, rec).steps()}


@router.get("/runs/{run_id}/tensors")
def tensors(run_id: str, rec: RunDep, store: StoreDep) -> dict[str, Any]:
    """Captured tensors: name, shape, dtype and the layer they belong to."""
    out = []
    for t in load_tape(store, rec).tensors():
        kind = tensor_kind(rec.model, t.name) if rec.model is not None else module_kind(rec, t.name)
        out.append({"name": t.name, "shape": list(t.shape), "dtype": t.dtype, **kind})
    return {"tensors": out}


_MODULE_KINDS = {"Conv2d": "conv2d", "Linear": "linear"}


def module_kind(rec: RunRecord, name: str) -> dict[str, str]:
    """An SDK run's tensor: its module path (``block.conv``), the module's kind and the tensor's role."""
    layer, _, role = name.rpartition(".")
    cls = (rec.sdk.modules if rec.sdk else {}).get(layer, "")
    kind = _MODULE_KINDS.get(cls) or ("batchnorm" if cls.startswith("BatchNorm") else cls.lower() or "other")
    return {"layer": layer, "kind": kind, "role": role}


@router.get("/runs/{run_id}/tensors/{name}")
def tensor(
    run_id: str, name: str, request: Request, rec: RunDep, store: StoreDep, step: int = Query(..., ge=0)
) -> Response:
    """One tensor at one captured step, bit-exact."""
    tape = load_tape(store, rec)
    check_tensor(tape, name)
    check_step(tape, step, "step")
    return tensor_response(request, {"name": name, "step": step}, tape.read(name, step))


@router.get("/runs/{run_id}/diff/{name}")
def diff(
    run_id: str,
    name: str,
    request: Request,
    rec: RunDep,
    store: StoreDep,
    celery: CeleryDep,
    settings: SettingsDep,
    from_: int = Query(..., alias="from", ge=0),
    to: int = Query(..., ge=0),
) -> Response:
    """value(to) − value(from) with summary stats, computed by the analyzer worker and cached in the store."""
    check_step_pair(store, rec, name, from_, to)
    key = request_key(run_id, "diff", {"name": name, "from": from_, "to": to})
    if not store.exists(key + ".json"):
        task = DiffTask(run_id=run_id, name=name, from_step=from_, to_step=to)
        key = run_analysis(celery, settings, TASK_DIFF, task.model_dump())
    meta = store.get_json(key + ".json")
    return tensor_response(request, meta, npy_load(store.get(key + ".npy")))
