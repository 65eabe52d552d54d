"""Through the HTTP API of a private stack: diffs and trajectories before and after compaction, and event
latency from the trainer to a WebSocket client. Run by ``python -m bench.run``."""

from __future__ import annotations

import json
import os
import random
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from websockets.sync.client import connect as ws_connect

from netlapse.cli.stack import Stack, free_port
from netlapse.core.queue import ANALYZE_QUEUE, TASK_COMPACT, make_celery
from netlapse.core.schemas import CompactTask, tape_prefix
from netlapse.core.settings import Settings
from netlapse.core.store import LocalStore
from netlapse.core.tape import TapeReader

NPY = {"Accept": "application/x-npy"}


def pct(xs: list[float], q: float) -> float:
    """The q-th percentile (0..100), linear interpolation."""
    return float(np.percentile(xs, q)) if xs else float("nan")


def summary(xs: list[float]) -> dict[str, float]:
    return {"p50": pct(xs, 50), "p95": pct(xs, 95), "max": max(xs) if xs else float("nan"), "n": len(xs)}


def timed(fn: Callable[[], httpx.Response]) -> float:
    t0 = time.perf_counter()
    r = fn()
    dt = time.perf_counter() - t0
    if r.status_code != 200:
        raise RuntimeError(f"{r.request.method} {r.request.url} -> {r.status_code}: {r.text[:300]}")
    return dt


class EventListener(threading.Thread):
    """A WebSocket client that records (receive time - publish time) of every event."""

    def __init__(self, url: str) -> None:
        super().__init__(daemon=True)
        self.url = url
        self.latencies: dict[str, list[float]] = {}
        self.done = threading.Event()
        self.ready = threading.Event()

    def run(self) -> None:
        with ws_connect(self.url, open_timeout=20) as ws:
            connected = time.time()
            self.ready.set()
            while not self.done.is_set():
                try:
                    msg = ws.recv(timeout=1.0)
                except TimeoutError:
                    continue
                except Exception:  # closed by the server
                    return
                now = time.time()
                ev = json.loads(msg)
                ts = ev.get("ts")
                if isinstance(ts, int | float) and ts >= connected:  # replayed history is not latency
                    self.latencies.setdefault(str(ev.get("type")), []).append(now - float(ts))
                if ev.get("type") == "status" and ev.get("data", {}).get("status") in (
                    "succeeded",
                    "failed",
                    "cancelled",
                ):
                    return


def train(api: httpx.Client, port: int, epochs: int) -> tuple[dict[str, Any], EventListener]:
    body = {
        "name": "bench-engine",
        "model": {"preset": "paper-cnn"},
        "dataset": "mnist-10k",
        "training": {"epochs": epochs, "batch_size": 128, "optimizer": "sgd", "lr": 0.01, "momentum": 0.9},
        "capture": {"every": 1},
    }
    r = api.post("/api/runs", json=body)
    r.raise_for_status()
    rid = r.json()["id"]
    listener = EventListener(f"ws://127.0.0.1:{port}/api/runs/{rid}/events")
    listener.start()
    listener.ready.wait(20)
    deadline = time.monotonic() + 900
    while time.monotonic() < deadline:
        run = api.get(f"/api/runs/{rid}").json()
        if run["status"] in ("succeeded", "failed", "cancelled"):
            if run["status"] != "succeeded":
                raise RuntimeError(f"run {rid} ended {run['status']}: {run['error']}")
            listener.join(10)
            listener.done.set()
            return run, listener
        time.sleep(0.5)
    raise TimeoutError("training did not finish")


def diffs(api: httpx.Client, rid: str, name: str, pairs: list[tuple[int, int]]) -> dict[str, Any]:
    url = f"/api/runs/{rid}/diff/{name}"
    cold = [timed(lambda a=a, b=b: api.get(url, params={"from": a, "to": b}, headers=NPY)) for a, b in pairs]
    warm = [timed(lambda a=a, b=b: api.get(url, params={"from": a, "to": b}, headers=NPY)) for a, b in pairs]
    return {"cold": summary(cold), "warm": summary(warm)}


def trajectories(api: httpx.Client, rid: str, n_elems: int, count: int, seed: int) -> dict[str, Any]:
    rng = random.Random(seed)
    url = f"/api/runs/{rid}/trajectory/fc1.weight"
    times = []
    for _ in range(count):
        idx = ",".join(str(rng.randrange(9216 * 128)) for _ in range(n_elems))
        times.append(timed(lambda idx=idx: api.get(url, params={"index": idx})))
    return summary(times)


def random_pairs(steps: list[int], n: int, seed: int) -> list[tuple[int, int]]:
    rng = random.Random(seed)
    out: list[tuple[int, int]] = []
    while len(out) < n:
        a, b = sorted(rng.sample(steps, 2))
        out.append((a, b))
    return out


def cold_reader_reads(store: LocalStore, rid: str, steps: list[int], n: int, seed: int) -> dict[str, Any]:
    """fc1.weight at random steps, each from a brand-new reader (nothing cached, tables unread)."""
    rng = random.Random(seed)
    times = []
    for _ in range(n):
        s = rng.choice(steps)
        r = TapeReader(store, tape_prefix(rid))
        t0 = time.perf_counter()
        r.read("fc1.weight", s)
        times.append(time.perf_counter() - t0)
    return summary(times)


def bench_api(epochs: int, pairs: int, log: Callable[[str], None]) -> dict[str, Any]:
    data_src = Path(os.environ.get("NETLAPSE_DATA_DIR", ".data")).resolve()
    mnist = data_src / "datasets" / "mnist-10k.npz"
    out: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="netlapse-bench-") as tmp:
        data = Path(tmp)
        (data / "datasets").mkdir()
        (data / "datasets" / "mnist-10k.npz").symlink_to(mnist)
        stack = Stack(
            data_dir=data,
            api_port=free_port(),
            log_dir=data / "logs",
            extra_env={"NETLAPSE_COMPACT_AFTER_RUN": "false", "NETLAPSE_COMPACT_DURING_RUN_STEPS": "0"},
        )
        stack.start()
        try:
            with httpx.Client(base_url=f"http://127.0.0.1:{stack.api_port}", timeout=300) as api:
                t0 = time.perf_counter()
                run, listener = train(api, stack.api_port, epochs)
                rid = run["id"]
                out["run"] = {
                    "id": rid,
                    "train_wall_seconds": time.perf_counter() - t0,
                    "summary": run["summary"],
                }
                lat = listener.latencies
                allv = [x for v in lat.values() for x in v]
                out["events"] = {"all": summary(allv), **{k: summary(v) for k, v in lat.items()}}
                steps = api.get(f"/api/runs/{rid}/steps").json()["steps"]
                out["steps"] = len(steps)
                log(
                    f"  trained {len(steps)} steps in {out['run']['train_wall_seconds']:.1f}s; measuring the API"
                )
                store = LocalStore(data / "store")
                before: dict[str, Any] = {}
                for name in ("conv1.weight", "fc1.weight"):
                    before[f"diff_{name}"] = diffs(api, rid, name, random_pairs(steps, pairs, 1))
                before["trajectory_fc1_16"] = trajectories(api, rid, 16, 12, 2)
                before["cold_reader_fc1"] = cold_reader_reads(store, rid, steps, 12, 3)
                r = TapeReader(store, tape_prefix(rid))
                before["stored_bytes"], before["raw_bytes"] = r.stored_bytes, r.raw_bytes
                out["before_compaction"] = before

                app = make_celery("bench", Settings(redis_url=stack.redis_url or ""))
                t1 = time.perf_counter()
                res = app.send_task(
                    TASK_COMPACT, args=[CompactTask(run_id=rid).model_dump()], queue=ANALYZE_QUEUE
                )
                rep = res.get(timeout=600)
                out["compaction"] = {"seconds_via_celery": time.perf_counter() - t1, **rep}
                log(f"  compacted in {out['compaction']['seconds_via_celery']:.1f}s")
                after: dict[str, Any] = {}
                for name in ("conv1.weight", "fc1.weight"):
                    after[f"diff_{name}"] = diffs(api, rid, name, random_pairs(steps, pairs, 11))
                after["trajectory_fc1_16"] = trajectories(api, rid, 16, 12, 12)
                after["cold_reader_fc1"] = cold_reader_reads(store, rid, steps, 12, 13)
                r = TapeReader(store, tape_prefix(rid))
                after["stored_bytes"], after["raw_bytes"] = r.stored_bytes, r.raw_bytes
                after["fully_compacted"] = r.fully_compacted
                out["after_compaction"] = after
        finally:
            stack.stop()
    return out
