"""The SDK without a server: offline runs, step counting, metrics, failures, retries, and a light import."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import torch
from torch import nn

import netlapse
from netlapse.core.tape import TapeOptions, TapeReader
from netlapse.sdk import ServerUnreachable
from netlapse.sdk.offline import RunsDirStore
from netlapse.sdk.sink import OnlineSink
from netlapse.sdk.transport import IngestClient, IngestRejected

REPO = Path(__file__).resolve().parents[2]


def model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(1, 3, 3, padding=1), nn.BatchNorm2d(3), nn.ReLU(), nn.Flatten(), nn.Linear(48, 2)
    )


def float_state(m: nn.Module) -> dict[str, np.ndarray]:
    return {k: v.detach().numpy().copy() for k, v in m.state_dict().items() if v.is_floating_point()}


def batch(gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.randn(8, 1, 4, 4, generator=gen), torch.randint(0, 2, (8,), generator=gen)


def tape(dir_: Path, run_id: str) -> TapeReader:
    return TapeReader(RunsDirStore(dir_), f"runs/{run_id}/tape/")  # type: ignore[arg-type]


def record(dir_: Path, run_id: str) -> dict[str, Any]:
    return json.loads((dir_ / run_id / "run.json").read_text())


def test_offline_run_is_bit_exact_and_counts_only_real_optimizer_steps(tmp_path: Path) -> None:
    """GradScaler skips a step (no optimizer.step, no snapshot); two micro-batches make one step."""
    m = model()
    opt = torch.optim.Adam(
        [{"params": m[0].parameters()}, {"params": m[4].parameters(), "lr": 1e-3}], lr=1e-2
    )
    scaler = torch.amp.GradScaler("cpu", init_scale=8.0)
    gen = torch.Generator().manual_seed(1)
    run = netlapse.init(name="amp", config={"lr": 1e-2}, dir=tmp_path)
    run.watch(m, opt, buffers=True, options=TapeOptions(segment_max_steps=3))
    want = {0: float_state(m)}
    for it in range(7):
        for _ in range(2):
            x, y = batch(gen)
            scaler.scale(nn.functional.cross_entropy(m(x), y) / 2).backward()
        if it == 2:
            m[0].weight.grad[0, 0, 0, 0] = float("inf")
        scale = scaler.get_scale()
        scaler.step(opt)
        scaler.update()
        opt.zero_grad()
        if scaler.get_scale() < scale:
            assert run.step == len(want) - 1  # the skipped step was not counted
            continue
        want[run.step] = float_state(m)
        run.log({"loss": 1.0 * it})
    run.finish()
    assert run.step == 6 and sorted(want) == list(range(7))
    r = tape(tmp_path, run.id)
    assert r.steps() == list(range(7)) and r.complete
    assert [t.name for t in r.tensors()] == list(want[0])  # module paths in model order, BN stats included
    for step, snap in want.items():
        for name, value in snap.items():
            assert r.read(name, step).tobytes() == value.tobytes(), (name, step)
    rec = record(tmp_path, run.id)
    assert rec["status"] == "succeeded" and rec["source"] == "sdk" and rec["sdk"]["offline"] is True
    assert rec["summary"]["steps_captured"] == 7 and rec["tape_complete"] is True
    metrics = json.loads((tmp_path / run.id / "metrics.json").read_text())
    assert [row["step"] for row in metrics["steps"]] == [1, 2, 3, 4, 5, 6]


def test_every_n_keeps_step_zero_and_the_last(tmp_path: Path) -> None:
    m = model()
    opt = torch.optim.SGD(m.parameters(), lr=0.1)
    gen = torch.Generator().manual_seed(2)
    run = netlapse.init(dir=tmp_path).watch(m, opt, every=3)
    for _ in range(7):
        x, y = batch(gen)
        opt.zero_grad()
        nn.functional.cross_entropy(m(x), y).backward()
        opt.step()
    last = float_state(m)
    run.finish()
    r = tape(tmp_path, run.id)
    assert r.steps() == [0, 3, 6, 7]
    assert [t.name for t in r.tensors()] == ["0.weight", "0.bias", "1.weight", "1.bias", "4.weight", "4.bias"]
    assert r.read("4.weight", 7).tobytes() == last["4.weight"].tobytes()


def test_context_manager_marks_the_run_failed_with_the_exception(tmp_path: Path) -> None:
    m = model()
    opt = torch.optim.SGD(m.parameters(), lr=0.1)
    with pytest.raises(ValueError, match="diverged"):
        with netlapse.init(name="boom", dir=tmp_path) as run:
            run.watch(m, opt)
            run.log({"loss": 3.5})
            raise ValueError("loss diverged")
    rec = record(tmp_path, run.id)
    assert rec["status"] == "failed" and rec["error"] == "ValueError: loss diverged"
    assert rec["tape_complete"] is False and tape(tmp_path, run.id).steps() == [0]  # step 0 stays readable


def test_log_merges_one_step_and_takes_numbers_only(tmp_path: Path) -> None:
    m = model()
    opt = torch.optim.SGD(m.parameters(), lr=0.1)
    run = netlapse.init(dir=tmp_path).watch(m, opt)
    run.log({"loss": torch.tensor(0.5)})
    run.log({"acc": np.float32(0.25), "nan": float("nan")})
    run.log({"val": 2}, step=10)
    with pytest.raises(TypeError, match="'name' is a str"):
        run.log({"name": "x"})
    with pytest.raises(ValueError, match="reserved"):
        run.log({"step": 1})
    run.finish()
    rows = json.loads((tmp_path / run.id / "metrics.json").read_text())["steps"]
    assert rows == [{"step": 0, "loss": 0.5, "acc": 0.25, "nan": None}, {"step": 10, "val": 2}]
    with pytest.raises(RuntimeError, match="finished"):
        run.log({"loss": 1.0})


def test_eval_data_is_checked_and_stored_as_npy(tmp_path: Path) -> None:
    run = netlapse.init(dir=tmp_path)
    with pytest.raises(ValueError, match="64 MiB"):
        run.eval_data(np.zeros((5000, 64, 64), np.float32), np.zeros(5000, np.int64))
    with pytest.raises(ValueError, match="labels"):
        run.eval_data(np.zeros((4, 2), np.float32), np.zeros((4, 1), np.int64))
    run.eval_data(torch.ones(4, 1, 2, 2), torch.tensor([0, 1, 0, 1]))
    run.finish()
    x = np.load(tmp_path / run.id / "sdk" / "eval_inputs.npy", allow_pickle=False)
    y = np.load(tmp_path / run.id / "sdk" / "eval_labels.npy", allow_pickle=False)
    assert x.shape == (4, 1, 2, 2) and y.tolist() == [0, 1, 0, 1] and y.dtype == np.int64
    assert record(tmp_path, run.id)["sdk"]["eval_data"] is True


def test_init_says_when_the_server_cannot_be_reached(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NETLAPSE_URL", raising=False)
    monkeypatch.delenv("NETLAPSE_SERVER", raising=False)
    with pytest.raises(ValueError, match="NETLAPSE_URL"):
        netlapse.init(name="x")
    with pytest.raises(
        ServerUnreachable, match=r"cannot reach the netlapse server at http://127.0.0.1:9.*dir="
    ):
        netlapse.init(name="x", server="http://127.0.0.1:9")


class FlakyServer:
    """An ingest server over httpx.MockTransport that fails the first attempts of every upload."""

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.seen: dict[str, int] = {}
        self.stored: list[str] = []
        self.lock = threading.Lock()

    def __call__(self, request: httpx.Request) -> httpx.Response:
        path = request.url.path
        with self.lock:
            n = self.seen[path] = self.seen.get(path, 0) + 1
        if path.endswith("/heartbeat"):
            return httpx.Response(200, json={"status": "running"})
        if n <= self.failures:
            if n % 2:
                raise httpx.ConnectError("connection refused")
            return httpx.Response(503, json={"detail": "busy"})
        if "/tape/" in path:
            assert request.headers["x-netlapse-sha256"]
            with self.lock:
                self.stored.append(path.split("/tape/", 1)[1])
        if path.endswith("/finish"):
            return httpx.Response(200, json={"status": "succeeded"})
        return httpx.Response(200, json={})


def test_uploads_are_retried_in_order_until_they_succeed() -> None:
    server = FlakyServer(failures=3)
    client = IngestClient(
        "http://server", http=httpx.Client(transport=httpx.MockTransport(server)), sleep=lambda s: None
    )
    sink = OnlineSink(client, {"id": "run00001"}, heartbeat_s=60)
    store = sink.tape_store()
    store.put("runs/run00001/tape/segments/000000000000-000000000001.seg", b"a" * 10)
    store.put_json("runs/run00001/tape/index/00000000.json", {"segment": {"key": "segments/x"}})
    store.put("runs/run00001/tape/segments/000000000002-000000000003.seg", b"b" * 10)
    store.put_json("runs/run00001/tape/manifest.json", {"complete": True})
    out = sink.finish("succeeded", None, {}, timeout=30)
    sink.close()
    assert out == {"status": "succeeded"} and sink.error is None
    assert server.stored == [
        "segments/000000000000-000000000001.seg",
        "index/00000000.json",
        "segments/000000000002-000000000003.seg",
        "manifest.json",
    ]
    assert client.retries == 5 * 3  # every request failed three times first


def test_a_refused_upload_stops_uploading_and_finish_says_why() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/heartbeat"):
            return httpx.Response(200, json={"status": "running"})
        if "/tape/" in request.url.path:
            return httpx.Response(409, json={"detail": "run run00002 is already failed"})
        return httpx.Response(200, json={"status": "failed"})

    client = IngestClient(
        "http://server", http=httpx.Client(transport=httpx.MockTransport(handler)), sleep=lambda s: None
    )
    sink = OnlineSink(client, {"id": "run00002"}, heartbeat_s=60)
    sink.tape_store().put("runs/run00002/tape/segments/000000000000-000000000001.seg", b"x")
    with pytest.raises(Exception, match="already failed"):
        sink.finish("succeeded", None, {}, timeout=30)
    sink.close()
    assert isinstance(client, IngestClient) and "409" in (sink.error or "")


def test_a_full_upload_queue_makes_the_writer_wait_nothing_dropped() -> None:
    gate = threading.Event()
    got: list[int] = []

    def handler(request: httpx.Request) -> httpx.Response:
        if "/tape/segments/" in request.url.path:
            gate.wait(10)
            got.append(len(request.content))
        return httpx.Response(200, json={"status": "running"})

    client = IngestClient("http://server", http=httpx.Client(transport=httpx.MockTransport(handler)))
    sink = OnlineSink(client, {"id": "run00003"}, heartbeat_s=60, max_pending_bytes=100)
    store = sink.tape_store()
    store.put("runs/run00003/tape/segments/000000000000-000000000000.seg", b"1" * 80)
    done = threading.Event()

    def second() -> None:
        store.put("runs/run00003/tape/segments/000000000001-000000000001.seg", b"2" * 80)
        done.set()

    t = threading.Thread(target=second)
    t.start()
    assert not done.wait(0.5)  # 80 + 80 > 100 bytes pending: the writer waits
    gate.set()
    assert done.wait(10)
    t.join()
    sink.finish("succeeded", None, {}, timeout=30)
    sink.close()
    assert got == [80, 80] and sink.upload_wait_seconds >= 0.4


def test_rejected_detail_is_kept() -> None:
    e = IngestRejected(409, {"message": "resend", "segments": 2}, "committing")
    assert e.detail["segments"] == 2 and "resend" in str(e)


def test_sdk_client_and_cli_import_without_server_packages() -> None:
    """What `pip install .` gives (no fastapi, celery, redis, minio, matplotlib) is enough for the SDK, the
    client and the CLI's entry point."""
    code = """
import importlib.abc, sys
BLOCKED = {"fastapi", "starlette", "uvicorn", "celery", "kombu", "redis", "minio", "matplotlib", "websockets"}
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ImportError(f"{name} is a server package")
sys.meta_path.insert(0, Block())
import netlapse
assert "torch" not in sys.modules, "import netlapse must stay light"
import netlapse.cli.main, netlapse.client, netlapse.sdk, netlapse.core.capture, netlapse.core.tape
import netlapse.core.schemas, netlapse.sdk.push
assert netlapse.init is netlapse.sdk.init
print("ok")
"""
    p = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert p.returncode == 0 and p.stdout.strip() == "ok", p.stderr


def test_a_cancel_asked_on_the_server_reaches_the_loop_through_heartbeats() -> None:
    answers = iter([{"status": "running", "cancel_requested": False}])

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/heartbeat"):
            return httpx.Response(200, json=next(answers, {"status": "running", "cancel_requested": True}))
        return httpx.Response(200, json={"status": "cancelled"})

    client = IngestClient("http://server", http=httpx.Client(transport=httpx.MockTransport(handler)))
    sink = OnlineSink(client, {"id": "run00004"}, heartbeat_s=0.05)
    run = netlapse.sdk.Run(sink, "c")
    deadline = time.monotonic() + 10
    while not run.cancel_requested and time.monotonic() < deadline:
        time.sleep(0.02)
    assert run.cancel_requested
    run.finish(status="cancelled")
    assert run.status == "cancelled"
