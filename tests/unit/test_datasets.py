"""Datasets: exact model inputs, deterministic splits, and errors that say what to do."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch

from netlapse.core.datasets import (
    DATASET_NAMES,
    MNIST10K_FILE,
    DatasetUnavailable,
    InvalidSample,
    UnknownDataset,
    clear_cache,
    compatibility_error,
    list_datasets,
    load_dataset,
    make_synthetic,
    sample,
)
from netlapse.core.modelspec import PRESETS, build_model
from netlapse.core.settings import Settings, get_settings


@pytest.fixture
def empty_settings(tmp_path: Path) -> Settings:
    return Settings(data_dir=tmp_path)


def _mnist_settings() -> Settings:
    """Settings whose data dir holds mnist-10k.npz, or skip (fail under NETLAPSE_REQUIRE_MNIST=1)."""
    settings = get_settings()
    path = settings.datasets_dir / MNIST10K_FILE
    if not path.is_file():
        hint = f"{path} missing; run `python -m netlapse.core.datasets fetch`"
        if os.environ.get("NETLAPSE_REQUIRE_MNIST") == "1":
            pytest.fail(f"NETLAPSE_REQUIRE_MNIST=1 but {hint}")
        pytest.skip(hint)  # a machine that never ran the fetch; make test / CI set NETLAPSE_REQUIRE_MNIST=1
    return settings


def test_synthetic_is_deterministic_and_in_range(empty_settings: Settings) -> None:
    ds = load_dataset("synthetic", empty_settings)
    assert ds.train_x.shape == (1024, 1, 28, 28) and ds.test_x.shape == (256, 1, 28, 28)
    assert ds.train_x.dtype == torch.float32 and ds.train_y.dtype == torch.int64
    assert 0.0 <= ds.train_x.min() and ds.train_x.max() <= 1.0
    assert (ds.train_x.sum(dim=(1, 2, 3)) > 0).all(), "Eq. 1 divides by the pixel sum"
    assert torch.bincount(ds.train_y).tolist() == [103] * 4 + [102] * 6
    x1, y1 = make_synthetic(64, seed=5)
    x2, y2 = make_synthetic(64, seed=5)
    assert np.array_equal(x1, x2) and np.array_equal(y1, y2)
    assert not np.array_equal(make_synthetic(64, seed=6)[0], x1)
    clear_cache()
    again = load_dataset("synthetic", empty_settings)
    assert again is not ds and torch.equal(again.train_x, ds.train_x) and torch.equal(again.test_y, ds.test_y)


def test_synthetic_is_learnable_by_tiny_cnn_in_a_few_dozen_steps(empty_settings: Settings) -> None:
    ds = load_dataset("synthetic", empty_settings)
    torch.manual_seed(0)
    model = build_model(PRESETS["tiny-cnn"].spec)
    opt = torch.optim.Adam(model.parameters(), lr=0.01)
    g = torch.Generator().manual_seed(0)
    for _ in range(48):
        idx = torch.randint(0, len(ds.train_y), (64,), generator=g)
        loss = torch.nn.functional.cross_entropy(model(ds.train_x[idx]), ds.train_y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    with torch.no_grad():
        accuracy = (model(ds.test_x).argmax(1) == ds.test_y).float().mean().item()
    assert accuracy > 0.8


def test_unknown_dataset_lists_the_known_ones(empty_settings: Settings) -> None:
    with pytest.raises(UnknownDataset) as info:
        load_dataset("imagenet", empty_settings)
    assert isinstance(info.value, KeyError)
    for name in DATASET_NAMES:
        assert name in str(info.value)


def test_missing_files_are_unavailable_with_a_fetch_hint(empty_settings: Settings) -> None:
    infos = {i.name: i for i in list_datasets(empty_settings)}
    assert set(infos) == {"mnist-10k", "synthetic", "mnist", "fashion-mnist", "cifar10"}
    assert infos["synthetic"].available and infos["synthetic"].reason is None
    for name in ("mnist-10k", "mnist", "fashion-mnist", "cifar10"):
        assert not infos[name].available
        assert f"fetch {name}" in (infos[name].reason or "")
    assert infos["cifar10"].input_shape == [3, 32, 32]
    with pytest.raises(DatasetUnavailable, match="netlapse.core.datasets fetch"):
        load_dataset("mnist-10k", empty_settings)


def test_sample_returns_exact_inputs_and_clear_errors(empty_settings: Settings) -> None:
    ds = load_dataset("synthetic", empty_settings)
    x, y = sample("synthetic", "test", [0, 255, 7], empty_settings)
    assert torch.equal(x, ds.test_x[[0, 255, 7]]) and torch.equal(y, ds.test_y[[0, 255, 7]])
    with pytest.raises(InvalidSample, match=r"0\.\.255"):
        sample("synthetic", "test", [256], empty_settings)
    with pytest.raises(InvalidSample, match=r"0\.\.1023"):
        sample("synthetic", "train", [-1], empty_settings)
    with pytest.raises(InvalidSample, match="train, test"):
        sample("synthetic", "validation", [0], empty_settings)
    with pytest.raises(InvalidSample, match="no indices"):
        sample("synthetic", "train", [], empty_settings)


def test_compatibility_error_names_the_mismatch(empty_settings: Settings) -> None:
    infos = {i.name: i for i in list_datasets(empty_settings)}
    spec = PRESETS["paper-cnn"].spec
    assert compatibility_error(infos["mnist-10k"], spec.input_shape, spec.num_classes) is None
    assert "[3, 32, 32]" in (compatibility_error(infos["cifar10"], spec.input_shape, spec.num_classes) or "")
    assert "num_classes 5" in (compatibility_error(infos["synthetic"], spec.input_shape, 5) or "")


def test_mnist10k_loads_with_the_fixed_split() -> None:
    settings = _mnist_settings()
    ds = load_dataset("mnist-10k", settings)
    assert ds.info.available and ds.info.train_size == 8_000 and ds.info.test_size == 2_000
    assert ds.train_x.shape == (8_000, 1, 28, 28) and ds.test_x.shape == (2_000, 1, 28, 28)
    assert ds.train_x.dtype == torch.float32 and ds.test_y.dtype == torch.int64
    assert set(ds.train_y.tolist()) == set(range(10)) == set(ds.test_y.tolist())
    assert ds.train_x.min() == 0.0 and ds.train_x.max() == 1.0
    assert (ds.test_x.sum(dim=(1, 2, 3)) > 0).all()
    # Inputs are exactly pixel / 255 of 256 grey levels, no mean subtraction.
    levels = torch.unique(ds.train_x * 255)
    assert len(levels) == 256 and torch.allclose(levels, levels.round(), atol=1e-3)

    with np.load(settings.datasets_dir / MNIST10K_FILE) as z:
        train_src, test_src, train_labels = z["train_source_index"], z["test_source_index"], z["train_labels"]
    perm = np.random.default_rng(0).permutation(10_000)
    assert np.array_equal(train_src, perm[:8_000]) and np.array_equal(test_src, perm[8_000:])
    # The package stores digits grouped by label (1001 zeros, then 1127 ones, …): the source index gives the label.
    per_label = [1001, 1127, 991, 1032, 980, 863, 1014, 1070, 944, 978]
    expected = np.searchsorted(np.cumsum(per_label), train_src, side="right")
    assert np.array_equal(train_labels, expected) and np.array_equal(ds.train_y.numpy(), expected)
    x, y = sample("mnist-10k", "test", [0, 1999], settings)
    assert torch.equal(x, ds.test_x[[0, 1999]]) and torch.equal(y, ds.test_y[[0, 1999]])
