"""Per-input analyses (Eq. 1 activations, feature maps) on runs recorded by the SDK.

A server run's model is its layer spec and its inputs are a built-in dataset. An SDK run's model is the user's
own code, which the analyzer never imports: it has the model's ``torch.export`` program instead
(``runs/{id}/sdk/program.bin``, see :mod:`netlapse.core.program`), run with the tape's tensors at the requested
step, and the evaluation set the user handed over with ``run.eval_data(inputs, labels)``
(``runs/{id}/sdk/eval_inputs.npy`` / ``eval_labels.npy``), which is the run's only split (``test``).
Conv layers are named by module path (``block.conv1``). What is missing is answered with a 422 that says what
to hand over.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from netlapse.analyzer.registry import AnalysisError
from netlapse.core.program import (
    FeaturePoint,
    Program,
    ProgramError,
    ProgramModule,
    eval_inputs_key,
    eval_labels_key,
    load_program,
    program_key,
)
from netlapse.core.results import npy_load, open_tape
from netlapse.core.schemas import RunRecord
from netlapse.core.store import ObjectNotFound, Store
from netlapse.core.tape import StepNotCaptured

__all__ = [
    "EVAL_SPLIT",
    "clear_caches",
    "conv_layer_names",
    "eval_set",
    "inputs",
    "require_ready",
    "is_sdk",
    "model_at",
    "num_classes",
    "check_input_shape",
    "probes",
    "program_of",
]

EVAL_SPLIT = "test"  # the name an SDK run's one evaluation set answers to
_NO_PROGRAM = (
    "run {id} was recorded by the SDK without a model program, so its activations and feature maps cannot be "
    "computed: pass one input batch when watching, `run.watch(model, optimizer, example_input=batch)`, so "
    "netlapse exports the model with torch.export (if it did and warned that the model cannot be exported, "
    "the model needs changes torch.export accepts)"
)
_NO_EVAL = (
    "run {id} was recorded by the SDK without evaluation data, so there are no inputs to compute activations "
    "or feature maps on: hand over a labelled held-out set with `run.eval_data(inputs, labels)` "
    "(numpy or torch, inputs as the model takes them, integer labels)"
)

_LOCK = threading.Lock()
_PROGRAMS: OrderedDict[tuple[str, str], Program] = OrderedDict()
_EVAL: OrderedDict[tuple[str, str], tuple[torch.Tensor, torch.Tensor]] = OrderedDict()
_MODELS: OrderedDict[tuple[str, str, int], ProgramModule] = OrderedDict()
_MAX_CACHED = 4


def _cached(cache: OrderedDict, key: Any, make: Callable[[], Any]) -> Any:
    with _LOCK:
        v = cache.get(key)
        if v is not None:
            cache.move_to_end(key)
            return v
    v = make()
    with _LOCK:
        cache[key] = v
        while len(cache) > _MAX_CACHED:
            cache.popitem(last=False)
    return v


def clear_caches() -> None:
    """Forget programs, evaluation sets and models kept in this process."""
    with _LOCK:
        _PROGRAMS.clear()
        _EVAL.clear()
        _MODELS.clear()


def is_sdk(rec: RunRecord) -> bool:
    """Whether the run was recorded by the SDK (its model is a program, its inputs the user's)."""
    return rec.source == "sdk"


def program_of(store: Store, rec: RunRecord) -> Program:
    """The run's checked program; a 422 saying how to provide one when the run has none."""

    def make() -> Program:
        try:
            data = store.get(program_key(rec.id))
        except ObjectNotFound:
            raise AnalysisError(_NO_PROGRAM.format(id=rec.id)) from None
        try:
            return load_program(data)
        except ProgramError as exc:
            raise AnalysisError(f"run {rec.id}'s model program cannot be used: {exc}") from None

    return _cached(_PROGRAMS, (store.url, rec.id), make)


def conv_layer_names(store: Store, rec: RunRecord) -> list[str]:
    """The program's 2-D conv layers by module path, in graph order."""
    return [c.name for c in program_of(store, rec).conv_layers]


def eval_set(store: Store, rec: RunRecord, split: str) -> tuple[torch.Tensor, torch.Tensor]:
    """``(inputs, labels)`` the user handed over; 422 for another split or when there are none."""
    if split != EVAL_SPLIT:
        raise AnalysisError(
            f"run {rec.id} was recorded by the SDK and has one evaluation set (run.eval_data); "
            f"ask for split={EVAL_SPLIT!r}, not {split!r}"
        )

    def make() -> tuple[torch.Tensor, torch.Tensor]:
        try:
            x = npy_load(store.get(eval_inputs_key(rec.id)))
            y = npy_load(store.get(eval_labels_key(rec.id)))
        except ObjectNotFound:
            raise AnalysisError(_NO_EVAL.format(id=rec.id)) from None
        except ValueError as exc:  # e.g. an object array: never unpickled
            raise AnalysisError(f"run {rec.id}'s evaluation data cannot be read: {exc}") from None
        if y.ndim != 1 or x.ndim < 2 or x.shape[0] != y.shape[0] or not np.issubdtype(y.dtype, np.integer):
            raise AnalysisError(
                f"run {rec.id}'s evaluation data must be inputs [N, ...] and integer labels [N]; "
                f"got inputs {list(x.shape)} and labels {list(y.shape)} of dtype {y.dtype}"
            )
        if y.size and int(y.min()) < 0:
            raise AnalysisError(f"run {rec.id}'s evaluation labels must be class indices ≥ 0")
        return torch.from_numpy(np.ascontiguousarray(x)), torch.from_numpy(y.astype(np.int64))

    return _cached(_EVAL, (store.url, rec.id), make)


def require_ready(store: Store, rec: RunRecord, split: str) -> None:
    """The api's quick check before queueing: a usable program and evaluation data exist (422 otherwise)."""
    program_of(store, rec)
    if split != EVAL_SPLIT or not store.exists(eval_labels_key(rec.id)):
        eval_set(store, rec, split)  # raises the precise 422


def inputs(store: Store, rec: RunRecord, split: str) -> tuple[torch.Tensor, torch.Tensor]:
    """The evaluation set, its inputs in the dtype the model was exported for and checked against its shape."""
    x, y = eval_set(store, rec, split)
    prog = program_of(store, rec)
    dtype = prog.input_dtypes[0] if prog.input_dtypes else None
    if dtype is not None and x.dtype != dtype:
        x = x.to(dtype)
    check_input_shape(store, rec, x)
    return x, y


def num_classes(store: Store, rec: RunRecord) -> int:
    """Labels of Eq. 1: the width of the model's first output (its logits), checked against the labels."""
    _, y = eval_set(store, rec, EVAL_SPLIT)
    width = program_of(store, rec).logits_width
    top = int(y.max()) + 1 if y.numel() else 0
    if width is None:
        return top
    if top > width:
        raise AnalysisError(
            f"run {rec.id}'s evaluation labels go up to {top - 1}, but the model's first output has only "
            f"{width} values per input; labels must index the model's logits"
        )
    return width


def model_at(store: Store, rec: RunRecord, step: int) -> ProgramModule:
    """The program holding the tape's tensors at ``step`` (eval mode is built into the exported program)."""

    def make() -> ProgramModule:
        prog = program_of(store, rec)
        reader = open_tape(store, rec.id)
        captured = {t.name for t in reader.tensors()}
        missing = prog.missing_state(captured)
        if missing:
            hint = (
                "; record buffers too, with run.watch(model, optimizer, buffers=True)"
                if set(missing) <= prog.buffers
                else ""
            )
            raise AnalysisError(
                f"the tape of run {rec.id} lacks tensors its model needs: {', '.join(missing)}{hint}"
            )
        try:
            state = {
                name: torch.from_numpy(np.array(reader.read(name, step)))
                for name in prog.required_state.values()
            }
        except StepNotCaptured as exc:
            raise AnalysisError(str(exc)) from None
        try:
            return _Module(prog, state, "cpu")
        except ProgramError as exc:
            raise AnalysisError(str(exc)) from None

    return _cached(_MODELS, (store.url, rec.id, step), make)


class _Module(ProgramModule):
    """A ProgramModule whose failures (a program that does not run on these inputs) are 422s, not crashes."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        try:
            return super().forward(x)
        except ProgramError as exc:
            raise AnalysisError(
                f"the run's model program cannot run on its evaluation inputs: {exc}"
            ) from None

    def feature_maps(self, x: torch.Tensor, layer: str, point: FeaturePoint = "post") -> torch.Tensor:
        try:
            return super().feature_maps(x, layer, point)
        except ProgramError as exc:
            raise AnalysisError(str(exc)) from None


def check_input_shape(store: Store, rec: RunRecord, x: torch.Tensor) -> None:
    """422 when the evaluation inputs do not fit the shape the model was exported with (batch aside)."""
    prog = program_of(store, rec)
    want = prog.input_shapes[0] if prog.input_shapes else None
    if want is None:
        return
    got = list(x.shape)
    if len(got) != len(want) or any(
        w is not None and w != g for w, g in zip(want[1:], got[1:], strict=False)
    ):
        shown = ["N", *(str(w) for w in want[1:])]
        raise AnalysisError(
            f"run {rec.id}'s evaluation inputs have shape {got}, but the model was exported for inputs of shape "
            f"[{', '.join(shown)}]; hand over inputs like the example_input given to run.watch"
        )


def probes(model: ProgramModule) -> list[tuple[str, str, Callable[[torch.Tensor], torch.Tensor], int]]:
    """Per conv layer: name, the submodule whose output is its pre value, the pre→post function, channels."""
    prog = model.program
    return [(c.name, model.probe_path(c.name), prog.activation_fn(c), c.channels) for c in prog.conv_layers]
