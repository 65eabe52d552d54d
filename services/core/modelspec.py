"""Declarative model specs: validated JSON in, ``nn.Module`` out. No user code is ever imported or run.

A spec is a list of allow-listed layers with bounded sizes. Validation computes every layer's
output shape, so a spec that would fail at run time (an empty feature map, a linear layer on a
3-D map, a final width that is not ``num_classes``) is rejected up front with a message naming
the layer. Layer names become ``state_dict`` prefixes: ``conv1.weight``, ``conv1.bias``, …,
batchnorm layers are ``<name>_bn``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from functools import lru_cache
from typing import Annotated, Any, Literal, TypedDict

import torch
import torch.nn.functional as F
from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    RootModel,
    Tag,
    field_validator,
    model_validator,
)
from torch import nn

__all__ = [
    "Activation",
    "AvgPool2dLayer",
    "Conv2dLayer",
    "DropoutLayer",
    "FlattenLayer",
    "Layer",
    "LayerCost",
    "LayerInfo",
    "LinearLayer",
    "MaxPool2dLayer",
    "ModelRef",
    "ModelSpec",
    "PRESETS",
    "Preset",
    "PresetRef",
    "SpecNet",
    "SpecTooCostly",
    "check_compute_bounds",
    "TensorKind",
    "UnknownTensor",
    "build_model",
    "conv_layers",
    "count_params",
    "layer_costs",
    "layer_table",
    "state_dict_shapes",
    "tensor_kind",
]

MAX_PARAMS = 64_000_000
NAME_PATTERN = r"^[a-z][a-z0-9_]{0,31}$"

Activation = Literal["relu", "tanh", "sigmoid", "none"]
FeaturePoint = Literal["post", "pre"]

LayerName = Annotated[
    str,
    Field(
        pattern=NAME_PATTERN,
        description="identifier [a-z][a-z0-9_]{0,31}; becomes the state_dict prefix",
    ),
]


class _LayerBase(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Conv2dLayer(_LayerBase):
    """2-D convolution (+ optional batchnorm) followed by an activation."""

    type: Literal["conv2d"] = "conv2d"
    name: LayerName | None = None
    out_channels: int = Field(ge=1, le=2048)
    kernel_size: int = Field(ge=1, le=11)
    stride: int = Field(default=1, ge=1, le=4)
    padding: int = Field(default=0, ge=0, le=5)
    activation: Activation = "relu"
    batchnorm: bool = False


class MaxPool2dLayer(_LayerBase):
    """Max pooling; ``stride`` defaults to ``kernel_size``."""

    type: Literal["maxpool2d"] = "maxpool2d"
    kernel_size: int = Field(ge=1, le=8)
    stride: int | None = Field(default=None, ge=1, le=8)


class AvgPool2dLayer(_LayerBase):
    """Average pooling; ``stride`` defaults to ``kernel_size``."""

    type: Literal["avgpool2d"] = "avgpool2d"
    kernel_size: int = Field(ge=1, le=8)
    stride: int | None = Field(default=None, ge=1, le=8)


class DropoutLayer(_LayerBase):
    """Dropout with probability ``p`` (active only in training mode)."""

    type: Literal["dropout"] = "dropout"
    p: float = Field(ge=0.0, lt=1.0)


class FlattenLayer(_LayerBase):
    """Flattens a [C,H,W] map into a vector of C·H·W features."""

    type: Literal["flatten"] = "flatten"


class LinearLayer(_LayerBase):
    """Fully connected layer (+ optional batchnorm) followed by an activation (default none)."""

    type: Literal["linear"] = "linear"
    name: LayerName | None = None
    out_features: int = Field(ge=1, le=65536)
    activation: Activation = "none"
    batchnorm: bool = False


Layer = Annotated[
    Conv2dLayer | MaxPool2dLayer | AvgPool2dLayer | DropoutLayer | FlattenLayer | LinearLayer,
    Field(discriminator="type"),
]
ParamLayer = Conv2dLayer | LinearLayer

_DEFAULT_PREFIX = {
    "conv2d": "conv",
    "linear": "fc",
    "maxpool2d": "pool",
    "avgpool2d": "avgpool",
    "dropout": "dropout",
    "flatten": "flatten",
}


def _describe(index: int, name: str | None, kind: str) -> str:
    return f"layers[{index}] ({name}, {kind})" if name else f"layers[{index}] ({kind})"


def _fmt_shape(shape: tuple[int, ...]) -> str:
    return "[" + ", ".join(str(s) for s in shape) + "]"


def _conv_out(size: int, kernel: int, stride: int, padding: int) -> int:
    return (size + 2 * padding - kernel) // stride + 1


def _layer_params(layer: Layer, in_shape: tuple[int, ...]) -> int:
    if isinstance(layer, Conv2dLayer):
        n = layer.out_channels * in_shape[0] * layer.kernel_size**2 + layer.out_channels
        return n + (2 * layer.out_channels if layer.batchnorm else 0)
    if isinstance(layer, LinearLayer):
        n = layer.out_features * in_shape[0] + layer.out_features
        return n + (2 * layer.out_features if layer.batchnorm else 0)
    return 0


def _output_shape(index: int, layer: Layer, in_shape: tuple[int, ...]) -> tuple[int, ...]:
    """The output shape of one layer, or a ValueError naming the layer and what is wrong."""
    name = getattr(layer, "name", None)
    where = _describe(index, name, layer.type)
    if isinstance(layer, Conv2dLayer | MaxPool2dLayer | AvgPool2dLayer):
        if len(in_shape) != 3:
            raise ValueError(
                f"{where} needs a 3-D [C, H, W] feature map but gets a flat vector of {in_shape[0]} "
                "features; put 2-D layers before the flatten layer"
            )
        c, h, w = in_shape
        if isinstance(layer, Conv2dLayer):
            k, s, p, out_c = layer.kernel_size, layer.stride, layer.padding, layer.out_channels
        else:
            k, s, p, out_c = layer.kernel_size, layer.stride or layer.kernel_size, 0, c
        oh, ow = _conv_out(h, k, s, p), _conv_out(w, k, s, p)
        if oh < 1 or ow < 1:
            raise ValueError(
                f"{where} makes the feature map empty: input {_fmt_shape(in_shape)} with kernel_size {k}, "
                f"stride {s}, padding {p} gives {max(oh, 0)}x{max(ow, 0)}; use a smaller kernel or stride, "
                "more padding, or fewer downsampling layers"
            )
        return (out_c, oh, ow)
    if isinstance(layer, FlattenLayer):
        if len(in_shape) != 3:
            raise ValueError(f"{where}: input is already flat ({in_shape[0]} features); remove this flatten")
        return (math.prod(in_shape),)
    if isinstance(layer, LinearLayer):
        if len(in_shape) != 1:
            raise ValueError(
                f"{where} gets a 3-D feature map {_fmt_shape(in_shape)}; insert "
                '{"type": "flatten"} before it'
            )
        return (layer.out_features,)
    return in_shape  # dropout keeps the shape


class ModelSpec(BaseModel):
    """A validated model: input shape, number of classes and an ordered list of layers.

    After validation every conv2d / linear layer has a name (defaults ``conv1``, ``conv2``, …,
    ``fc1``, ``fc2``, … counted per kind), so the spec stored in a run record is explicit.
    """

    model_config = ConfigDict(extra="forbid")

    input_shape: tuple[
        Annotated[int, Field(ge=1, le=4, description="channels")],
        Annotated[int, Field(ge=4, le=512, description="height")],
        Annotated[int, Field(ge=4, le=512, description="width")],
    ] = Field(description="[C, H, W] of one input: C 1..4, H and W 4..512")
    num_classes: int = Field(ge=2, le=1000)
    layers: list[Layer] = Field(min_length=1, max_length=64)

    @model_validator(mode="after")
    def _check_layers(self) -> ModelSpec:
        named = _assign_names(self.layers)
        shape: tuple[int, ...] = tuple(self.input_shape)
        total = 0
        for i, layer in enumerate(named):
            total += _layer_params(layer, shape)
            shape = _output_shape(i, layer, shape)
        last = named[-1]
        if not isinstance(last, LinearLayer):
            raise ValueError(
                f"{_describe(len(named) - 1, getattr(last, 'name', None), last.type)}: the last layer must be "
                f"a linear layer with out_features = num_classes ({self.num_classes}) that outputs the logits"
            )
        if last.out_features != self.num_classes:
            raise ValueError(
                f"{_describe(len(named) - 1, last.name, 'linear')}: out_features is {last.out_features} but the "
                f"last layer must output num_classes = {self.num_classes} logits"
            )
        if total > MAX_PARAMS:
            raise ValueError(f"the model has {total:,} parameters; at most {MAX_PARAMS:,} are allowed")
        self.layers = named
        return self


def _assign_names(layers: list[Layer]) -> list[Layer]:
    """Fill default names (conv1, fc1, …) and check names are unique and not reserved."""
    explicit: dict[str, int] = {}
    for i, layer in enumerate(layers):
        name = getattr(layer, "name", None)
        if name is None:
            continue
        if name in explicit:
            raise ValueError(
                f"{_describe(i, name, layer.type)}: name {name!r} is already used by layers[{explicit[name]}]; "
                "layer names must be unique"
            )
        if name in _reserved_names():
            raise ValueError(
                f"{_describe(i, name, layer.type)}: name {name!r} is reserved (it is an nn.Module attribute); "
                "choose another name"
            )
        explicit[name] = i
    out: list[Layer] = []
    counts: dict[str, int] = {}
    taken: dict[str, int] = {}
    for i, layer in enumerate(layers):
        if not isinstance(layer, ParamLayer):
            out.append(layer)
            continue
        counts[layer.type] = counts.get(layer.type, 0) + 1
        name = layer.name
        if name is None:
            name = f"{_DEFAULT_PREFIX[layer.type]}{counts[layer.type]}"
            if name in explicit:
                raise ValueError(
                    f"layers[{i}] ({layer.type}): its default name {name!r} is the explicit name of "
                    f"layers[{explicit[name]}]; give layers[{i}] a name too"
                )
            layer = layer.model_copy(update={"name": name})
        taken[name] = i
        out.append(layer)
    for i, layer in enumerate(out):
        if isinstance(layer, ParamLayer) and layer.batchnorm and f"{layer.name}_bn" in taken:
            j = taken[f"{layer.name}_bn"]
            raise ValueError(
                f"layers[{j}]: name {layer.name}_bn clashes with the batchnorm of layers[{i}] ({layer.name}); "
                "rename one of them"
            )
    return out


class PresetRef(BaseModel):
    """A reference to a named preset: ``{"preset": "paper-cnn"}``."""

    model_config = ConfigDict(extra="forbid")

    preset: str

    @field_validator("preset")
    @classmethod
    def _known(cls, v: str) -> str:
        if v not in PRESETS:
            raise ValueError(f"unknown preset {v!r}; available presets: {', '.join(sorted(PRESETS))}")
        return v


def _ref_kind(v: Any) -> str:
    if isinstance(v, PresetRef) or (isinstance(v, dict) and "preset" in v):
        return "preset"
    return "inline"


_ModelRefRoot = Annotated[
    Annotated[PresetRef, Tag("preset")] | Annotated[ModelSpec, Tag("inline")],
    Discriminator(_ref_kind),
]


class ModelRef(RootModel[_ModelRefRoot]):
    """What a run request names as its model: ``{"preset": "<name>"}`` or an inline :class:`ModelSpec`."""

    def resolve(self) -> ModelSpec:
        """The concrete spec (a deep copy for presets, so callers may not mutate the preset)."""
        if isinstance(self.root, PresetRef):
            return PRESETS[self.root.preset].spec.model_copy(deep=True)
        return self.root

    @property
    def preset(self) -> str | None:
        """The preset name, or None for an inline spec."""
        return self.root.preset if isinstance(self.root, PresetRef) else None


class Preset(BaseModel):
    """A named, ready-made model spec."""

    name: str
    description: str
    spec: ModelSpec
    params: int
    suggested_dataset: str = "mnist-10k"


# --------------------------------------------------------------------------- introspection


class LayerInfo(BaseModel):
    """One row of :func:`layer_table`."""

    index: int
    name: str
    type: str
    output_shape: list[int]
    params: int
    activation: Activation | None = None
    batchnorm: bool = False


class TensorKind(TypedDict):
    """What a ``state_dict`` entry is: its layer, the kind of module, and its role."""

    layer: str
    kind: Literal["conv2d", "linear", "batchnorm"]
    role: str


class UnknownTensor(KeyError):
    """A ``state_dict`` name that the spec does not produce."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else "unknown tensor"


def layer_table(spec: ModelSpec) -> list[LayerInfo]:
    """Every layer with its name (parameter-free layers get ``pool1``, ``dropout1``, …), output shape and params."""
    rows: list[LayerInfo] = []
    shape: tuple[int, ...] = tuple(spec.input_shape)
    counts: dict[str, int] = {}
    for i, layer in enumerate(spec.layers):
        counts[layer.type] = counts.get(layer.type, 0) + 1
        name = getattr(layer, "name", None) or f"{_DEFAULT_PREFIX[layer.type]}{counts[layer.type]}"
        params = _layer_params(layer, shape)
        shape = _output_shape(i, layer, shape)
        rows.append(
            LayerInfo(
                index=i,
                name=name,
                type=layer.type,
                output_shape=list(shape),
                params=params,
                activation=getattr(layer, "activation", None),
                batchnorm=bool(getattr(layer, "batchnorm", False)),
            )
        )
    return rows


class LayerCost(BaseModel):
    """What one layer costs per input sample: activation elements kept for the backward pass, forward FLOPs."""

    index: int
    name: str
    type: str
    output_shape: list[int]
    activation_elements: int
    flops: int


def layer_costs(spec: ModelSpec) -> list[LayerCost]:
    """Per-layer cost of one sample, from the spec alone (nothing is built). Activations count every tensor
    autograd keeps: a conv/linear output, plus its post-activation and batchnorm outputs when present, pooling
    and dropout outputs (flatten is a view). FLOPs count a multiply-add as 2."""
    out: list[LayerCost] = []
    shape: tuple[int, ...] = tuple(spec.input_shape)
    for row, layer in zip(layer_table(spec), spec.layers, strict=True):
        in_shape, shape = shape, tuple(row.output_shape)
        n = math.prod(shape)
        if isinstance(layer, Conv2dLayer):
            flops = 2 * in_shape[0] * layer.kernel_size**2 * n
        elif isinstance(layer, LinearLayer):
            flops = 2 * in_shape[0] * n
        elif isinstance(layer, MaxPool2dLayer | AvgPool2dLayer):
            flops = layer.kernel_size**2 * n
        else:
            flops = 0 if isinstance(layer, FlattenLayer) else n
        kept = 0 if isinstance(layer, FlattenLayer) else n
        if isinstance(layer, ParamLayer):
            extra = int(layer.activation != "none") + int(layer.batchnorm)
            kept += extra * n
            flops += 4 * n * extra
        out.append(
            LayerCost(
                index=row.index,
                name=row.name,
                type=row.type,
                output_shape=row.output_shape,
                activation_elements=kept,
                flops=flops,
            )
        )
    return out


class SpecTooCostly(ValueError):
    """A spec over one of the server's compute bounds; ``index`` is the layer that crosses it (None: the whole
    model) and ``bound`` the setting's name."""

    def __init__(self, index: int | None, bound: str, message: str) -> None:
        super().__init__(message)
        self.index, self.bound = index, bound


TRAIN_STEP_FLOPS_FACTOR = 3
"""A training step costs about 3 forward passes (forward, plus a backward twice as expensive)."""


def check_compute_bounds(
    spec: ModelSpec, batch_size: int, *, max_params: int, max_activation_elements: int, max_step_flops: float
) -> None:
    """Refuse a spec (:class:`SpecTooCostly`, naming the layer and the bound) whose parameters, activation
    elements per sample or FLOPs per training step exceed this server's bounds, before anything runs."""
    rows = layer_costs(spec)
    params = count_params(spec)
    if params > max_params:
        big = max(layer_table(spec), key=lambda r: r.params)
        raise SpecTooCostly(
            big.index,
            "NETLAPSE_MAX_PARAMS",
            f"the model has {params:,} parameters; this server allows at most {max_params:,} "
            f"(NETLAPSE_MAX_PARAMS); the largest layer is layers[{big.index}] ({big.name}) with {big.params:,}",
        )
    total = math.prod(spec.input_shape)
    for r in rows:
        total += r.activation_elements
        if total > max_activation_elements:
            raise SpecTooCostly(
                r.index,
                "NETLAPSE_MAX_ACTIVATION_ELEMENTS",
                f"layers[{r.index}] ({r.name}, {r.type}): activations reach {total:,} elements per sample by this "
                f"layer (its output is {_fmt_shape(tuple(r.output_shape))}); this server allows at most "
                f"{max_activation_elements:,} (NETLAPSE_MAX_ACTIVATION_ELEMENTS): use fewer or narrower layers, "
                "or downsample earlier",
            )
    flops = 0
    for r in rows:
        flops += r.flops * batch_size * TRAIN_STEP_FLOPS_FACTOR
        if flops > max_step_flops:
            heaviest = max(rows, key=lambda x: x.flops)
            raise SpecTooCostly(
                r.index,
                "NETLAPSE_MAX_STEP_FLOPS",
                f"layers[{r.index}] ({r.name}, {r.type}): a training step at batch_size {batch_size} reaches "
                f"{flops:.3g} FLOPs by this layer; this server allows at most {max_step_flops:.3g} per step "
                f"(NETLAPSE_MAX_STEP_FLOPS); the heaviest layer is layers[{heaviest.index}] ({heaviest.name}): "
                "use a smaller batch_size or a lighter model",
            )


def count_params(spec: ModelSpec) -> int:
    """Number of trainable parameters (weights, biases, batchnorm affine); equals the built model's count."""
    return sum(row.params for row in layer_table(spec))


def conv_layers(spec: ModelSpec) -> list[str]:
    """Names of the conv2d layers, in order (the layers :meth:`SpecNet.feature_maps` accepts)."""
    return [layer.name for layer in spec.layers if isinstance(layer, Conv2dLayer) and layer.name]


def state_dict_shapes(spec: ModelSpec) -> dict[str, tuple[int, ...]]:
    """Every ``state_dict`` name the built model will have, in order, with its shape (no model is built)."""
    out: dict[str, tuple[int, ...]] = {}
    shape: tuple[int, ...] = tuple(spec.input_shape)
    for i, layer in enumerate(spec.layers):
        if isinstance(layer, Conv2dLayer):
            k = layer.kernel_size
            out[f"{layer.name}.weight"] = (layer.out_channels, shape[0], k, k)
            out[f"{layer.name}.bias"] = (layer.out_channels,)
            width = layer.out_channels
        elif isinstance(layer, LinearLayer):
            out[f"{layer.name}.weight"] = (layer.out_features, shape[0])
            out[f"{layer.name}.bias"] = (layer.out_features,)
            width = layer.out_features
        shape = _output_shape(i, layer, shape)
        if isinstance(layer, ParamLayer) and layer.batchnorm:
            bn = f"{layer.name}_bn"
            for role in ("weight", "bias", "running_mean", "running_var"):
                out[f"{bn}.{role}"] = (width,)
            out[f"{bn}.num_batches_tracked"] = ()
    return out


def tensor_kind(spec: ModelSpec, state_dict_name: str) -> TensorKind:
    """Classify a ``state_dict`` name, e.g. ``conv1_bn.running_mean`` → layer conv1, kind batchnorm.

    Raises :class:`UnknownTensor` (a KeyError) listing the valid names when the spec has no such tensor.
    """
    names = state_dict_shapes(spec)
    if state_dict_name not in names:
        raise UnknownTensor(
            f"unknown tensor {state_dict_name!r}; this model's tensors are: {', '.join(names)}"
        )
    module, role = state_dict_name.rsplit(".", 1)
    by_name = {layer.name: layer for layer in spec.layers if isinstance(layer, ParamLayer)}
    if module in by_name:
        return TensorKind(layer=module, kind=by_name[module].type, role=role)  # type: ignore[typeddict-item]
    return TensorKind(layer=module.removesuffix("_bn"), kind="batchnorm", role=role)


# --------------------------------------------------------------------------- torch model


_ACTIVATIONS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "relu": F.relu,
    "tanh": torch.tanh,
    "sigmoid": torch.sigmoid,
}


def _activate(x: torch.Tensor, activation: str) -> torch.Tensor:
    fn = _ACTIVATIONS.get(activation)
    return fn(x) if fn is not None else x


class SpecNet(nn.Module):
    """An ``nn.Module`` built from a :class:`ModelSpec`.

    Only conv2d / linear / batchnorm layers are submodules (named by layer name, batchnorm as
    ``<name>_bn``); pooling, dropout, flatten and activations are applied functionally, so the
    ``state_dict`` holds exactly the spec's tensors.
    """

    def __init__(self, spec: ModelSpec) -> None:
        super().__init__()
        self._spec = spec
        shape: tuple[int, ...] = tuple(spec.input_shape)
        for i, layer in enumerate(spec.layers):
            if isinstance(layer, Conv2dLayer):
                assert layer.name is not None
                self.add_module(
                    layer.name,
                    nn.Conv2d(shape[0], layer.out_channels, layer.kernel_size, layer.stride, layer.padding),
                )
                if layer.batchnorm:
                    self.add_module(f"{layer.name}_bn", nn.BatchNorm2d(layer.out_channels))
            elif isinstance(layer, LinearLayer):
                assert layer.name is not None
                self.add_module(layer.name, nn.Linear(shape[0], layer.out_features))
                if layer.batchnorm:
                    self.add_module(f"{layer.name}_bn", nn.BatchNorm1d(layer.out_features))
            shape = _output_shape(i, layer, shape)

    @property
    def spec(self) -> ModelSpec:
        """The spec this model was built from."""
        return self._spec

    def _run(self, x: torch.Tensor, stop: str | None = None, point: FeaturePoint = "post") -> torch.Tensor:
        for layer in self._spec.layers:
            if isinstance(layer, ParamLayer):
                assert layer.name is not None
                x = self.get_submodule(layer.name)(x)
                if layer.batchnorm:
                    x = self.get_submodule(f"{layer.name}_bn")(x)
                if layer.name == stop and point == "pre":
                    return x
                x = _activate(x, layer.activation)
                if layer.name == stop:
                    return x
            elif isinstance(layer, MaxPool2dLayer):
                x = F.max_pool2d(x, layer.kernel_size, layer.stride or layer.kernel_size)
            elif isinstance(layer, AvgPool2dLayer):
                x = F.avg_pool2d(x, layer.kernel_size, layer.stride or layer.kernel_size)
            elif isinstance(layer, DropoutLayer):
                x = F.dropout(x, layer.p, training=self.training)
            elif isinstance(layer, FlattenLayer):
                x = torch.flatten(x, 1)
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits ``[N, num_classes]`` for a batch ``[N, C, H, W]``."""
        return self._run(x)

    def feature_maps(self, x: torch.Tensor, layer: str, point: FeaturePoint = "post") -> torch.Tensor:
        """Output ``[N, C_out, H, W]`` of the named conv layer, running only the layers up to it.

        ``post``: after batchnorm (if any) and the activation — Keras' ``Conv2D(activation=...)`` output.
        ``pre``: after batchnorm, before the activation. Call ``.eval()`` first for analysis, so
        dropout is off and batchnorm uses (and does not update) its running statistics.
        """
        convs = conv_layers(self._spec)
        if layer not in convs:
            raise ValueError(
                f"unknown conv layer {layer!r}; this model's conv layers are: {', '.join(convs)}"
            )
        if point not in ("post", "pre"):
            raise ValueError(f"point must be 'post' or 'pre', got {point!r}")
        return self._run(x, stop=layer, point=point)


@lru_cache(maxsize=1)
def _reserved_names() -> frozenset[str]:
    # A layer named like an nn.Module attribute (``training``, ``forward``, …) cannot be a submodule.
    return frozenset(dir(SpecNet)) | {"training", "spec"}


def build_model(spec: ModelSpec) -> SpecNet:
    """Build the (randomly initialised) model for a validated spec; seed torch first for reproducibility."""
    return SpecNet(spec)


# --------------------------------------------------------------------------- presets


def _preset(name: str, description: str, spec: dict[str, Any], dataset: str = "mnist-10k") -> Preset:
    s = ModelSpec.model_validate(spec)
    return Preset(
        name=name, description=description, spec=s, params=count_params(s), suggested_dataset=dataset
    )


PRESETS: dict[str, Preset] = {
    p.name: p
    for p in (
        _preset(
            "paper-cnn",
            "The paper's model, the classic Keras MNIST CNN: conv1 32 3x3 relu, conv2 64 3x3 relu, "
            "maxpool 2, dropout 0.25, fc1 128 relu, dropout 0.5, fc2 10 (1,199,882 parameters).",
            {
                "input_shape": [1, 28, 28],
                "num_classes": 10,
                "layers": [
                    {
                        "type": "conv2d",
                        "name": "conv1",
                        "out_channels": 32,
                        "kernel_size": 3,
                        "activation": "relu",
                    },
                    {
                        "type": "conv2d",
                        "name": "conv2",
                        "out_channels": 64,
                        "kernel_size": 3,
                        "activation": "relu",
                    },
                    {"type": "maxpool2d", "kernel_size": 2},
                    {"type": "dropout", "p": 0.25},
                    {"type": "flatten"},
                    {"type": "linear", "name": "fc1", "out_features": 128, "activation": "relu"},
                    {"type": "dropout", "p": 0.5},
                    {"type": "linear", "name": "fc2", "out_features": 10},
                ],
            },
        ),
        _preset(
            "tiny-cnn",
            "A few-thousand-parameter CNN for fast tests: conv1 4 3x3, maxpool 2, conv2 8 3x3, maxpool 2, fc1 10.",
            {
                "input_shape": [1, 28, 28],
                "num_classes": 10,
                "layers": [
                    {"type": "conv2d", "name": "conv1", "out_channels": 4, "kernel_size": 3},
                    {"type": "maxpool2d", "kernel_size": 2},
                    {"type": "conv2d", "name": "conv2", "out_channels": 8, "kernel_size": 3},
                    {"type": "maxpool2d", "kernel_size": 2},
                    {"type": "flatten"},
                    {"type": "linear", "name": "fc1", "out_features": 10},
                ],
            },
            dataset="synthetic",
        ),
        _preset(
            "mlp",
            "A multilayer perceptron: flatten, fc1 128 relu, fc2 10.",
            {
                "input_shape": [1, 28, 28],
                "num_classes": 10,
                "layers": [
                    {"type": "flatten"},
                    {"type": "linear", "name": "fc1", "out_features": 128, "activation": "relu"},
                    {"type": "linear", "name": "fc2", "out_features": 10},
                ],
            },
        ),
        _preset(
            "wide-cnn",
            "A ~25M-parameter CNN for memory and throughput benchmarks: conv 64/128/256 3x3 (padding 1) "
            "with two maxpools, fc1 1984 relu, dropout 0.5, fc2 10.",
            {
                "input_shape": [1, 28, 28],
                "num_classes": 10,
                "layers": [
                    {"type": "conv2d", "name": "conv1", "out_channels": 64, "kernel_size": 3, "padding": 1},
                    {"type": "conv2d", "name": "conv2", "out_channels": 128, "kernel_size": 3, "padding": 1},
                    {"type": "maxpool2d", "kernel_size": 2},
                    {"type": "conv2d", "name": "conv3", "out_channels": 256, "kernel_size": 3, "padding": 1},
                    {"type": "maxpool2d", "kernel_size": 2},
                    {"type": "flatten"},
                    {"type": "linear", "name": "fc1", "out_features": 1984, "activation": "relu"},
                    {"type": "dropout", "p": 0.5},
                    {"type": "linear", "name": "fc2", "out_features": 10},
                ],
            },
        ),
    )
}
