"""Training-health diagnostics from the tape: is each layer learning, stalled or exploding, and which units are dead.

``health`` reads every captured step of every tensor once and gives, per tensor and step:

- the update-to-weight ratio ``‖w(t) − w(t−1)‖ / ‖w(t−1)‖`` (t−1 = the previous *captured* step),
- the weight norm ``‖w(t)‖`` and the update norm ``‖w(t) − w(t−1)‖`` (L2 over all elements, summed in float64;
  the difference in the tensor's dtype, the same bits as the ``diff`` analysis),
- the fraction of elements whose sign differs from step 0 (``numpy.sign``, so 0 is a sign of its own);

per unit (a conv filter = ``weight[u]`` + ``bias[u]``, a dense neuron = a row of ``weight`` + its bias): the last
step its parameters changed, and which units are *frozen* (bit-identical from some step to the last); per window of
steps, the units whose weights moved most (L2 of the change over the window).

``health_dead`` runs the model at one step over a whole evaluation split and flags units whose post-activation
output is exactly zero for every input and position.

An update is not a gradient: with plain SGD (no momentum, no weight decay) and every step captured,
``w(t) − w(t−1) = −lr · g(t)``; with momentum, Nesterov, weight decay, Adam, RMSprop or Adadelta the update mixes
past gradients, moment estimates and the weights themselves, so the tape cannot give the gradient back
(docs/analyses.md, "Training health").
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from pydantic import Field

from netlapse.analyzer.activations import model_at
from netlapse.analyzer.registry import Analysis, AnalysisError, AnalysisRequest, Context, Result, require_step
from netlapse.core.datasets import load_dataset
from netlapse.core.modelspec import Conv2dLayer, LinearLayer, ModelSpec
from netlapse.core.schemas import RunRecord, SplitName, TrainingConfig

CHUNK = 256  # inputs per forward batch of the dead-unit pass
_ACTIVATIONS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "relu": torch.relu,
    "tanh": torch.tanh,
    "sigmoid": torch.sigmoid,
    "none": lambda t: t,
}


def _f(v: float) -> float | None:
    return float(v) if math.isfinite(v) else None


def _rows(a: np.ndarray) -> list[list[float | None]]:
    return [[_f(v) for v in row] for row in a.tolist()]


def unit_layers(tensors: dict[str, tuple[tuple[int, ...], str]]) -> list[dict[str, Any]]:
    """Layers with units: a ``<layer>.weight`` of 2+ dimensions (units along axis 0), with ``<layer>.bias`` of
    shape ``[units]`` when there is one. ``tensors`` maps name → (shape, dtype)."""
    out = []
    for name, (shape, _) in tensors.items():
        if not name.endswith(".weight") or len(shape) < 2:
            continue
        layer = name[: -len(".weight")]
        bias = f"{layer}.bias"
        has_bias = bias in tensors and tensors[bias][0] == (shape[0],)
        out.append(
            {
                "layer": layer,
                "weight": name,
                "bias": bias if has_bias else None,
                "kind": "conv" if len(shape) == 4 else "dense",
                "units": int(shape[0]),
            }
        )
    return out


def window_bounds(n_steps: int, windows: int) -> list[int]:
    """Indices into the captured steps cutting them into at most ``windows`` windows of near-equal length."""
    if n_steps < 2:
        return []
    return sorted({int(round(v)) for v in np.linspace(0, n_steps - 1, min(windows, n_steps - 1) + 1)})


def update_semantics(t: TrainingConfig, every: int) -> dict[str, Any]:
    """What an update on the tape says about the gradient, for this run's optimizer and capture interval."""
    plain = t.optimizer == "sgd" and t.momentum == 0 and t.weight_decay == 0 and not t.nesterov
    if plain and every == 1:
        note = (
            f"plain SGD, every step captured: each update is exactly -lr * gradient (lr = {t.lr}), so "
            "gradient = -(w(t) - w(t-1)) / lr up to float rounding; the diagnostics still show updates"
        )
    elif plain:
        note = (
            f"plain SGD captured every {every} steps: an update is -lr times the *sum* of {every} gradients, "
            "not one gradient"
        )
    else:
        why = {
            "sgd": "momentum / Nesterov / weight decay mix past gradients and the weights into each update",
            "adam": "Adam divides running means of gradients by running RMS: the update's size is ~lr whatever "
            "the gradient's",
            "adamw": "AdamW: Adam's normalised moments plus decoupled weight decay",
            "rmsprop": "RMSprop divides by a running RMS of past gradients",
            "adadelta": "Adadelta scales by ratios of running RMS of past updates and gradients",
        }[t.optimizer]
        note = f"{t.optimizer}: an update is not a gradient ({why}); the tape cannot give the gradient back"
    return {
        "optimizer": t.optimizer,
        "lr": t.lr,
        "momentum": t.momentum,
        "weight_decay": t.weight_decay,
        "capture_every": every,
        "update_is_scaled_gradient": bool(plain and every == 1),
        "note": note,
    }


class HealthRequest(AnalysisRequest):
    run_id: str
    upto: int | None = Field(
        None, ge=0, description="last step included (default: the last captured step when asked)"
    )
    windows: int = Field(8, ge=1, le=64, description="windows of steps for the units that moved most")
    top_k: int = Field(5, ge=1, le=64, description="units listed per layer and window")
    min_frozen_fraction: float = Field(
        0.25,
        ge=0,
        le=1,
        description="a unit counts as frozen when unchanged over at least this fraction of the captured updates",
    )


def _check_health(ctx: Context, r: HealthRequest) -> None:
    steps = ctx.tape(r.run_id).steps()
    if not steps:
        raise AnalysisError("the run has no captured steps yet")
    if r.upto is None:
        r.upto = steps[-1]  # the result (and its cache key) covers the steps captured now
    elif r.upto < steps[0]:
        raise AnalysisError(f"upto={r.upto} is before the first captured step {steps[0]}")


def compute_health(ctx: Context, r: HealthRequest) -> Result:
    tape = ctx.tape(r.run_id)
    rec: RunRecord = ctx.run(r.run_id)
    steps = [s for s in tape.steps() if r.upto is None or s <= r.upto]
    infos = [t for t in tape.tensors() if np.dtype(t.dtype).kind == "f"]
    names = [t.name for t in infos]
    layers = unit_layers({t.name: (tuple(t.shape), t.dtype) for t in infos})
    n_t, n_s = len(names), len(steps)
    norm = np.full((n_t, n_s), np.nan)
    upd = np.full((n_t, n_s), np.nan)
    ratio = np.full((n_t, n_s), np.nan)
    flips = np.full((n_t, n_s), np.nan)
    last_change = {lay["layer"]: np.full(lay["units"], -1, dtype=np.int64) for lay in layers}
    bounds = window_bounds(n_s, r.windows)
    snaps: dict[int, dict[str, np.ndarray]] = {}
    first_sign: dict[str, np.ndarray] = {}
    prev: dict[str, np.ndarray] = {}
    for i, s in enumerate(steps):
        cur = {n: tape.read(n, s) for n in names}
        for ti, n in enumerate(names):
            w64 = cur[n].astype(np.float64).reshape(-1)
            norm[ti, i] = math.sqrt(float(w64 @ w64))
            sign = np.sign(cur[n])
            if i == 0:
                first_sign[n] = sign
                flips[ti, 0] = 0.0
                continue
            d = (cur[n] - prev[n]).astype(np.float64).reshape(-1)  # the diff's bits, summed in float64
            upd[ti, i] = math.sqrt(float(d @ d))
            ratio[ti, i] = upd[ti, i] / norm[ti, i - 1] if norm[ti, i - 1] > 0 else np.nan
            flips[ti, i] = float(np.mean(sign != first_sign[n])) if sign.size else 0.0
        if i > 0:
            for lay in layers:
                w, b = lay["weight"], lay["bias"]
                changed = (cur[w] != prev[w]).reshape(lay["units"], -1).any(axis=1)
                if b is not None:
                    changed |= cur[b] != prev[b]
                last_change[lay["layer"]][changed] = i
        if i in bounds:
            snaps[i] = {lay["weight"]: cur[lay["weight"]] for lay in layers}
        prev = cur

    need = max(1, math.ceil(r.min_frozen_fraction * (n_s - 1)))
    units = []
    for lay in layers:
        lc = last_change[lay["layer"]]
        frozen = []
        if n_s >= 2:
            for u in np.flatnonzero((n_s - 1) - np.maximum(lc, 0) >= need):
                frozen.append({"unit": int(u), "since": steps[max(int(lc[u]), 0)]})
        units.append(
            {
                **lay,
                "last_change": [steps[int(v)] if v >= 0 else None for v in lc],
                "frozen": frozen,
            }
        )
    top_moved = []
    for a, b in zip(bounds, bounds[1:], strict=False):
        per_layer = []
        for lay in layers:
            w = lay["weight"]
            d = (snaps[b][w] - snaps[a][w]).astype(np.float64)
            l2 = np.sqrt((d.reshape(lay["units"], -1) ** 2).sum(axis=1))
            order = np.argsort(-l2, kind="stable")[: r.top_k]
            per_layer.append(
                {
                    "layer": lay["layer"],
                    "weight": w,
                    "kind": lay["kind"],
                    "units": [int(u) for u in order],
                    "l2": [float(l2[u]) for u in order],
                }
            )
        top_moved.append({"from": steps[a], "to": steps[b], "layers": per_layer})
    meta = {
        "run_id": r.run_id,
        "steps": steps,
        "upto": steps[-1] if steps else None,
        "tensors": [{"name": t.name, "shape": list(t.shape), "dtype": t.dtype} for t in infos],
        "norm": _rows(norm),
        "update_norm": _rows(upd),
        "update_ratio": _rows(ratio),
        "sign_flip_fraction": _rows(flips),
        "units": units,
        "min_frozen_updates": need,
        "top_moved": top_moved,
        "updates": update_semantics(rec.training, rec.capture.every)
        if rec.training is not None
        else {  # an SDK run: the optimizer is the user's own, unknown to the server
            "optimizer": None,
            "capture_every": rec.capture.every,
            "update_is_scaled_gradient": False,
            "note": "recorded by the SDK: the server does not know the optimizer, so an update is not read as "
            "a gradient",
        },
        "definitions": {
            "update_ratio": "||w(t) - w(t-1)|| / ||w(t-1)||, t-1 the previous captured step; null at the first",
            "sign_flip_fraction": "fraction of elements with sign(w(t)) != sign(w(first step))",
            "frozen": "parameters bit-identical at every captured step from `since` to the last",
            "top_moved": "per window, units with the largest L2 norm of weight[u](to) - weight[u](from)",
        },
    }
    return Result(meta)


HEALTH = Analysis(
    name="health",
    title="Training health for every captured step",
    request=HealthRequest,
    compute=compute_health,
    summary="Training health from the tape, for every captured step: per tensor the update-to-weight ratio "
    "||w(t) - w(t-1)|| / ||w(t-1)||, the weight and update norms and the fraction of elements whose sign differs "
    "from step 0; per unit (conv filter / dense neuron) its last change and whether it is frozen; per window the "
    "units that moved most. `updates.note` says what an update means for this run's optimizer (an update is a "
    "gradient only up to -lr for plain SGD with every step captured).",
    path="/runs/{run_id}/health",
    check=_check_health,
)


class DeadUnitsRequest(AnalysisRequest):
    run_id: str
    step: int | None = Field(None, ge=0, description="a captured step (default: the last captured step)")
    split: SplitName = Field("test", description="evaluation split, every input of it")


def _require_layer_spec(rec: RunRecord) -> ModelSpec:
    if rec.model is None or rec.dataset is None:
        raise AnalysisError(
            f"run {rec.id} was recorded by the SDK from its own model: dead units are found for server runs "
            "(a layer spec and a built-in dataset); the tape-based health diagnostics work for both"
        )
    return rec.model


def _check_dead(ctx: Context, r: DeadUnitsRequest) -> None:
    _require_layer_spec(ctx.run(r.run_id))
    tape = ctx.tape(r.run_id)
    if r.step is None:
        steps = tape.steps()
        if not steps:
            raise AnalysisError("the run has no captured steps yet")
        r.step = steps[-1]
    require_step(tape, r.step, ["query", "step"])


def compute_dead_units(ctx: Context, r: DeadUnitsRequest) -> Result:
    rec = ctx.run(r.run_id)
    step = r.step if r.step is not None else ctx.tape(r.run_id).steps()[-1]
    spec = _require_layer_spec(rec)
    model = model_at(ctx.store, rec, step)
    x, _ = load_dataset(rec.dataset_name(), ctx.settings).split(r.split)
    param_layers = [lay for lay in spec.layers if isinstance(lay, Conv2dLayer | LinearLayer)]
    nonzero: dict[str, torch.Tensor] = {}
    peak: dict[str, torch.Tensor] = {}
    handles = []

    def hook(name: str, activation: str) -> Callable[..., None]:
        fn = _ACTIVATIONS[activation]

        def run(_m: torch.nn.Module, _inp: Any, out: torch.Tensor) -> None:
            post = fn(out)
            dims = [d for d in range(post.ndim) if d != 1]  # every axis but the units'
            nz = (post != 0).sum(dim=dims, dtype=torch.int64)
            mx = post.abs().amax(dim=dims)
            nonzero[name] = nonzero[name] + nz if name in nonzero else nz
            peak[name] = torch.maximum(peak[name], mx) if name in peak else mx

        return run

    for lay in param_layers:
        assert lay.name is not None
        module = f"{lay.name}_bn" if lay.batchnorm else lay.name
        handles.append(model.get_submodule(module).register_forward_hook(hook(lay.name, lay.activation)))
    try:
        with torch.inference_mode():
            for lo in range(0, int(x.shape[0]), CHUNK):
                model(x[lo : lo + CHUNK])
    finally:
        for h in handles:
            h.remove()
    out = []
    for lay in param_layers:
        assert lay.name is not None
        nz = nonzero[lay.name].numpy()
        per_unit = int(x.shape[0]) * (int(np.prod(_unit_positions(model, lay.name, x))))
        out.append(
            {
                "layer": lay.name,
                "kind": "conv" if isinstance(lay, Conv2dLayer) else "dense",
                "activation": lay.activation,
                "units": int(nz.size),
                "nonzero_fraction": [float(v) / per_unit for v in nz],
                "max_abs": [float(v) for v in peak[lay.name].numpy()],
                "dead": [int(u) for u in np.flatnonzero(nz == 0)],
            }
        )
    return Result(
        {
            "run_id": r.run_id,
            "step": step,
            "split": r.split,
            "evaluated": int(x.shape[0]),
            "layers": out,
            "definition": "a unit is dead at a step when its post-activation output is exactly 0 for every input "
            "of the split at every position",
        }
    )


def _unit_positions(model: torch.nn.Module, layer: str, x: torch.Tensor) -> list[int]:
    """Spatial positions per unit of a layer's output ([] for a dense layer): from one input's forward pass."""
    shapes: list[list[int]] = []
    h = model.get_submodule(layer).register_forward_hook(lambda _m, _i, o: shapes.append(list(o.shape[2:])))
    try:
        with torch.inference_mode():
            model(x[:1])
    finally:
        h.remove()
    return shapes[0]


DEAD_UNITS = Analysis(
    name="health_dead",
    title="Dead units at a step",
    request=DeadUnitsRequest,
    compute=compute_dead_units,
    summary="Dead units at one step: the model at that step runs over every input of the split, and a conv filter "
    "or dense neuron whose post-activation output is exactly 0 for every input (and position) is dead. Per unit "
    "the fraction of non-zero outputs and the largest |output|.",
    path="/runs/{run_id}/health/dead",
    check=_check_dead,
)

ANALYSES = (HEALTH, DEAD_UNITS)
