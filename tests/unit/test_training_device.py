"""training.device: "auto" trains on CUDA when the worker has it, "cpu" always on the CPU, "cuda" only on a GPU
worker (a CPU-only worker never takes such a run, and a CPU-only deployment refuses it with 422)."""

from __future__ import annotations

import pytest
import torch
from fastapi.testclient import TestClient

from netlapse.core.modelspec import ModelRef
from netlapse.core.schemas import RunRecord, TrainingConfig
from netlapse.trainer.training import resolve_device
from netlapse.trainer.worker import can_run_here, queue_for


def run(device: str) -> RunRecord:
    return RunRecord(
        id="device000001",
        name="d",
        model=ModelRef.model_validate({"preset": "tiny-cnn"}).resolve(),
        dataset="synthetic",
        training=TrainingConfig(device=device),  # type: ignore[arg-type]
    )


def test_device_resolution_on_this_machine() -> None:
    assert resolve_device("cpu") == torch.device("cpu")
    want = "cuda" if torch.cuda.is_available() else "cpu"
    assert resolve_device("auto").type == want
    if torch.cuda.is_available():
        assert resolve_device("cuda").type == "cuda"
        assert can_run_here(run("cuda"))
    else:
        with pytest.raises(
            RuntimeError, match="asks for training.device 'cuda' but this trainer has no CUDA"
        ):
            resolve_device("cuda")
        assert not can_run_here(run("cuda"))
    assert can_run_here(run("auto")) and can_run_here(run("cpu"))


def test_cuda_runs_are_woken_on_the_gpu_queue() -> None:
    assert queue_for(run("cuda")) == "train-gpu"
    assert queue_for(run("auto")) == queue_for(run("cpu")) == "train"


def test_unknown_device_is_refused() -> None:
    with pytest.raises(ValueError, match="device"):
        TrainingConfig(device="tpu")  # type: ignore[arg-type]


def test_a_cpu_only_deployment_answers_422_for_cuda(
    monkeypatch: pytest.MonkeyPatch, tmp_path: object
) -> None:
    from netlapse.api.main import app
    from netlapse.core.settings import Settings, get_settings

    app.dependency_overrides[get_settings] = lambda: Settings(data_dir=tmp_path, cuda_trainers=False)  # type: ignore[arg-type]
    try:
        with TestClient(app, base_url="http://127.0.0.1") as c:
            r = c.post(
                "/api/runs",
                json={
                    "model": {"preset": "tiny-cnn"},
                    "dataset": "synthetic",
                    "training": {"device": "cuda"},
                },
            )
    finally:
        app.dependency_overrides.clear()
    assert r.status_code == 422, r.text
    assert "no GPU trainers" in r.text and "device" in r.text
