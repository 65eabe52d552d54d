"""Comparing runs: one tensor's difference across two runs, metrics of up to 8 runs on one axis, per-label
activations and initial value vs change of two runs side by side.

A moment of a run is written ``RUN:STEP`` (``a=3f9c0a1b2c3d:63``). Every run named must be visible to the
caller (else 404, as for an unknown run). Results about two runs are cached in the first run's folder.
"""

from __future__ import annotations

import math
import re
from typing import Any

import numpy as np
from pydantic import Field, field_validator

from netlapse.analyzer.activations import ACTIVATIONS, require_conv_layer
from netlapse.analyzer.analyses import SCATTER, ScatterRequest, diff_stats, tensor_answer
from netlapse.analyzer.registry import (
    Analysis,
    AnalysisRequest,
    Context,
    Result,
    invalid,
    require_captured,
    require_step,
    require_tensor,
)
from netlapse.core.schemas import ActivationTask, FeaturePointName, SplitName, metrics_key
from netlapse.core.store import ObjectNotFound

MAX_OVERLAY_RUNS = 8
_MOMENT = re.compile(r"^([a-z0-9]{8,32}):(\d{1,9})$")
_RUN_ID = re.compile(r"^[a-z0-9]{8,32}$")
MOMENT_HELP = "RUN:STEP, e.g. 3f9c0a1b2c3d:63"


def parse_moment(value: str, field: str) -> tuple[str, int]:
    """``RUN:STEP`` → (run id, step), or a 422 naming the field."""
    m = _MOMENT.match(value)
    if m is None:
        raise invalid(["query", field], f"{field} must be RUN:STEP (e.g. 3f9c0a1b2c3d:63), got {value!r}")
    return m.group(1), int(m.group(2))


class TwoMoments(AnalysisRequest):
    a: str = Field(..., description=f"the first moment, {MOMENT_HELP}")
    b: str = Field(..., description=f"the second moment, {MOMENT_HELP}")

    @field_validator("a", "b")
    @classmethod
    def _moment(cls, v: str) -> str:
        if _MOMENT.match(v) is None:
            raise ValueError(f"must be RUN:STEP (e.g. 3f9c0a1b2c3d:63), got {v!r}")
        return v

    def moment(self, which: str) -> tuple[str, int]:
        return parse_moment(getattr(self, which), which)


def _two_runs(r: TwoMoments) -> list[str]:
    return [r.moment("a")[0], r.moment("b")[0]]


# --- the difference of one tensor between two runs -------------------------------------------------------------


class CompareDiffRequest(TwoMoments):
    name: str = Field(..., description="a tensor both runs captured (state_dict name)")


def _check_compare_diff(ctx: Context, r: CompareDiffRequest) -> None:
    infos = []
    for which in ("a", "b"):
        run_id, step = r.moment(which)
        tape = ctx.tape(run_id)
        require_tensor(tape, r.name)
        require_captured(tape, step, which)
        infos.append(tape.tensor(r.name))
    ia, ib = infos
    if list(ia.shape) != list(ib.shape) or ia.dtype != ib.dtype:
        raise invalid(
            ["path", "name"],
            f"{r.name} differs between the runs: a has shape {list(ia.shape)} ({ia.dtype}), "
            f"b has shape {list(ib.shape)} ({ib.dtype}); a difference needs the same shape and dtype",
            a_shape=list(ia.shape),
            b_shape=list(ib.shape),
        )


def _compare_diff(ctx: Context, r: CompareDiffRequest) -> Result:
    (ra, sa), (rb, sb) = r.moment("a"), r.moment("b")
    va, vb = ctx.tape(ra).read(r.name, sa), ctx.tape(rb).read(r.name, sb)
    if va.shape != vb.shape or va.dtype != vb.dtype:  # checked by the api; the worker may see another tape
        _check_compare_diff(ctx, r)
    d = vb - va
    meta = {
        "name": r.name,
        "a": {"run": ra, "step": sa},
        "b": {"run": rb, "step": sb},
        "shape": list(d.shape),
        "dtype": str(d.dtype),
        "stats": diff_stats(d),
    }
    return Result(meta, {"": d})


COMPARE_DIFF = Analysis(
    name="compare_diff",
    title="Difference of one tensor between two runs",
    request=CompareDiffRequest,
    compute=_compare_diff,
    summary="value in run b at its step − value in run a at its step, of one tensor (same shape and dtype, else "
    "422 naming both shapes), in its dtype, with the same stats as the single-run diff. JSON or, with "
    "Accept: application/x-npy, .npy. Both runs must be visible to the caller.",
    path="/compare/diff/{name}",
    check=_check_compare_diff,
    respond=tensor_answer,
    artifacts=("",),
    runs=_two_runs,
    tags=("compare",),
)


# --- metrics of several runs on one axis ------------------------------------------------------------------------


class MetricsOverlayRequest(AnalysisRequest):
    runs: str = Field(..., description=f"comma-separated run ids, 1 to {MAX_OVERLAY_RUNS}")

    def ids(self) -> list[str]:
        return [s.strip() for s in self.runs.split(",") if s.strip()]

    @field_validator("runs")
    @classmethod
    def _runs(cls, v: str) -> str:
        ids = [s.strip() for s in v.split(",") if s.strip()]
        if not 1 <= len(ids) <= MAX_OVERLAY_RUNS:
            raise ValueError(f"give between 1 and {MAX_OVERLAY_RUNS} run ids (got {len(ids)})")
        bad = [i for i in ids if not _RUN_ID.match(i)]
        if bad:
            raise ValueError(f"{bad[0]!r} is not a run id")
        if len(set(ids)) != len(ids):
            raise ValueError("each run may be named once")
        return v


def _num(v: Any) -> float | None:
    return float(v) if isinstance(v, int | float) and math.isfinite(v) else None


def _metrics(ctx: Context, run_id: str) -> dict[str, list[dict[str, Any]]]:
    try:
        m = ctx.store.get_json(metrics_key(run_id))
    except ObjectNotFound:
        return {"steps": [], "epochs": []}
    return {"steps": list(m.get("steps", [])), "epochs": list(m.get("epochs", []))}


def align(per_run: list[dict[str, list[dict[str, Any]]]]) -> dict[str, Any]:
    """Rows of several runs on a shared step axis and a shared epoch axis (null where a run has no value).

    By epoch: each run's validation loss/accuracy, and the mean of its training loss/accuracy over the steps
    of that epoch."""
    steps = sorted({int(r["step"]) for m in per_run for r in m["steps"]})
    epochs = sorted(
        {int(r["epoch"]) for m in per_run for r in m["epochs"]}
        | {int(r["epoch"]) for m in per_run for r in m["steps"] if r.get("epoch") is not None}
    )
    out: dict[str, Any] = {"steps": steps, "epochs": epochs}
    for k in ("loss", "accuracy"):
        out[k] = []
        out[f"epoch_{k}"] = []
        for m in per_run:
            by_step = {int(r["step"]): _num(r.get(k)) for r in m["steps"]}
            out[k].append([by_step.get(s) for s in steps])
            means = []
            for e in epochs:
                vals = [v for r in m["steps"] if r.get("epoch") == e and (v := _num(r.get(k))) is not None]
                means.append(float(np.mean(vals)) if vals else None)
            out[f"epoch_{k}"].append(means)
    for k in ("val_loss", "val_accuracy"):
        out[k] = []
        for m in per_run:
            by_epoch = {int(r["epoch"]): _num(r.get(k)) for r in m["epochs"]}
            out[k].append([by_epoch.get(e) for e in epochs])
    return out


def _overlay(ctx: Context, r: MetricsOverlayRequest) -> Result:
    runs, per_run = [], []
    for rid in r.ids():
        rec = ctx.run(rid)
        t = rec.training  # None for an SDK run: its optimizer is the user's own
        runs.append(
            {
                "id": rid,
                "name": rec.name,
                "status": rec.status,
                "source": rec.source,
                "dataset": rec.dataset,
                "preset": rec.preset,
                "optimizer": t.optimizer if t else None,
                "lr": t.lr if t else None,
                "momentum": t.momentum if t else None,
                "batch_size": t.batch_size if t else None,
                "seed": t.seed if t else None,
            }
        )
        per_run.append(_metrics(ctx, rid))
    return Result({"runs": runs, **align(per_run)})


METRICS_OVERLAY = Analysis(
    name="compare_metrics",
    title="Loss and accuracy of up to 8 runs on one axis",
    request=MetricsOverlayRequest,
    compute=_overlay,
    summary=f"Loss and accuracy of up to {MAX_OVERLAY_RUNS} runs on one step axis and one epoch axis: "
    "loss[i][j] is run i at steps[j] (null where it has none); by epoch the validation metrics and the mean "
    "training metrics of each epoch. Read from the runs' metrics, not cached.",
    path="/compare/metrics",
    runs=lambda r: r.ids(),
    inline=True,
    cache=False,
    tags=("compare",),
)


# --- per-label activations of one layer in two runs ------------------------------------------------------------


class CompareActivationsRequest(TwoMoments):
    layer: str = Field(..., min_length=1, max_length=64, description="a conv layer of both runs' models")
    per_label: int = Field(100, ge=1, le=1000, description="correctly predicted inputs per label (at most)")
    point: FeaturePointName = Field("post", description="after (post) or before (pre) the activation")
    split: SplitName = Field("test", description="dataset split the inputs come from")


def _activation_tasks(r: CompareActivationsRequest) -> list[ActivationTask]:
    out = []
    for which in ("a", "b"):
        run_id, step = r.moment(which)
        out.append(
            ActivationTask(
                run_id=run_id, step=step, layer=r.layer, per_label=r.per_label, point=r.point, split=r.split
            )
        )
    return out


def _check_compare_activations(ctx: Context, r: CompareActivationsRequest) -> None:
    for which in ("a", "b"):
        run_id, step = r.moment(which)
        tape = ctx.tape(run_id)
        require_conv_layer(ctx.run(run_id), r.layer, ["body", "layer"])
        require_step(tape, step, ["body", which])


def _compare_activations(ctx: Context, r: CompareActivationsRequest) -> Result:
    ta, tb = _activation_tasks(r)
    sa, sb = ctx.ensure_all(ACTIVATIONS, [ta, tb]) if ta != tb else [ctx.ensure(ACTIVATIONS, ta)] * 2
    ma, mb = np.array(sa.meta["activation"], np.float64), np.array(sb.meta["activation"], np.float64)
    difference = None
    if ma.shape == mb.shape:
        difference = [[None if v != v else v for v in row] for row in (mb - ma).tolist()]  # v != v: NaN
    meta = {
        "layer": r.layer,
        "point": r.point,
        "split": r.split,
        "per_label": r.per_label,
        "a": {**sa.meta, "cached": sa.cached},
        "b": {**sb.meta, "cached": sb.cached},
        "difference": difference,
        "note": None
        if difference is not None
        else f"the layers differ in shape ({list(ma.shape)} vs {list(mb.shape)} filters × labels): no difference",
    }
    return Result(meta)


COMPARE_ACTIVATIONS = Analysis(
    name="compare_activations",
    title="Eq. 1 of one layer in two runs and their difference",
    request=CompareActivationsRequest,
    compute=_compare_activations,
    summary="One conv layer's per-label activations (Eq. 1) in run a at its step and run b at its step, and "
    "their difference b − a (null where either is null; null as a whole when the layers differ in shape). "
    "Each run selects its own correctly predicted inputs; both results come from the activations cache.",
    path="/compare/activations",
    method="POST",
    check=_check_compare_activations,
    runs=_two_runs,
    inline=True,
    cache=False,
    tags=("compare",),
)


# --- initial value vs change of one tensor in two runs -----------------------------------------------------------

_SIDE_BY_SIDE = (
    "pearson_r",
    "pos_increased_fraction",
    "neg_decreased_fraction",
    "pos_count",
    "neg_count",
    "x_mean",
    "y_mean",
    "n",
)


class CompareScatterRequest(TwoMoments):
    name: str = Field(..., description="a tensor both runs captured")
    from_step: int = Field(0, alias="from", ge=0, description="step of the initial value (x), in both runs")
    max_points: int = Field(20_000, ge=1, le=200_000, description="at most this many sampled points per run")
    bins: int = Field(64, ge=2, le=512, description="bins per axis of each run's exact 2-D histogram")
    seed: int = Field(0, ge=0, le=2**31 - 1, description="seed of the point samples")


def _scatter_tasks(r: CompareScatterRequest) -> list[ScatterRequest]:
    out = []
    for which in ("a", "b"):
        run_id, step = r.moment(which)
        out.append(
            ScatterRequest(
                run_id=run_id,
                name=r.name,
                from_step=r.from_step,
                to_step=step,
                max_points=r.max_points,
                bins=r.bins,
                seed=r.seed,
            )
        )
    return out


def _check_compare_scatter(ctx: Context, r: CompareScatterRequest) -> None:
    for which in ("a", "b"):
        run_id, step = r.moment(which)
        if r.from_step > step:
            raise invalid(
                ["query", "from"], f"from ({r.from_step}) must not be greater than {which}'s step {step}"
            )
        tape = ctx.tape(run_id)
        require_tensor(tape, r.name)
        require_captured(tape, r.from_step, "from")
        require_captured(tape, step, which)


def _compare_scatter(ctx: Context, r: CompareScatterRequest) -> Result:
    sa, sb = ctx.ensure_all(SCATTER, list(_scatter_tasks(r)))
    sides = []
    for s in (sa, sb):
        xy = s.array("")
        sides.append({**s.meta, "x": xy[0], "y": xy[1], "cached": s.cached})
    summary = {k: [sides[0].get(k), sides[1].get(k)] for k in _SIDE_BY_SIDE}
    return Result(
        {"name": r.name, "from": r.from_step, "a": sides[0], "b": sides[1], "side_by_side": summary}
    )


COMPARE_SCATTER = Analysis(
    name="compare_scatter",
    title="Initial value vs change of one tensor in two runs",
    request=CompareScatterRequest,
    compute=_compare_scatter,
    summary="Initial value vs change of the same tensor in two runs: each run's scatter result (x = value at "
    "`from`, y = its change to the run's step), and `side_by_side` with Pearson r and the sign fractions of "
    "both runs as [a, b]. Each result is the single-run scatter, cached in its own run.",
    path="/compare/scatter/{name}",
    check=_check_compare_scatter,
    runs=_two_runs,
    inline=True,
    cache=False,
    tags=("compare",),
)

ANALYSES = (COMPARE_DIFF, METRICS_OVERLAY, COMPARE_ACTIVATIONS, COMPARE_SCATTER)
