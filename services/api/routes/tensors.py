"""Captured tensors and steps of a run (diffs between two steps are an analysis: routes/analyses.py)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Query, Request, Response

from netlapse.analyzer.heatmap import exact_window
from netlapse.analyzer.registry import AnalysisFailure
from netlapse.api.analysis import answer_response, describe_steps, http_error
from netlapse.api.deps import RunDep, StoreDep
from netlapse.api.errors import invalid, not_found
from netlapse.api.responses import tensor_response
from netlapse.core.modelspec import tensor_kind
from netlapse.core.results import open_tape
from netlapse.core.schemas import RunRecord
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
    run_id: str,
    name: str,
    request: Request,
    rec: RunDep,
    store: StoreDep,
    step: int | None = Query(None, ge=0, description="a captured step"),
    from_: int | None = Query(None, alias="from", ge=0, description="with window: values at from and to"),
    to: int | None = Query(None, ge=0, description="with window: the difference to − from as well"),
    window: str | None = Query(None, description="r0,c0,r1,c1 of the tensor's 2-D view: exact values there"),
) -> Response:
    """One tensor at one captured step, bit-exact; with ``window``, only that region of its 2-D view (the view the
    explorer draws), at ``step`` or at ``from`` and ``to`` with their difference
    (``netlapse.analyzer.heatmap.exact_window``)."""
    tape = load_tape(store, rec)
    check_tensor(tape, name)
    pair = from_ is not None and to is not None
    if window is not None and step is None and pair:
        assert from_ is not None and to is not None
        if from_ > to:
            raise invalid(["query", "from"], f"from ({from_}) must not be greater than to ({to})")
        check_step(tape, from_, "from")
        check_step(tape, to, "to")
        return window_response(request, tape, name, window, None, (from_, to))
    if step is None or from_ is not None or to is not None:
        raise invalid(["query", "step"], "give step (or, with window, both from and to instead of step)")
    check_step(tape, step, "step")
    if window is not None:
        return window_response(request, tape, name, window, step, None)
    return tensor_response(request, {"name": name, "step": step}, tape.read(name, step))


def window_response(
    request: Request, tape: TapeReader, name: str, raw: str, step: int | None, steps: tuple[int, int] | None
) -> Response:
    try:
        ans = exact_window(tape, name, raw, step, steps)
    except AnalysisFailure as exc:  # a bad window: the same 422 as on /diff and /heatmap
        err = http_error(exc)
        assert err is not None
        raise err from None
    return answer_response(request, ans, f"window of {name}")
