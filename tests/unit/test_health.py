"""Training-health diagnostics on a tape written here: every number against plain numpy on the same states, and a
filter killed at init (bias −100) is flagged frozen and dead while the healthy ones are not."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from netlapse.analyzer import activations as act
from netlapse.analyzer.health import (
    DEAD_UNITS,
    HEALTH,
    DeadUnitsRequest,
    HealthRequest,
    update_semantics,
    window_bounds,
)
from netlapse.analyzer.registry import Context, ensure
from netlapse.core.schemas import TrainingConfig
from netlapse.core.settings import Settings
from netlapse.core.store import LocalStore
from tests.crafted_runs import DEAD_FILTER, write_dead_filter_run


@pytest.fixture
def store(tmp_path: Path) -> LocalStore:
    act.clear_caches()
    return LocalStore(tmp_path / "store")


def test_health_equals_numpy_and_flags_the_frozen_filter(store: LocalStore) -> None:
    states = write_dead_filter_run(store, "deadrun01", steps=6)
    ctx = Context(store, Settings())
    h = ensure(HEALTH, ctx, HealthRequest(run_id="deadrun01", windows=3, top_k=2)).meta
    assert h["steps"] == list(range(7))
    names = [t["name"] for t in h["tensors"]]
    assert names == list(states[0])
    for ti, n in enumerate(names):
        w = [s[n].numpy().astype(np.float64).reshape(-1) for s in states]
        norms = [np.sqrt((v * v).sum()) for v in w]
        assert h["norm"][ti] == pytest.approx(norms, rel=1e-12)
        assert h["update_ratio"][ti][0] is None and h["update_norm"][ti][0] is None
        for i in range(1, 7):
            d = (states[i][n] - states[i - 1][n]).numpy().astype(np.float64).reshape(-1)
            assert h["update_norm"][ti][i] == pytest.approx(np.sqrt((d * d).sum()), rel=1e-12, abs=0)
            assert h["update_ratio"][ti][i] == pytest.approx(np.sqrt((d * d).sum()) / norms[i - 1], rel=1e-12)
            flips = float(np.mean(np.sign(states[i][n].numpy()) != np.sign(states[0][n].numpy())))
            assert h["sign_flip_fraction"][ti][i] == flips
    conv1 = next(u for u in h["units"] if u["layer"] == "conv1")
    assert conv1["kind"] == "conv" and conv1["units"] == 4 and conv1["bias"] == "conv1.bias"
    assert conv1["frozen"] == [{"unit": DEAD_FILTER, "since": 0}]  # the dead filter, and no healthy one
    assert conv1["last_change"][DEAD_FILTER] is None and all(
        conv1["last_change"][u] == 6 for u in range(4) if u != DEAD_FILTER
    )
    assert window_bounds(7, 3) == [0, 2, 4, 6]
    assert [(w["from"], w["to"]) for w in h["top_moved"]] == [(0, 2), (2, 4), (4, 6)]
    for win in h["top_moved"]:
        for lay in win["layers"]:
            d = (
                (states[win["to"]][lay["weight"]] - states[win["from"]][lay["weight"]])
                .numpy()
                .astype(np.float64)
            )
            l2 = np.sqrt((d.reshape(d.shape[0], -1) ** 2).sum(1))
            assert lay["units"] == [int(u) for u in np.argsort(-l2, kind="stable")[:2]]
            assert lay["l2"] == pytest.approx(sorted(l2, reverse=True)[:2], rel=1e-12)
            if lay["layer"] == "conv1":
                assert DEAD_FILTER not in lay["units"]
    assert h["updates"]["update_is_scaled_gradient"] is True and "-lr * gradient" in h["updates"]["note"]


def test_dead_units_flags_only_the_dead_filter(store: LocalStore) -> None:
    write_dead_filter_run(store, "deadrun02", steps=3)
    r = ensure(DEAD_UNITS, Context(store, Settings()), DeadUnitsRequest(run_id="deadrun02", step=3)).meta
    assert r["step"] == 3 and r["evaluated"] == 256 and r["split"] == "test"
    conv1 = next(lay for lay in r["layers"] if lay["layer"] == "conv1")
    assert conv1["dead"] == [DEAD_FILTER]
    assert conv1["nonzero_fraction"][DEAD_FILTER] == 0.0 and conv1["max_abs"][DEAD_FILTER] == 0.0
    assert all(conv1["nonzero_fraction"][u] > 0 for u in range(4) if u != DEAD_FILTER)
    fc1 = next(lay for lay in r["layers"] if lay["layer"] == "fc1")
    assert fc1["activation"] == "none" and fc1["dead"] == []


@pytest.mark.parametrize(
    ("training", "every", "scaled"),
    [
        ({"optimizer": "sgd"}, 1, True),
        ({"optimizer": "sgd"}, 4, False),
        ({"optimizer": "sgd", "momentum": 0.9}, 1, False),
        ({"optimizer": "sgd", "weight_decay": 1e-4}, 1, False),
        ({"optimizer": "adam", "lr": 1e-3}, 1, False),
        ({"optimizer": "adadelta", "lr": 1.0}, 1, False),
    ],
)
def test_an_update_is_called_a_gradient_only_for_plain_sgd(training: dict, every: int, scaled: bool) -> None:
    u = update_semantics(TrainingConfig(**training), every)
    assert u["update_is_scaled_gradient"] is scaled
    if not scaled:
        assert "not" in u["note"] and "-lr * gradient" not in u["note"]


def test_sdk_runs_get_health_from_the_tape_and_a_clear_422_for_dead_units(store: LocalStore) -> None:
    from netlapse.analyzer.registry import AnalysisError
    from netlapse.core.runs import RunRepository

    write_dead_filter_run(store, "sdkrun001", steps=2)
    repo = RunRepository(store)
    rec = repo.get("sdkrun001")
    repo.save(rec.model_copy(update={"source": "sdk", "model": None, "dataset": None, "training": None}))
    h = ensure(HEALTH, Context(store, Settings()), HealthRequest(run_id="sdkrun001")).meta
    assert h["steps"] == [0, 1, 2] and h["updates"]["update_is_scaled_gradient"] is False
    assert h["updates"]["optimizer"] is None and "not read as a gradient" in h["updates"]["note"]
    with pytest.raises(AnalysisError, match="recorded by the SDK"):
        ensure(DEAD_UNITS, Context(store, Settings()), DeadUnitsRequest(run_id="sdkrun001", step=2))
