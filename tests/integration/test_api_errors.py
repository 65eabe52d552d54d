"""Bad input gets a 4xx naming the field and what is allowed; never a 500, never a silent default."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.integration.helpers import create_run, wait_terminal

GOOD: dict[str, Any] = {
    "name": "bad",
    "model": {"preset": "tiny-cnn"},
    "dataset": "synthetic",
    "training": {"epochs": 1, "batch_size": 64, "optimizer": "sgd", "lr": 0.01, "seed": 0},
}


def body(**patch: Any) -> dict[str, Any]:
    b = {k: (dict(v) if isinstance(v, dict) else v) for k, v in GOOD.items()}
    for path, value in patch.items():
        *parents, leaf = path.split("__")
        node = b
        for p in parents:
            node = node[p]
        node[leaf] = value
    return b


def detail_text(r: httpx.Response) -> str:
    return str(r.json()["detail"])


@pytest.mark.parametrize(
    ("patch", "field", "words"),
    [
        ({"model": {"preset": "nope"}}, "model", "paper-cnn"),
        ({"dataset": "imagenet"}, "dataset", "synthetic"),
        ({"training__lr": 0}, "lr", "greater than 0"),
        ({"training__lr": -1}, "lr", "greater than 0"),
        ({"training__batch_size": 0}, "batch_size", "greater than or equal to 1"),
        ({"training__epochs": 100000}, "epochs", "at most"),
        ({"training__optimizer": "lbfgs"}, "optimizer", "sgd"),
        ({"training__momentum": 1.5}, "momentum", "less than 1"),
        ({"training__lrate": 0.1}, "lrate", "Extra inputs"),
        ({"capture": {"every": 0}}, "every", "greater than or equal to 1"),
        ({"model": {"preset": "paper-cnn"}, "dataset": "synthetic", "training__epochs": 1}, None, None),
    ],
)
def test_create_run_rejects_bad_input(
    api: httpx.Client, patch: dict, field: str | None, words: str | None
) -> None:
    r = api.post("/api/runs", json=body(**patch))
    if field is None:  # paper-cnn on synthetic is valid (same input shape): the control case
        assert r.status_code == 201, r.text
        api.post(f"/api/runs/{r.json()['id']}/cancel", json={})
        return
    assert r.status_code == 422, r.text
    text = detail_text(r)
    assert field in text and words in text, text


def test_model_that_does_not_fit_the_dataset(api: httpx.Client) -> None:
    spec = {
        "input_shape": [3, 32, 32],
        "num_classes": 10,
        "layers": [{"type": "flatten"}, {"type": "linear", "out_features": 10}],
    }
    r = api.post("/api/runs", json=body(model=spec))
    assert r.status_code == 422 and "input" in detail_text(r)


def test_malformed_json_is_422(api: httpx.Client) -> None:
    r = api.post("/api/runs", content=b"{not json", headers={"content-type": "application/json"})
    assert r.status_code == 422 and "JSON" in detail_text(r)


def test_unknown_run_is_404(api: httpx.Client) -> None:
    for path in ("/api/runs/nosuchrun1", "/api/runs/nosuchrun1/steps", "/api/runs/nosuchrun1/metrics"):
        r = api.get(path)
        assert r.status_code == 404 and "not found" in detail_text(r), path


@pytest.fixture(scope="module")
def finished(api: httpx.Client) -> dict:
    run = create_run(api, training={"epochs": 1, "batch_size": 256, "lr": 0.01, "seed": 3})
    return wait_terminal(api, run["id"])


def test_tensor_and_diff_errors(api: httpx.Client, finished: dict) -> None:
    rid = finished["id"]
    r = api.get(f"/api/runs/{rid}/tensors/conv9.weight", params={"step": 0})
    assert r.status_code == 404 and "conv1.weight" in detail_text(r)
    r = api.get(f"/api/runs/{rid}/tensors/conv1.weight", params={"step": 99})
    assert r.status_code == 404 and "0..4" in detail_text(r)
    r = api.get(f"/api/runs/{rid}/tensors/conv1.weight", params={"step": -1})
    assert r.status_code == 422
    r = api.get(f"/api/runs/{rid}/tensors/conv1.weight")
    assert r.status_code == 422 and "step" in detail_text(r)
    r = api.get(f"/api/runs/{rid}/diff/conv1.weight", params={"from": 3, "to": 1})
    assert r.status_code == 422 and "from" in detail_text(r)
    r = api.get(f"/api/runs/{rid}/diff/conv1.weight", params={"from": 0, "to": 50})
    assert r.status_code == 404 and "to=50" in detail_text(r)
    r = api.get(f"/api/runs/{rid}/diff/nope", params={"from": 0, "to": 1})
    assert r.status_code == 404


def test_delete_removes_the_run(api: httpx.Client, finished: dict) -> None:
    run = create_run(api, training={"epochs": 1, "batch_size": 512, "lr": 0.01, "seed": 4})
    run = wait_terminal(api, run["id"])
    assert api.delete(f"/api/runs/{run['id']}").status_code == 204
    assert api.get(f"/api/runs/{run['id']}").status_code == 404
    assert api.get(f"/api/runs/{run['id']}/steps").status_code == 404


def test_health_and_catalog(api: httpx.Client) -> None:
    h = api.get("/api/health").json()
    assert h["status"] == "ok" and h["redis"] == "ok" and h["store"] == "ok"
    presets = {p["name"]: p for p in api.get("/api/presets").json()["presets"]}
    assert presets["paper-cnn"]["params"] == 1_199_882
    names = {d["name"] for d in api.get("/api/datasets").json()["datasets"]}
    assert {"mnist-10k", "synthetic"} <= names
