"""The analysis registry on its own: one cache key rule, results complete only once their JSON is written, and one
error mapping on the worker side (a request it cannot answer comes back as meta.error with a status; a bug raises)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from netlapse.analyzer.analyses import DIFF, DiffRequest
from netlapse.analyzer.registry import (
    Analysis,
    AnalysisRequest,
    Context,
    Result,
    artifact_key,
    complete,
    ensure,
    execute,
    failure_of,
    registry,
)
from netlapse.core.results import npy_load, request_key
from netlapse.core.runs import RunNotFound
from netlapse.core.settings import Settings
from netlapse.core.store import LocalStore, ObjectNotFound
from tests.crafted_runs import write_dead_filter_run


@pytest.fixture
def store(tmp_path: Path) -> LocalStore:
    return LocalStore(tmp_path / "store")


def test_every_analysis_is_registered_once_with_a_route_or_not() -> None:
    names = registry()
    for n in ("diff", "scatter", "trajectory", "activations", "activations_compare", "featuremaps"):
        assert n in names
    for n in (
        "compare_diff",
        "compare_metrics",
        "compare_activations",
        "compare_scatter",
        "health",
        "health_dead",
    ):
        assert n in names
    assert all(a.task_name == f"netlapse.analyzer.{n}" for n, a in names.items())
    paths = [a.path for a in names.values() if a.path]
    assert len(paths) == len(set((a.method, a.path) for a in names.values() if a.path))


def test_the_cache_key_is_the_request_without_its_run(store: LocalStore) -> None:
    r = DiffRequest(run_id="run0001", name="conv1.weight", from_step=0, to_step=3)
    assert DIFF.key(r) == request_key("run0001", "diff", {"name": "conv1.weight", "from": 0, "to": 3})
    assert DIFF.key(r).startswith("runs/run0001/analysis/diff/")
    assert DIFF.key(r) != DIFF.key(r.model_copy(update={"to_step": 4}))


def test_a_result_is_complete_only_with_its_json_and_is_computed_once(store: LocalStore) -> None:
    states = write_dead_filter_run(store, "run0002", steps=3)
    ctx = Context(store, Settings())
    r = DiffRequest(run_id="run0002", name="fc1.weight", from_step=1, to_step=3)
    key = DIFF.key(r)
    assert not complete(store, key)
    first = ensure(DIFF, ctx, r)
    assert first.cached is False and complete(store, key)
    want = (states[3]["fc1.weight"] - states[1]["fc1.weight"]).numpy()
    assert np.array_equal(npy_load(store.get(artifact_key(key, ""))), want)
    assert ensure(DIFF, ctx, r).cached is True
    store.delete_prefix(key + ".json")  # arrays without their JSON: not a result, so it is computed again
    assert ensure(DIFF, ctx, r).cached is False


def test_the_worker_answers_failures_with_a_status_and_raises_on_bugs(store: LocalStore) -> None:
    ctx = Context(store, Settings())
    gone = execute(DIFF, ctx, {"run_id": "nosuchrun1", "name": "w", "from_step": 0, "to_step": 1})
    assert gone["key"] == "" and gone["meta"]["status"] == 404 and "nosuchrun1" in gone["meta"]["error"]
    bad = execute(DIFF, ctx, {"run_id": "nosuchrun1", "name": "w", "from_step": -1})
    assert bad["meta"]["status"] == 422
    write_dead_filter_run(store, "run0003", steps=1)
    step = execute(DIFF, ctx, {"run_id": "run0003", "name": "fc1.weight", "from_step": 0, "to_step": 7})
    assert step["meta"]["status"] == 404 and "7" in step["meta"]["error"]

    class BoomRequest(AnalysisRequest):
        run_id: str

    def boom(_ctx: Context, _r: BoomRequest) -> Result:
        raise ZeroDivisionError("a bug")

    with pytest.raises(ZeroDivisionError):
        execute(Analysis(name="boom", request=BoomRequest, compute=boom, summary="."), ctx, {"run_id": "x"})


def test_one_mapping_from_exceptions_to_statuses() -> None:
    assert failure_of(RunNotFound("r1")).status == 404  # type: ignore[union-attr]
    gone = failure_of(ObjectNotFound("runs/r1/tape/manifest.json"))
    assert gone is not None and gone.status == 404 and "deleted" in gone.message
    assert failure_of(ValueError("a bug")) is None
