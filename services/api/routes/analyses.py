"""The method's analyses over HTTP: initial value vs change, trajectories, per-label activations (Eq. 1),
feature maps. The api validates, serves cached results straight from the store, and otherwise sends the
analyzer a task by name and waits for it (trajectories are read from the tape directly)."""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
from celery import Celery
from fastapi import APIRouter, Query, Request, Response

from netlapse.api.analysis import describe_steps, run_analysis, wait_analysis
from netlapse.api.deps import CeleryDep, RunDep, SettingsDep, StoreDep
from netlapse.api.errors import invalid, not_found
from netlapse.api.responses import NPY, FastJSONResponse, array_json, wants_npy
from netlapse.api.routes.tensors import check_step_pair, check_tensor, load_tape
from netlapse.core.datasets import list_datasets
from netlapse.core.modelspec import conv_layers
from netlapse.core.queue import ANALYZE_QUEUE, TASK_ACTIVATIONS, TASK_FEATUREMAPS, TASK_SCATTER
from netlapse.core.results import npy_bytes, npy_load, request_key
from netlapse.core.schemas import (
    ActivationCompareRequest,
    ActivationRequest,
    ActivationTask,
    FeatureMapTask,
    RunRecord,
    ScatterTask,
)
from netlapse.core.settings import Settings
from netlapse.core.store import ObjectNotFound, Store
from netlapse.core.tape import TapeReader

router = APIRouter(tags=["analyses"])

MAX_TRAJECTORY_INDICES = 1000
MAX_SCATTER_POINTS = 200_000


# --- validation shared by the endpoints ----------------------------------------------------------------------


def require_step(tape: TapeReader, step: int, loc: list[str | int]) -> None:
    """422 naming the captured steps when ``step`` is not one of them."""
    steps = tape.steps()
    if step not in set(steps):
        raise invalid(
            loc,
            f"step {step} was not captured; {describe_steps(steps)}",
            first=steps[0] if steps else None,
            last=steps[-1] if steps else None,
        )


def require_conv_layer(rec: RunRecord, layer: str, loc: list[str | int]) -> None:
    """422 listing the model's conv layers when ``layer`` is not one of them."""
    convs = conv_layers(rec.model)
    if layer in convs:
        return
    if not convs:
        raise invalid(
            loc, f"this run's model has no conv layers, so {layer!r} cannot be analysed per feature map"
        )
    raise invalid(
        loc,
        f"layer {layer!r} is not a conv layer of this model; conv layers: {', '.join(convs)}",
        choices=convs,
    )


def split_size(settings: Settings, dataset: str, split: str) -> int | None:
    """Number of inputs of a split of a known dataset (from its catalog entry; no files are read)."""
    for info in list_datasets(settings):
        if info.name == dataset:
            return info.train_size if split == "train" else info.test_size
    return None


# --- initial value vs change -----------------------------------------------------------------------------------


@router.get("/runs/{run_id}/scatter/{name}")
def scatter(
    run_id: str,
    name: str,
    rec: RunDep,
    store: StoreDep,
    celery: CeleryDep,
    settings: SettingsDep,
    from_: int = Query(0, alias="from", ge=0, description="step of the initial value (x)"),
    to: int = Query(..., ge=0, description="step the change (y) is measured to"),
    max_points: int = Query(
        20_000, ge=1, le=MAX_SCATTER_POINTS, description="at most this many sampled points"
    ),
    bins: int = Query(64, ge=2, le=512, description="bins per axis of the exact 2-D histogram"),
    seed: int = Query(0, ge=0, le=2**31 - 1, description="seed of the point sample"),
) -> Response:
    """x = value at ``from``, y = value(to) − value(from): a seeded sample of points, an exact 2-D histogram of all
    elements (``counts[x_bin][y_bin]``), Pearson r, and the fractions of positive values that grew and negative
    values that shrank."""
    check_step_pair(store, rec, name, from_, to)
    task = ScatterTask(
        run_id=run_id, name=name, from_step=from_, to_step=to, max_points=max_points, bins=bins, seed=seed
    )
    key = request_key(run_id, "scatter", task.cache_params())
    cached = store.exists(key + ".json")
    if not cached:
        key = run_analysis(celery, settings, TASK_SCATTER, task.model_dump())
    meta = store.get_json(key + ".json")
    xy = npy_load(store.get(key + ".npy"))
    return FastJSONResponse({**meta, "x": xy[0], "y": xy[1], "cached": cached})


# --- trajectories ------------------------------------------------------------------------------------------------


def parse_indices(raw: str, field: str, limit: int) -> list[int]:
    """Comma-separated non-negative ints, 1..limit of them, or a 422 naming ``field``."""
    try:
        idx = [int(s) for s in raw.split(",") if s.strip()]
    except ValueError:
        raise invalid(["query", field], f"{field} must be comma-separated integers, e.g. 0,1,2") from None
    if not idx or len(idx) > limit:
        raise invalid(["query", field], f"give between 1 and {limit} indices (got {len(idx)})")
    return idx


@router.get("/runs/{run_id}/trajectory/{name}")
def trajectory(
    run_id: str,
    name: str,
    request: Request,
    rec: RunDep,
    store: StoreDep,
    index: str = Query(
        ..., description=f"flat row-major element indices, comma-separated, at most {MAX_TRAJECTORY_INDICES}"
    ),
) -> Response:
    """Values of chosen elements of one tensor at every captured step: ``values[step_i][index_j]``."""
    tape = load_tape(store, rec)
    check_tensor(tape, name)
    idx = parse_indices(index, "index", MAX_TRAJECTORY_INDICES)
    info = tape.tensor(name)
    bad = [i for i in idx if not 0 <= i < info.numel]
    if bad:
        raise invalid(
            ["query", "index"],
            f"index {bad[0]} is out of range for {name} with shape {list(info.shape)}: "
            f"valid flat indices are 0..{info.numel - 1}",
            min=0,
            max=info.numel - 1,
        )
    steps, values = tape.trajectory(name, idx)
    meta: dict[str, Any] = {"name": name, "shape": [len(steps), len(idx)], "dtype": str(values.dtype)}
    if wants_npy(request):
        # Steps and indices stay out of the headers (they can be long); the JSON form carries them.
        headers = {
            "X-Netlapse-Name": name,
            "X-Netlapse-First-Step": str(steps[0]) if steps else "",
            "X-Netlapse-Last-Step": str(steps[-1]) if steps else "",
            "X-Netlapse-Steps-Count": str(len(steps)),
        }
        return Response(npy_bytes(values), media_type=NPY, headers=headers)
    return FastJSONResponse({**meta, "steps": steps, "indices": idx, "values": values})


# --- per-label activations (Eq. 1) -------------------------------------------------------------------------------


def _activation_result(
    store: Store, task: ActivationTask, sent: Any | None, settings: Settings
) -> dict[str, Any]:
    key = request_key(task.run_id, "activations", task.cache_params())
    if sent is None:
        return {**store.get_json(key + ".json"), "cached": True}
    key = wait_analysis(sent, settings)
    return {**store.get_json(key + ".json"), "cached": False}


def _send_if_missing(store: Store, celery: Celery, task: ActivationTask) -> Any | None:
    """The sent task, or None when the result is already in the store."""
    key = request_key(task.run_id, "activations", task.cache_params())
    if store.exists(key + ".json"):
        return None
    return celery.send_task(TASK_ACTIVATIONS, args=[task.model_dump()], queue=ANALYZE_QUEUE)


@router.post("/runs/{run_id}/activations")
def activations(
    run_id: str,
    body: ActivationRequest,
    rec: RunDep,
    store: StoreDep,
    celery: CeleryDep,
    settings: SettingsDep,
) -> Response:
    """Per-label normalized activations (the paper's Eq. 1) of one conv layer at one captured step.

    For each label c the first ``per_label`` inputs of the split (dataset order) that the model at that step
    predicts correctly as c; ``activation[f][c] = mean sum(FM_f(x)) / mean sum(x)`` over them. The result names
    the inputs used (``sample_indices``) and says in ``note`` which labels had fewer than requested."""
    tape = load_tape(store, rec)
    require_conv_layer(rec, body.layer, ["body", "layer"])
    require_step(tape, body.step, ["body", "step"])
    task = ActivationTask(run_id=run_id, **body.model_dump())
    return FastJSONResponse(_activation_result(store, task, _send_if_missing(store, celery, task), settings))


@router.post("/runs/{run_id}/activations/compare")
def compare_activations(
    run_id: str,
    body: ActivationCompareRequest,
    rec: RunDep,
    store: StoreDep,
    celery: CeleryDep,
    settings: SettingsDep,
) -> Response:
    """One layer's Eq. 1 matrix at two steps and their difference (to − from), e.g. step 0 vs the last, to show
    filters specialising. Each step selects its own correctly predicted inputs."""
    tape = load_tape(store, rec)
    require_conv_layer(rec, body.layer, ["body", "layer"])
    require_step(tape, body.from_step, ["body", "from"])
    require_step(tape, body.to_step, ["body", "to"])
    common = {
        "run_id": run_id,
        "layer": body.layer,
        "per_label": body.per_label,
        "point": body.point,
        "split": body.split,
    }
    t_from = ActivationTask(step=body.from_step, **common)
    t_to = ActivationTask(step=body.to_step, **common)
    sent_from = _send_if_missing(store, celery, t_from)
    sent_to = _send_if_missing(store, celery, t_to) if t_to != t_from else None
    a = _activation_result(store, t_from, sent_from, settings)
    b = _activation_result(store, t_to, sent_to, settings) if t_to != t_from else a
    fa = np.array(a["activation"], dtype=np.float64)  # None → nan
    fb = np.array(b["activation"], dtype=np.float64)
    d = fb - fa
    difference = [[None if v != v else v for v in row] for row in d.tolist()]  # v != v: NaN
    return FastJSONResponse(
        {
            "layer": body.layer,
            "point": body.point,
            "split": body.split,
            "per_label": body.per_label,
            "from": a,
            "to": b,
            "difference": difference,
        }
    )


# --- feature maps --------------------------------------------------------------------------------------------------


@router.get("/runs/{run_id}/featuremaps")
def featuremaps(
    run_id: str,
    rec: RunDep,
    store: StoreDep,
    celery: CeleryDep,
    settings: SettingsDep,
    step: int = Query(..., ge=0, description="a captured step"),
    layer: str = Query(..., min_length=1, max_length=64, description="a conv layer"),
    index: int = Query(..., ge=0, description="index of the input in the split"),
    split: Literal["test", "train"] = Query("test"),
    point: Literal["post", "pre"] = Query("post", description="after (post) or before (pre) the activation"),
) -> Response:
    """The maps ``[F, H, W]`` of one input for one conv layer at one step, with the input, its label and the
    model's prediction."""
    tape = load_tape(store, rec)
    require_conv_layer(rec, layer, ["query", "layer"])
    require_step(tape, step, ["query", "step"])
    n = split_size(settings, rec.dataset, split)
    if n is not None and index >= n:
        raise invalid(
            ["query", "index"],
            f"index {index} is out of range: the {split} split of {rec.dataset} has indices 0..{n - 1}",
            min=0,
            max=n - 1,
        )
    task = FeatureMapTask(run_id=run_id, step=step, layer=layer, split=split, index=index, point=point)
    key = request_key(run_id, "featuremaps", task.cache_params())
    cached = store.exists(key + ".json")
    if not cached:
        key = run_analysis(celery, settings, TASK_FEATUREMAPS, task.model_dump())
    try:
        meta = store.get_json(key + ".json")
        maps = npy_load(store.get(key + ".maps.npy"))
        x = npy_load(store.get(key + ".input.npy"))
    except ObjectNotFound:
        raise not_found(f"the feature maps of run {run_id} were deleted while being read") from None
    return FastJSONResponse({**meta, "input": array_json(x), "maps": array_json(maps), "cached": cached})
