"""Per-label feature-map activations (the paper's Eq. 1) and the feature maps of single inputs.

For a conv layer, a captured step and a label c, take the split in dataset order and select the first
``per_label`` inputs the model *at that step* predicts correctly as c (the set S_c). Then, for each feature
map f::

    activation[f][c] = mean_{x in S_c} sum(FM_f(x)) / mean_{x in S_c} sum(x)

where x is the input exactly as fed to the model and FM_f the layer's f-th output channel after its
activation ("post") or before it ("pre"). The model is the run's spec with the tape's tensors at that step,
in eval mode (dropout off, batchnorm on its running statistics).

The model runs only on inputs that can be selected: for each label, its inputs up to its per_label-th correct
prediction. That one forward pass gives the predictions *and*, through forward hooks, the per-input sums of
every conv layer at both points, so it answers every (layer, point) of a step at once.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import Field

from netlapse.analyzer import sdk_runs
from netlapse.analyzer.registry import (
    Analysis,
    AnalysisError,
    AnalysisRequest,
    Answer,
    Context,
    Result,
    Stored,
    array_json,
    ensure,
    invalid,
    require_step,
)
from netlapse.core.datasets import list_datasets, load_dataset
from netlapse.core.modelspec import Conv2dLayer, SpecNet, build_model, conv_layers
from netlapse.core.program import ProgramModule
from netlapse.core.results import open_tape
from netlapse.core.schemas import (
    ActivationCompareRequest,
    ActivationRequest,
    ActivationTask,
    FeatureMapTask,
    FeaturePointName,
    RunRecord,
    SplitName,
)
from netlapse.core.settings import Settings
from netlapse.core.store import Store
from netlapse.core.tape import StepNotCaptured

POINTS = ("post", "pre")
CHUNK = 64  # inputs per forward batch: small enough to stop early, large enough to keep the CPU busy
_ACTIVATION_FNS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "relu": F.relu,
    "tanh": torch.tanh,
    "sigmoid": torch.sigmoid,
    "none": lambda t: t,
}
Publish = Callable[[dict[str, Any]], None]
__all__ = ["AnalysisError", "compute_activations", "compute_featuremaps", "model_at", "labelled_pass"]


# --- the model at a step -----------------------------------------------------------------------------------

_MODELS: OrderedDict[tuple[str, str, int], SpecNet] = OrderedDict()
_PASSES: OrderedDict[tuple[str, str, int, str], LabelledPass] = OrderedDict()
_LOCK = threading.Lock()
_MAX_CACHED = 4


def _lru_get(cache: OrderedDict, key: Any) -> Any:
    with _LOCK:
        v = cache.get(key)
        if v is not None:
            cache.move_to_end(key)
        return v


def _lru_put(cache: OrderedDict, key: Any, value: Any) -> None:
    with _LOCK:
        cache[key] = value
        cache.move_to_end(key)
        while len(cache) > _MAX_CACHED:
            cache.popitem(last=False)


def clear_caches() -> None:
    """Forget models and forward passes kept in this process (tests, benchmarks of cold requests)."""
    with _LOCK:
        _MODELS.clear()
        _PASSES.clear()


def model_at(store: Store, rec: RunRecord, step: int) -> SpecNet | ProgramModule:
    """``build_model(rec.model)`` holding the tape's tensors at ``step``, in eval mode (kept in a small LRU);
    for an SDK run, its exported program with those tensors (:mod:`netlapse.analyzer.sdk_runs`)."""
    if sdk_runs.is_sdk(rec):
        return sdk_runs.model_at(store, rec, step)
    key = (store.url, rec.id, step)
    model = _lru_get(_MODELS, key)
    if model is not None:
        return model
    reader = open_tape(store, rec.id)
    try:
        state = {t.name: torch.from_numpy(reader.read(t.name, step)) for t in reader.tensors()}
    except StepNotCaptured as exc:
        raise AnalysisError(str(exc)) from None
    model = build_model(rec.layer_spec())
    expected = model.state_dict()
    unexpected = [k for k in state if k not in expected]
    missing = [k for k, v in expected.items() if k not in state and v.is_floating_point()]
    if unexpected or missing:
        raise AnalysisError(
            f"the tape of run {rec.id} does not match its model spec "
            f"(missing: {missing or 'none'}, unexpected: {unexpected or 'none'})"
        )
    # Integer buffers (batchnorm's num_batches_tracked) are not captured; eval mode does not use them.
    model.load_state_dict(state, strict=False)
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    _lru_put(_MODELS, key, model)
    return model


def _conv_specs(spec: Any) -> list[Conv2dLayer]:
    return [layer for layer in spec.layers if isinstance(layer, Conv2dLayer)]


def run_conv_layers(store: Store, rec: RunRecord) -> list[str]:
    """The layers Eq. 1 and feature maps accept: the spec's conv layers, or an SDK run's by module path."""
    return sdk_runs.conv_layer_names(store, rec) if sdk_runs.is_sdk(rec) else conv_layers(rec.layer_spec())


def check_layer(store: Store, rec: RunRecord, layer: str) -> None:
    """AnalysisError listing the conv layers when ``layer`` is not one of them."""
    convs = run_conv_layers(store, rec)
    if layer not in convs:
        raise AnalysisError(
            f"layer {layer!r} is not a conv layer of this model; conv layers: {', '.join(convs) or 'none'}"
        )


# --- one labelled forward pass -----------------------------------------------------------------------------


def _probes(
    model: SpecNet | ProgramModule,
) -> list[tuple[str, str, Callable[[torch.Tensor], torch.Tensor], int]]:
    """Per conv layer: its name, the submodule whose output is its "pre" value, pre → post, its channels."""
    if isinstance(model, ProgramModule):
        return sdk_runs.probes(model)
    out = []
    for layer in _conv_specs(model.spec):
        assert layer.name is not None
        fn = _ACTIVATION_FNS.get(layer.activation)
        if fn is None:
            raise AnalysisError(f"layer {layer.name!r}: activation {layer.activation!r} is not supported")
        # "pre" = after batchnorm (if any), before the activation: the output of the last module before it.
        module = f"{layer.name}_bn" if layer.batchnorm else layer.name
        out.append((layer.name, module, fn, layer.out_channels))
    return out


class LabelledPass:
    """The model at one step over one split, evaluated only where it can matter for Eq. 1.

    S_c is the first ``per_label`` inputs *of label c* (in dataset order) that the model predicts correctly, so
    an input of label c after the per_label-th correct one can never be selected and is not evaluated. Per label
    the evaluated inputs are always a prefix of that label's inputs; each round evaluates, for every label still
    short, just as many next inputs as it is short (all of them in one batched forward pass), until every label
    has enough or has no inputs left. A later request with a larger ``per_label`` continues from there.

    Per evaluated input it keeps the prediction, sum(x), and for every conv layer and point the sum of each
    feature map (float64 sums of the float32 maps), all taken from one forward pass via hooks.
    """

    def __init__(
        self, model: SpecNet | ProgramModule, x: torch.Tensor, y: torch.Tensor, num_classes: int
    ) -> None:
        self.model, self.x, self.y = model, x, y
        self.y_np = y.numpy()
        self.num_classes = num_classes
        self.size = int(x.shape[0])
        self.compute_seconds = 0.0
        # Dataset positions of each label's inputs, in order, and how many of them are evaluated so far.
        self._by_label = [np.flatnonzero(self.y_np == c) for c in range(num_classes)]
        self._done = np.zeros(num_classes, dtype=np.int64)
        self.correct_per_label = np.zeros(num_classes, dtype=np.int64)
        self._pred = np.full(self.size, -1, dtype=np.int64)  # -1: not evaluated
        self._input_sums = np.full(self.size, np.nan)
        self._sums: dict[tuple[str, str], np.ndarray] = {}
        self._layers: list[tuple[str, str, Callable[[torch.Tensor], torch.Tensor]]] = []
        for name, module, fn, channels in _probes(model):
            self._layers.append((name, module, fn))
            for point in POINTS:
                self._sums[(name, point)] = np.full((self.size, channels), np.nan)

    @property
    def evaluated(self) -> int:
        """How many inputs of the split the model has been run on so far."""
        return int(self._done.sum())

    def exhausted(self, c: int) -> bool:
        """Whether every input of label c has been evaluated."""
        return bool(self._done[c] >= self._by_label[c].size)

    def _todo(self, per_label: int) -> np.ndarray:
        """Positions to evaluate next: for each label still short, as many next inputs as it is short."""
        picks = []
        for c in range(self.num_classes):
            short = per_label - int(self.correct_per_label[c])
            if short > 0 and not self.exhausted(c):
                lo = int(self._done[c])
                picks.append(self._by_label[c][lo : lo + short])
        return np.sort(np.concatenate(picks)) if picks else np.empty(0, dtype=np.int64)

    def extend(self, per_label: int) -> None:
        """Evaluate until every label has ``per_label`` correct predictions or no inputs left."""
        todo = self._todo(per_label)
        if not todo.size:
            return
        t0 = time.perf_counter()
        handles = []
        chunk_sums: dict[tuple[str, str], torch.Tensor] = {}

        def hook(name: str, fn: Callable[[torch.Tensor], torch.Tensor]) -> Callable[..., None]:
            def run(_m: torch.nn.Module, _inp: Any, out: torch.Tensor) -> None:
                # Rows in float32 (a few dozen values), rows summed in float64: ~1e-7 relative, 5x faster
                # than converting the whole map to float64.
                chunk_sums[(name, "pre")] = out.sum(dim=3).sum(dim=2, dtype=torch.float64)
                chunk_sums[(name, "post")] = fn(out).sum(dim=3).sum(dim=2, dtype=torch.float64)

            return run

        for name, module, fn in self._layers:
            handles.append(self.model.get_submodule(module).register_forward_hook(hook(name, fn)))
        try:
            with torch.inference_mode():
                while todo.size:
                    for lo in range(0, todo.size, CHUNK):
                        pos = todo[lo : lo + CHUNK]
                        xb = self.x[torch.from_numpy(pos)]
                        self._pred[pos] = self.model(xb).argmax(dim=1).numpy()
                        self._input_sums[pos] = xb.sum(
                            dim=tuple(range(1, xb.dim())), dtype=torch.float64
                        ).numpy()
                        for k, arr in self._sums.items():
                            arr[pos] = chunk_sums[k].numpy()
                    labels = self.y_np[todo]
                    self._done += np.bincount(labels, minlength=self.num_classes)[: self.num_classes]
                    ok = self._pred[todo] == labels
                    self.correct_per_label += np.bincount(labels[ok], minlength=self.num_classes)[
                        : self.num_classes
                    ]
                    todo = self._todo(per_label)
        finally:
            for h in handles:
                h.remove()
        self.compute_seconds += time.perf_counter() - t0

    def selection(self, per_label: int) -> list[np.ndarray]:
        """Per label c: dataset indices of the first ``per_label`` inputs predicted correctly as c."""
        out = []
        for c in range(self.num_classes):
            pos = self._by_label[c][: int(self._done[c])]  # evaluated prefix of label c
            out.append(pos[self._pred[pos] == c][:per_label])
        return out

    def eq1(self, layer: str, point: str, per_label: int) -> dict[str, Any]:
        """Eq. 1 for one layer and point: matrix, numerator, denominator, counts and the inputs used."""
        sel = self.selection(per_label)
        fm = self._sums[(layer, point)]
        num = np.full((fm.shape[1], self.num_classes), np.nan)
        den = np.full(self.num_classes, np.nan)
        for c, idx in enumerate(sel):
            if idx.size:
                num[:, c] = fm[idx].mean(axis=0)
                den[c] = self._input_sums[idx].mean()
        with np.errstate(invalid="ignore", divide="ignore"):
            act = num / den[None, :]
        return {
            "numerator": num,
            "denominator": den,
            "activation": act,
            "counts": [int(i.size) for i in sel],
            "sample_indices": [[int(v) for v in i] for i in sel],
        }


def labelled_pass(store: Store, settings: Settings, rec: RunRecord, step: int, split: str) -> LabelledPass:
    """The (cached) labelled pass of the model at ``step`` over ``split`` of the run's dataset."""
    key = (store.url, rec.id, step, split)
    p = _lru_get(_PASSES, key)
    if p is not None:
        return p
    if sdk_runs.is_sdk(rec):
        x, y = sdk_runs.inputs(store, rec, split)
        classes = sdk_runs.num_classes(store, rec)
    else:
        x, y = load_dataset(rec.dataset_name(), settings).split(split)
        classes = rec.layer_spec().num_classes
    p = LabelledPass(model_at(store, rec, step), x, y, classes)
    _lru_put(_PASSES, key, p)
    return p


# --- results -------------------------------------------------------------------------------------------------


def _nan_to_none(a: np.ndarray) -> list[Any]:
    """Nested lists with NaN as None (JSON has no NaN; a label without inputs has no mean)."""
    if a.ndim <= 1:
        return [None if v != v else float(v) for v in a.tolist()]  # v != v: NaN
    return [_nan_to_none(row) for row in a]


def _note(counts: list[int], per_label: int, split: str, step: int) -> str | None:
    short = [(c, n) for c, n in enumerate(counts) if n < per_label]
    if not short:
        return None
    which = ", ".join(f"{c} ({n} of {per_label})" for c, n in short)
    return (
        f"the model at step {step} predicts fewer than {per_label} inputs of the {split} split correctly for "
        f"label(s) {which}, after looking at every input of those labels; their means use the inputs there are, "
        "and a label with none has null activations"
    )


def activation_result(
    p: LabelledPass, rec: RunRecord, t: ActivationTask, layer: str, point: str
) -> dict[str, Any]:
    """The JSON result of Eq. 1 for one layer and point (what the api serves)."""
    r = p.eq1(layer, point, t.per_label)
    preds_ok = int(p.correct_per_label.sum())
    return {
        "run_id": rec.id,
        "dataset": rec.dataset,
        "layer": layer,
        "step": t.step,
        "point": point,
        "split": t.split,
        "labels": list(range(p.num_classes)),
        "filters": int(r["activation"].shape[0]),
        "activation": _nan_to_none(r["activation"]),
        "numerator": _nan_to_none(r["numerator"]),
        "denominator": _nan_to_none(r["denominator"]),
        "counts": r["counts"],
        "requested_per_label": t.per_label,
        "sample_indices": r["sample_indices"],
        "note": _note(r["counts"], t.per_label, t.split, t.step),
        "evaluated": p.evaluated,
        "split_size": p.size,
        "evaluated_accuracy": preds_ok / p.evaluated if p.evaluated else None,
        "forward_seconds": round(p.compute_seconds, 4),
        "formula": "activation[f][c] = mean_{x in S_c} sum(FM_f(x)) / mean_{x in S_c} sum(x)",
    }


def _activations(ctx: Context, t: ActivationTask) -> Result:
    """Eq. 1 for the requested layer and point; the same forward pass yields every conv layer at both points,
    so all of them are stored together (siblings) for this (step, per_label, split)."""
    t0 = time.perf_counter()
    rec = ctx.run(t.run_id)
    check_layer(ctx.store, rec, t.layer)
    if t.point not in POINTS:
        raise AnalysisError(f"point must be one of {', '.join(POINTS)}, got {t.point!r}")
    event = {"kind": "activations", "step": t.step, "layer": t.layer, "split": t.split}
    ctx.emit(t.run_id, {**event, "state": "started"})
    p = labelled_pass(ctx.store, ctx.settings, rec, t.step, t.split)
    p.extend(t.per_label)
    siblings: list[tuple[Any, Result]] = []
    for layer in run_conv_layers(ctx.store, rec):
        for point in POINTS:
            sibling = t.model_copy(update={"layer": layer, "point": point})
            siblings.append((sibling, Result(activation_result(p, rec, sibling, layer, point))))
    seconds = round(time.perf_counter() - t0, 4)
    ctx.emit(t.run_id, {**event, "state": "finished", "seconds": seconds, "evaluated": p.evaluated})
    return Result(activation_result(p, rec, t, t.layer, t.point), siblings=siblings)


def require_conv_layer(
    rec: RunRecord, layer: str, loc: list[str | int], store: Store | None = None, split: str = "test"
) -> None:
    """422 listing the model's conv layers when ``layer`` is not one of them; for an SDK run (given the store)
    also when it lacks the program or evaluation data these analyses need, saying what to hand over."""
    if sdk_runs.is_sdk(rec):
        if store is None:
            return  # checked on the analyzer
        sdk_runs.require_ready(store, rec, split)
        convs = sdk_runs.conv_layer_names(store, rec)
    else:
        convs = conv_layers(rec.layer_spec())
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


def _check_activations(ctx: Context, t: ActivationTask) -> None:
    tape = ctx.tape(t.run_id)
    require_conv_layer(ctx.run(t.run_id), t.layer, ["body", "layer"], ctx.store, t.split)
    require_step(tape, t.step, ["body", "step"])


def _cached_answer(stored: Stored, _: Any) -> Answer:
    return Answer({**stored.meta, "cached": stored.cached})


ACTIVATIONS = Analysis(
    name="activations",
    title="Per-label normalized activations (Eq. 1) of a conv layer at a step",
    request=ActivationTask,
    compute=_activations,
    summary="Per-label normalized activations (the paper's Eq. 1) of one conv layer at one captured step.\n\n"
    "For each label c the first `per_label` inputs of the split (dataset order) that the model at that step "
    "predicts correctly as c; activation[f][c] = mean sum(FM_f(x)) / mean sum(x) over them. The result names "
    "the inputs used (`sample_indices`) and says in `note` which labels had fewer than requested.",
    path="/runs/{run_id}/activations",
    method="POST",
    body=ActivationRequest,
    check=_check_activations,
    respond=_cached_answer,
)


def compute_activations(
    store: Store, settings: Settings, t: ActivationTask, publish: Publish | None = None
) -> tuple[str, dict[str, Any]]:
    """Eq. 1 of a task payload through the registry's cache; ``(key, {cached, seconds})``."""
    ctx = Context(store, settings, publish=(lambda _rid, d: publish(d)) if publish else None)
    s = ensure(ACTIVATIONS, ctx, t)
    return s.key, {"cached": s.cached, "seconds": s.seconds}


class ActivationCompareTask(AnalysisRequest):
    run_id: str
    layer: str
    from_step: int = Field(..., alias="from")
    to_step: int = Field(..., alias="to")
    per_label: int = 100
    point: FeaturePointName = "post"
    split: SplitName = "test"


def nan_difference(a: list[list[float | None]], b: list[list[float | None]]) -> list[list[float | None]]:
    """b − a element-wise over two Eq. 1 matrices, null where either is null."""
    d = np.array(b, dtype=np.float64) - np.array(a, dtype=np.float64)  # None → nan
    return [[None if v != v else v for v in row] for row in d.tolist()]  # v != v: NaN


def _compare(ctx: Context, c: ActivationCompareTask) -> Result:
    common = {"layer": c.layer, "per_label": c.per_label, "point": c.point, "split": c.split}
    t_from = ActivationTask(run_id=c.run_id, step=c.from_step, **common)
    t_to = ActivationTask(run_id=c.run_id, step=c.to_step, **common)
    a, b = (
        ctx.ensure_all(ACTIVATIONS, [t_from, t_to])
        if t_to != t_from
        else [ctx.ensure(ACTIVATIONS, t_from)] * 2
    )
    ra, rb = {**a.meta, "cached": a.cached}, {**b.meta, "cached": b.cached}
    meta = {
        **{k: v for k, v in common.items()},
        "from": ra,
        "to": rb,
        "difference": nan_difference(ra["activation"], rb["activation"]),
    }
    return Result(meta)


def _check_compare(ctx: Context, c: ActivationCompareTask) -> None:
    tape = ctx.tape(c.run_id)
    require_conv_layer(ctx.run(c.run_id), c.layer, ["body", "layer"], ctx.store, c.split)
    require_step(tape, c.from_step, ["body", "from"])
    require_step(tape, c.to_step, ["body", "to"])


COMPARE_ACTIVATIONS = Analysis(
    name="activations_compare",
    title="Eq. 1 of one layer at two steps and their difference",
    request=ActivationCompareTask,
    compute=_compare,
    summary="One layer's Eq. 1 matrix at two steps and their difference (to − from), e.g. step 0 vs the last, "
    "to show filters specialising. Each step selects its own correctly predicted inputs; both come from the "
    "activations cache.",
    path="/runs/{run_id}/activations/compare",
    method="POST",
    body=ActivationCompareRequest,
    check=_check_compare,
    inline=True,
    cache=False,
)


class FeatureMapRequest(AnalysisRequest):
    run_id: str
    step: int = Field(..., ge=0, description="a captured step")
    layer: str = Field(..., min_length=1, max_length=64, description="a conv layer")
    index: int = Field(..., ge=0, description="index of the input in the split")
    split: SplitName = Field("test", description="dataset split")
    point: FeaturePointName = Field("post", description="after (post) or before (pre) the activation")


def split_size(settings: Settings, dataset: str, split: str) -> int | None:
    """Number of inputs of a split of a known dataset (from its catalog entry; no files are read)."""
    for info in list_datasets(settings):
        if info.name == dataset:
            return info.train_size if split == "train" else info.test_size
    return None


def _check_featuremaps(ctx: Context, t: FeatureMapRequest) -> None:
    tape = ctx.tape(t.run_id)
    rec = ctx.run(t.run_id)
    require_conv_layer(rec, t.layer, ["query", "layer"], ctx.store, t.split)
    require_step(tape, t.step, ["query", "step"])
    if rec.dataset is None:  # an SDK run: the analyzer checks the index against its evaluation set
        return
    n = split_size(ctx.settings, rec.dataset, t.split)
    if n is not None and t.index >= n:
        raise invalid(
            ["query", "index"],
            f"index {t.index} is out of range: the {t.split} split of {rec.dataset} has indices 0..{n - 1}",
            min=0,
            max=n - 1,
        )


def _featuremaps(ctx: Context, t: FeatureMapRequest) -> Result:
    """One input's maps of one conv layer at one step, with its label and the model's prediction.

    ``maps`` = [F, H, W] float32, ``input`` = the input [C, H, W], the JSON the rest.
    """
    rec = ctx.run(t.run_id)
    check_layer(ctx.store, rec, t.layer)
    if sdk_runs.is_sdk(rec):
        x, y = sdk_runs.inputs(ctx.store, rec, t.split)
    else:
        x, y = load_dataset(rec.dataset_name(), ctx.settings).split(t.split)
    if not 0 <= t.index < int(x.shape[0]):
        raise AnalysisError(
            f"index {t.index} is out of range: the {t.split} split has indices 0..{x.shape[0] - 1}"
        )
    model = model_at(ctx.store, rec, t.step)
    xb = x[t.index : t.index + 1]
    with torch.inference_mode():
        maps = model.feature_maps(xb, t.layer, t.point)[0].numpy()
        probs = torch.softmax(model(xb), dim=1)[0].numpy()
    meta = {
        "run_id": rec.id,
        "layer": t.layer,
        "step": t.step,
        "split": t.split,
        "index": t.index,
        "point": t.point,
        "label": int(y[t.index]),
        "prediction": int(probs.argmax()),
        "probabilities": [float(v) for v in probs],
        "map_sums": [float(v) for v in maps.astype(np.float64).sum(axis=(1, 2))],
        "input_sum": float(xb.numpy().astype(np.float64).sum()),
    }
    return Result(meta, {"maps": maps, "input": xb[0].numpy()})


def _featuremaps_answer(stored: Stored, _: Any) -> Answer:
    return Answer(
        {**stored.meta, "input": array_json(stored.array("input")), "maps": array_json(stored.array("maps"))}
    )


FEATUREMAPS = Analysis(
    name="featuremaps",
    title="Feature maps of one input",
    request=FeatureMapRequest,
    compute=_featuremaps,
    summary="The maps [F, H, W] of one input for one conv layer at one step, with the input, its label and "
    "the model's prediction.",
    path="/runs/{run_id}/featuremaps",
    check=_check_featuremaps,
    respond=_featuremaps_answer,
    artifacts=("maps", "input"),
)


def compute_featuremaps(store: Store, settings: Settings, t: FeatureMapTask) -> tuple[str, dict[str, Any]]:
    """The feature maps of a task payload through the registry's cache; ``(key, {cached, seconds})``."""
    s = ensure(FEATUREMAPS, Context(store, settings), FeatureMapRequest.model_validate(t.model_dump()))
    return s.key, {"cached": s.cached, "seconds": s.seconds}


ANALYSES = (ACTIVATIONS, COMPARE_ACTIVATIONS, FEATUREMAPS)
