"""Model specs: the paper's model exactly, shapes and feature maps, and clear errors for bad specs."""

from __future__ import annotations

import copy
from typing import Any

import pytest
import torch
from pydantic import ValidationError

from netlapse.core.modelspec import (
    PRESETS,
    ModelRef,
    ModelSpec,
    UnknownTensor,
    build_model,
    conv_layers,
    count_params,
    layer_table,
    state_dict_shapes,
    tensor_kind,
)

PAPER_KEYS = [
    "conv1.weight",
    "conv1.bias",
    "conv2.weight",
    "conv2.bias",
    "fc1.weight",
    "fc1.bias",
    "fc2.weight",
    "fc2.bias",
]


def _spec(*layers: dict[str, Any], **top: Any) -> dict[str, Any]:
    return {"input_shape": [1, 28, 28], "num_classes": 10, "layers": list(layers), **top}


FLAT_HEAD = ({"type": "flatten"}, {"type": "linear", "out_features": 10})


def _error(data: dict[str, Any], cls: type = ModelSpec) -> str:
    with pytest.raises(ValidationError) as info:
        cls.model_validate(data)
    return str(info.value)


def test_paper_cnn_matches_the_paper_exactly() -> None:
    spec = PRESETS["paper-cnn"].spec
    model = build_model(spec)
    assert count_params(spec) == 1_199_882
    assert PRESETS["paper-cnn"].params == 1_199_882
    assert sum(p.numel() for p in model.parameters()) == 1_199_882
    assert list(model.state_dict()) == PAPER_KEYS
    assert {k: tuple(v.shape) for k, v in model.state_dict().items()} == state_dict_shapes(spec)
    assert conv_layers(spec) == ["conv1", "conv2"]
    assert [(r.name, r.output_shape) for r in layer_table(spec)] == [
        ("conv1", [32, 26, 26]),
        ("conv2", [64, 24, 24]),
        ("pool1", [64, 12, 12]),
        ("dropout1", [64, 12, 12]),
        ("flatten1", [9216]),
        ("fc1", [128]),
        ("dropout2", [128]),
        ("fc2", [10]),
    ]


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_every_preset_builds_and_counts_its_params(name: str) -> None:
    spec = PRESETS[name].spec
    model = build_model(spec).eval()
    assert sum(p.numel() for p in model.parameters()) == count_params(spec) == PRESETS[name].params
    with torch.no_grad():
        assert model(torch.rand(2, *spec.input_shape)).shape == (2, spec.num_classes)


def test_preset_sizes_fit_their_purpose() -> None:
    assert 1_000 <= PRESETS["tiny-cnn"].params <= 10_000
    assert 20_000_000 <= PRESETS["wide-cnn"].params <= 30_000_000
    assert [layer.type for layer in PRESETS["mlp"].spec.layers] == ["flatten", "linear", "linear"]


def test_feature_maps_post_is_relu_of_pre() -> None:
    torch.manual_seed(0)
    model = build_model(PRESETS["paper-cnn"].spec).eval()
    x = torch.rand(3, 1, 28, 28)
    with torch.no_grad():
        post1 = model.feature_maps(x, "conv1")
        pre1 = model.feature_maps(x, "conv1", point="pre")
        post2 = model.feature_maps(x, "conv2", point="post")
        pre2 = model.feature_maps(x, "conv2", point="pre")
    assert post1.shape == pre1.shape == (3, 32, 26, 26)
    assert post2.shape == pre2.shape == (3, 64, 24, 24)
    assert (post1 >= 0).all() and (post2 >= 0).all()
    assert (pre1 < 0).any() and (pre2 < 0).any()
    assert torch.equal(post2, torch.relu(pre2))
    with pytest.raises(ValueError, match="conv1, conv2"):
        model.feature_maps(x, "fc1")


def test_batchnorm_modules_and_tensor_kinds() -> None:
    spec = ModelSpec.model_validate(
        _spec(
            {"type": "conv2d", "out_channels": 4, "kernel_size": 3, "batchnorm": True, "activation": "tanh"},
            {"type": "avgpool2d", "kernel_size": 2},
            {"type": "flatten"},
            {"type": "linear", "out_features": 16, "batchnorm": True, "activation": "sigmoid"},
            {"type": "linear", "out_features": 10},
        )
    )
    model = build_model(spec)
    keys = list(model.state_dict())
    assert keys == list(state_dict_shapes(spec))
    assert "conv1_bn.running_mean" in keys and "fc1_bn.num_batches_tracked" in keys
    assert not any(k.startswith(("pool", "dropout", "flatten")) for k in keys)
    assert tensor_kind(spec, "conv1.weight") == {"layer": "conv1", "kind": "conv2d", "role": "weight"}
    assert tensor_kind(spec, "conv1_bn.running_var") == {
        "layer": "conv1",
        "kind": "batchnorm",
        "role": "running_var",
    }
    assert tensor_kind(spec, "fc2.bias") == {"layer": "fc2", "kind": "linear", "role": "bias"}
    with pytest.raises(UnknownTensor, match="conv1.weight"):
        tensor_kind(spec, "conv9.weight")
    x = torch.rand(2, 1, 28, 28)
    model.eval()
    with torch.no_grad():
        post, pre = model.feature_maps(x, "conv1"), model.feature_maps(x, "conv1", "pre")
    assert torch.equal(post, torch.tanh(pre))


def test_default_names_are_filled_and_round_trip() -> None:
    spec = ModelSpec.model_validate(
        _spec(
            {"type": "conv2d", "out_channels": 2, "kernel_size": 3},
            {"type": "conv2d", "name": "edges", "out_channels": 2, "kernel_size": 3},
            {"type": "conv2d", "out_channels": 2, "kernel_size": 3},
            *FLAT_HEAD,
        )
    )
    assert conv_layers(spec) == ["conv1", "edges", "conv3"]
    assert ModelSpec.model_validate(spec.model_dump(mode="json")) == spec


def test_model_ref_preset_and_inline() -> None:
    ref = ModelRef.model_validate({"preset": "paper-cnn"})
    assert ref.preset == "paper-cnn"
    assert ref.resolve() == PRESETS["paper-cnn"].spec
    assert ref.model_dump() == {"preset": "paper-cnn"}
    ref.resolve().layers.clear()  # callers get a copy, never the preset itself
    assert len(PRESETS["paper-cnn"].spec.layers) == 8
    inline = ModelRef.model_validate(PRESETS["mlp"].spec.model_dump(mode="json"))
    assert inline.preset is None and count_params(inline.resolve()) == PRESETS["mlp"].params


def test_unknown_preset_lists_the_presets() -> None:
    msg = _error({"preset": "resnet"}, ModelRef)
    assert "resnet" in msg
    for name in PRESETS:
        assert name in msg
    assert "layers" in _error({"preset": "mlp", "layers": []}, ModelRef)


CONV = {"type": "conv2d", "out_channels": 4, "kernel_size": 3}


@pytest.mark.parametrize(
    ("field", "value", "where"),
    [
        ("out_channels", 0, "out_channels"),
        ("out_channels", 2049, "out_channels"),
        ("kernel_size", 12, "kernel_size"),
        ("stride", 5, "stride"),
        ("padding", 6, "padding"),
        ("activation", "gelu", "activation"),
        ("name", "Conv-1", "name"),
        ("groups", 2, "groups"),
    ],
)
def test_conv_bounds_name_the_field(field: str, value: Any, where: str) -> None:
    msg = _error(_spec({**CONV, field: value}, *FLAT_HEAD))
    assert f"layers.0.conv2d.{where}" in msg


@pytest.mark.parametrize(
    ("layer", "where"),
    [
        ({"type": "maxpool2d", "kernel_size": 9}, "layers.0.maxpool2d.kernel_size"),
        ({"type": "dropout", "p": 1.0}, "layers.0.dropout.p"),
        ({"type": "dropout", "p": -0.1}, "layers.0.dropout.p"),
    ],
)
def test_other_layer_bounds_name_the_field(layer: dict[str, Any], where: str) -> None:
    assert where in _error(_spec(layer, *FLAT_HEAD))


def test_linear_and_top_level_bounds() -> None:
    assert "layers.1.linear.out_features" in _error(
        _spec({"type": "flatten"}, {"type": "linear", "out_features": 0})
    )
    assert "input_shape.0" in _error(_spec(*FLAT_HEAD, input_shape=[5, 28, 28]))
    assert "input_shape.1" in _error(_spec(*FLAT_HEAD, input_shape=[1, 3, 28]))
    assert "input_shape.2" in _error(_spec(*FLAT_HEAD, input_shape=[1, 28, 513]))
    assert "input_shape" in _error(_spec(*FLAT_HEAD, input_shape=[1, 28]))
    assert "num_classes" in _error(_spec(*FLAT_HEAD, num_classes=1))
    assert "layers" in _error(_spec())
    assert "layers" in _error(_spec(*([{"type": "dropout", "p": 0.1}] * 64), *FLAT_HEAD))


def test_unknown_layer_type_lists_the_allowed_types() -> None:
    msg = _error(_spec({"type": "lambda", "code": "import os"}, *FLAT_HEAD))
    assert "lambda" in msg and "conv2d" in msg and "linear" in msg


def test_empty_feature_map_names_the_layer() -> None:
    msg = _error(
        _spec(
            {"type": "conv2d", "out_channels": 4, "kernel_size": 11},
            {"type": "maxpool2d", "kernel_size": 8},
            {"type": "conv2d", "out_channels": 4, "kernel_size": 5},
            *FLAT_HEAD,
        )
    )
    assert "layers[2] (conv2, conv2d)" in msg and "empty" in msg


def test_linear_on_a_map_and_conv_after_flatten_are_rejected() -> None:
    msg = _error(_spec({"type": "linear", "out_features": 10}))
    assert "layers[0] (fc1, linear)" in msg and "flatten" in msg
    msg = _error(_spec({"type": "flatten"}, CONV, {"type": "linear", "out_features": 10}))
    assert "layers[1] (conv1, conv2d)" in msg


def test_final_layer_must_output_num_classes() -> None:
    msg = _error(_spec({"type": "flatten"}, {"type": "linear", "out_features": 9}))
    assert "layers[1] (fc1, linear)" in msg and "num_classes = 10" in msg
    msg = _error(
        _spec({"type": "flatten"}, {"type": "linear", "out_features": 10}, {"type": "dropout", "p": 0.5})
    )
    assert "layers[2]" in msg and "last layer" in msg


def test_duplicate_and_clashing_names() -> None:
    dup = _spec(
        {"type": "flatten"},
        {"type": "linear", "name": "head", "out_features": 10},
        {"type": "linear", "name": "head", "out_features": 10},
    )
    assert "'head' is already used by layers[1]" in _error(dup)
    clash = _spec({"type": "flatten"}, {"type": "linear", "name": "fc2", "out_features": 10}, FLAT_HEAD[1])
    assert "default name 'fc2'" in _error(clash)
    assert "reserved" in _error(
        _spec({"type": "flatten"}, {"type": "linear", "name": "training", "out_features": 10})
    )


def test_parameter_budget() -> None:
    msg = _error(
        _spec(
            {"type": "flatten"},
            {"type": "linear", "out_features": 65536},
            {"type": "linear", "out_features": 1000},
            num_classes=1000,
        )
    )
    assert "64,000,000" in msg


def test_validation_does_not_mutate_the_input() -> None:
    data = _spec(CONV, *FLAT_HEAD)
    before = copy.deepcopy(data)
    ModelSpec.model_validate(data)
    assert data == before
