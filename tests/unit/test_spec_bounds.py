"""Specs that would exhaust a trainer are refused before they run: parameters, activation elements per sample
and FLOPs per training step, each bounded by a setting the server reports at GET /api/limits."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from netlapse.api.main import create_app
from netlapse.core.settings import get_settings


@pytest.fixture
def client(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[TestClient]:
    monkeypatch.setenv("NETLAPSE_STORE_URL", f"file://{tmp_path / 'store'}")
    monkeypatch.setenv("NETLAPSE_DATA_DIR", str(tmp_path))
    monkeypatch.setenv(
        "NETLAPSE_REDIS_URL", "redis://127.0.0.1:1/0"
    )  # no broker: an accepted run stays queued
    get_settings.cache_clear()
    with TestClient(create_app(), base_url="http://127.0.0.1") as c:
        yield c
    get_settings.cache_clear()


def run(
    layers: list[dict[str, Any]], batch_size: int = 32, input_shape: tuple[int, ...] = (1, 28, 28)
) -> dict:
    return {
        "name": "bounds",
        "model": {"input_shape": list(input_shape), "num_classes": 10, "layers": layers},
        "dataset": "synthetic",
        "training": {"epochs": 1, "batch_size": batch_size, "optimizer": "sgd", "lr": 0.01},
        "capture": {
            "every": 100_000
        },  # step 0 and the last: the capture budget is tests/unit/test_user_bounds.py's
    }


def conv(c: int, k: int = 1, p: int = 0, act: str = "none") -> dict[str, Any]:
    return {"type": "conv2d", "out_channels": c, "kernel_size": k, "padding": p, "activation": act}


FLAT_OUT = [{"type": "flatten"}, {"type": "linear", "out_features": 10}]


def refused(client: TestClient, body: dict[str, Any]) -> dict[str, Any]:
    start = time.monotonic()
    r = client.post("/api/runs", json=body)
    assert time.monotonic() - start < 1.0, "a spec bomb must be refused within a second"
    assert r.status_code == 422, r.text
    return r.json()["detail"][0]


def test_the_issues_spec_bombs_are_422_naming_the_layer_and_the_bound(client: TestClient) -> None:
    # 60 x conv2d 256, kernel 1, padding 5: the map grows 10 px per layer (~8 GiB of activations per sample)
    growing = run([conv(256, 1, 5) for _ in range(60)] + [{"type": "maxpool2d", "kernel_size": 8}, *FLAT_OUT])
    err = refused(client, growing)
    assert err["ctx"]["bound"] == "NETLAPSE_MAX_ACTIVATION_ELEMENTS"
    assert err["loc"][:3] == ["body", "model", "layers"] and isinstance(err["loc"][3], int)
    assert f"layers[{err['loc'][3]}] (conv" in err["msg"] and "elements per sample" in err["msg"]
    # 11 x conv2d 2048, kernel 1 at batch 4096: ~270 GiB and ~800 TFLOP per step
    wide = run([conv(2048) for _ in range(11)] + [{"type": "maxpool2d", "kernel_size": 8}, *FLAT_OUT], 4096)
    err = refused(client, wide)
    assert err["ctx"]["bound"] in ("NETLAPSE_MAX_ACTIVATION_ELEMENTS", "NETLAPSE_MAX_STEP_FLOPS")
    assert "layers[" in err["msg"]
    assert client.get("/api/runs").json()["total"] == 0  # nothing was queued


def test_activation_elements_per_sample_at_the_bound(client: TestClient) -> None:
    limit = client.get("/api/limits").json()["max_activation_elements"]
    # input [4, 512, 512] (1,048,576 elements) → conv c 1x1 (c·262,144) → maxpool 8 (c·4,096) → flatten → fc 10
    per_channel = 512 * 512 + 64 * 64
    fixed = 4 * 512 * 512 + 10
    c = (limit - fixed) // per_channel
    assert 1 <= c < 2048, "the default bound is reachable by this spec"

    def spec(ch: int) -> dict[str, Any]:
        return run([conv(ch), {"type": "maxpool2d", "kernel_size": 8}, *FLAT_OUT], 1, (4, 512, 512))

    assert fixed + c * per_channel <= limit < fixed + (c + 1) * per_channel
    under = client.post("/api/runs", json=spec(c))
    assert under.status_code == 422 and under.json()["detail"][0]["loc"] == [
        "body",
        "model",
    ]  # passes the bound;
    assert (
        "dataset 'synthetic' has input" in under.json()["detail"][0]["msg"]
    )  # refused only for its input shape
    err = refused(client, spec(c + 1))
    assert err["ctx"]["bound"] == "NETLAPSE_MAX_ACTIVATION_ELEMENTS"
    assert (
        err["loc"] == ["body", "model", "layers", 1] and "layers[1] (pool1, maxpool2d)" in err["msg"]
    )  # crosses here
    assert f"at most {limit:,}" in err["msg"]


def test_flops_per_training_step_at_the_bound(client: TestClient) -> None:
    limit = client.get("/api/limits").json()["max_step_flops"]
    # conv 256 3x3 pad 1 then conv 1024 3x3 pad 1 on 28x28, fc 10 over 1024·784: 2 FLOPs per multiply-add
    forward = 2 * 1 * 9 * 256 * 784 + 2 * 256 * 9 * 1024 * 784 + 2 * 1024 * 784 * 10
    step = 3 * forward  # forward + backward, per sample
    batch = int(limit // step)
    assert 1 <= batch < 4096

    def spec(b: int) -> dict[str, Any]:
        return run([conv(256, 3, 1), conv(1024, 3, 1), *FLAT_OUT], b)

    assert client.post("/api/runs", json=spec(batch)).status_code == 201
    err = refused(client, spec(batch + 1))
    assert err["ctx"]["bound"] == "NETLAPSE_MAX_STEP_FLOPS" and f"batch_size {batch + 1}" in err["msg"]
    assert err["loc"] == ["body", "model", "layers", 3] and "layers[1] (conv2)" in err["msg"]  # the heaviest


def test_parameter_count_at_the_bound(client: TestClient) -> None:
    limit = client.get("/api/limits").json()["max_params"]

    def params(n: int) -> int:  # flatten 784 → fc n → fc n → fc 10, weights and biases
        return 784 * n + n + n * n + n + n * 10 + 10

    n = max(k for k in range(1, 65537) if params(k) <= limit)

    def spec(k: int) -> dict[str, Any]:
        return run(
            [
                {"type": "flatten"},
                {"type": "linear", "out_features": k},
                {"type": "linear", "out_features": k},
                {"type": "linear", "out_features": 10},
            ],
            1,
        )

    assert client.post("/api/runs", json=spec(n)).status_code == 201
    r = client.post("/api/runs", json=spec(n + 1))
    assert r.status_code == 422 and f"at most {limit:,}" in r.text
