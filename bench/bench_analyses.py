"""Analyses through the API, side by side: cold vs cached, on a real paper-cnn run on mnist-10k.

    NETLAPSE_DATA_DIR=.data .venv/bin/python -m bench.bench_analyses [--pairs 200] [--epochs 1]

Starts a private stack (redis, trainer, analyzer, api; like the test fixture), trains paper-cnn on mnist-10k
for one epoch (63 steps, SGD 0.01 momentum 0.9, seed 0), then measures:

- per-label activations (Eq. 1) of conv1 + conv2, 100 inputs per label, at the last step: cold (nothing
  cached; the first request also warms the analyzer process) and cached — target ≤ 2 s cold on CPU;
- diff of conv1.weight between random step pairs through the API: uncached pairs, then the same pairs cached —
  target p50 ≤ 100 ms;
- scatter (initial value vs change) of conv2.weight and fc1.weight, cold and cached; trajectories of 100
  elements of conv1.weight over all steps.

Prints a table and writes bench/results/analyses.json. Timings are wall-clock seconds seen by an HTTP client.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from netlapse.cli.stack import Stack, free_port

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "bench" / "results" / "analyses.json"
TARGET_ACTIVATIONS_COLD_S = 2.0
TARGET_DIFF_P50_S = 0.100


def pct(xs: list[float], q: float) -> float:
    """The q-th percentile (0..100) by linear interpolation."""
    s = sorted(xs)
    if not s:
        return float("nan")
    k = (len(s) - 1) * q / 100
    lo, hi = int(k), min(int(k) + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (k - lo)


def timed(fn: Callable[[], httpx.Response]) -> tuple[float, httpx.Response]:
    t0 = time.perf_counter()
    r = fn()
    dt = time.perf_counter() - t0
    if r.status_code != 200:
        raise RuntimeError(f"{r.request.method} {r.request.url} → {r.status_code}: {r.text[:500]}")
    return dt, r


def train(api: httpx.Client, epochs: int) -> dict[str, Any]:
    body = {
        "name": "bench-analyses",
        "model": {"preset": "paper-cnn"},
        "dataset": "mnist-10k",
        "training": {
            "epochs": epochs,
            "batch_size": 128,
            "optimizer": "sgd",
            "lr": 0.01,
            "momentum": 0.9,
            "seed": 0,
        },
        "capture": {"every": 1},
    }
    r = api.post("/api/runs", json=body)
    r.raise_for_status()
    rid = r.json()["id"]
    deadline = time.monotonic() + 900
    while time.monotonic() < deadline:
        run = api.get(f"/api/runs/{rid}").json()
        if run["status"] in ("succeeded", "failed", "cancelled"):
            if run["status"] != "succeeded":
                raise RuntimeError(f"training {rid} ended {run['status']}: {run['error']}")
            return run
        time.sleep(0.5)
    raise TimeoutError("training did not finish in 15 minutes")


def bench_activations(api: httpx.Client, rid: str, last: int) -> dict[str, Any]:
    """conv1 then conv2 at a step, 100 per label: cold, then the same two requests cached."""

    def pair(step: int) -> dict[str, Any]:
        out: dict[str, Any] = {"step": step}
        total = 0.0
        for layer in ("conv1", "conv2"):
            dt, r = timed(
                lambda layer=layer: api.post(
                    f"/api/runs/{rid}/activations", json={"step": step, "layer": layer, "per_label": 100}
                )
            )
            j = r.json()
            out[layer] = {
                "seconds": dt,
                "cached": j["cached"],
                "evaluated": j["evaluated"],
                "forward_seconds": j.get("forward_seconds"),
                "counts": j["counts"],
            }
            total += dt
        out["conv1+conv2_seconds"] = total
        return out

    first = pair(last)  # the analyzer process loads the dataset and the model here too
    cached = [pair(last) for _ in range(5)]
    # Cold results in a warm process: other steps, never requested before.
    others = [pair(s) for s in (last - 1, last - 2, last - 3)]
    return {
        "first_request": first,
        "cold_other_steps": others,
        "cold_first_seconds": first["conv1+conv2_seconds"],
        "cold_warm_process_median_seconds": statistics.median(o["conv1+conv2_seconds"] for o in others),
        "cached_median_seconds": statistics.median(c["conv1+conv2_seconds"] for c in cached),
        "target_cold_seconds": TARGET_ACTIVATIONS_COLD_S,
    }


def bench_diff(api: httpx.Client, rid: str, steps: list[int], n_pairs: int) -> dict[str, Any]:
    """conv1.weight between random step pairs: each pair uncached once, then all pairs again (cached)."""
    rng = random.Random(0)
    pairs: set[tuple[int, int]] = set()
    while len(pairs) < min(n_pairs, len(steps) * (len(steps) - 1) // 2):
        a, b = sorted(rng.sample(steps, 2))
        pairs.add((a, b))
    order = sorted(pairs, key=lambda _: rng.random())
    url = f"/api/runs/{rid}/diff/conv1.weight"
    cold, warm = [], []
    for a, b in order:
        dt, r = timed(lambda a=a, b=b: api.get(url, params={"from": a, "to": b}))
        cold.append(dt)
    for a, b in order:
        dt, r = timed(lambda a=a, b=b: api.get(url, params={"from": a, "to": b}))
        warm.append(dt)
    npy = []
    for a, b in order[:50]:
        dt, _ = timed(
            lambda a=a, b=b: api.get(
                url, params={"from": a, "to": b}, headers={"Accept": "application/x-npy"}
            )
        )
        npy.append(dt)
    return {
        "pairs": len(order),
        "uncached": {"p50": pct(cold, 50), "p95": pct(cold, 95), "max": max(cold)},
        "cached": {"p50": pct(warm, 50), "p95": pct(warm, 95), "max": max(warm)},
        "cached_npy": {"p50": pct(npy, 50), "p95": pct(npy, 95)},
        "target_p50_seconds": TARGET_DIFF_P50_S,
    }


def bench_scatter(api: httpx.Client, rid: str, last: int) -> dict[str, Any]:
    out = {}
    for name in ("conv2.weight", "fc1.weight"):
        url = f"/api/runs/{rid}/scatter/{name}"
        dt_cold, r = timed(lambda url=url: api.get(url, params={"from": 0, "to": last}))
        dt_warm, _ = timed(lambda url=url: api.get(url, params={"from": 0, "to": last}))
        j = r.json()
        out[name] = {
            "n": j["n"],
            "cold_seconds": dt_cold,
            "cached_seconds": dt_warm,
            "pearson_r": j["pearson_r"],
            "pos_increased_fraction": j["pos_increased_fraction"],
            "neg_decreased_fraction": j["neg_decreased_fraction"],
        }
    return out


def bench_trajectory(api: httpx.Client, rid: str) -> dict[str, Any]:
    rng = random.Random(1)
    times = []
    for _ in range(20):
        idx = ",".join(str(rng.randrange(288)) for _ in range(100))
        dt, _ = timed(
            lambda idx=idx: api.get(f"/api/runs/{rid}/trajectory/conv1.weight", params={"index": idx})
        )
        times.append(dt)
    return {"indices": 100, "requests": len(times), "p50": pct(times, 50), "p95": pct(times, 95)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--pairs", type=int, default=200, help="random step pairs for the diff benchmark")
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args(argv)
    data_src = Path(os.environ.get("NETLAPSE_DATA_DIR", REPO / ".data")).resolve()
    mnist = data_src / "datasets" / "mnist-10k.npz"
    if not mnist.exists():
        print(
            f"bench_analyses: {mnist} not found; run `make setup` (or python -m netlapse.core.datasets fetch)",
            file=sys.stderr,
        )
        return 2
    t_start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="netlapse-bench-") as tmp:
        data = Path(tmp)
        (data / "datasets").mkdir()
        (data / "datasets" / "mnist-10k.npz").symlink_to(mnist)
        stack = Stack(data_dir=data, api_port=free_port(), log_dir=data / "logs")
        stack.start()
        try:
            with httpx.Client(base_url=f"http://127.0.0.1:{stack.api_port}", timeout=300) as api:
                t0 = time.perf_counter()
                run = train(api, args.epochs)
                train_wall = time.perf_counter() - t0
                rid = run["id"]
                steps = api.get(f"/api/runs/{rid}/steps").json()["steps"]
                last = steps[-1]
                results: dict[str, Any] = {
                    "run": {
                        "id": rid,
                        "steps": len(steps),
                        "val_accuracy": run["summary"]["val_accuracy"],
                        "train_wall_seconds": train_wall,
                    },
                    "activations": bench_activations(api, rid, last),
                    "diff_conv1": bench_diff(api, rid, steps, args.pairs),
                    "scatter": bench_scatter(api, rid, last),
                    "trajectory_conv1": bench_trajectory(api, rid),
                }
        finally:
            stack.stop()
    results["env"] = {
        "python": platform.python_version(),
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
        "torch_threads": int(os.environ.get("NETLAPSE_TORCH_THREADS", "1")),
        "load_avg_1m": os.getloadavg()[0],
        "wall_seconds": time.perf_counter() - t_start,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=1) + "\n")
    print_table(results)
    print(f"\nwrote {args.out}")
    return 0


def print_table(r: dict[str, Any]) -> None:
    a, d = r["activations"], r["diff_conv1"]
    ms = 1000.0
    rows = [
        ("activations conv1+conv2, 100/label, first (cold process)", a["cold_first_seconds"], "≤ 2 s cold"),
        (
            "activations conv1+conv2, 100/label, cold (warm process)",
            a["cold_warm_process_median_seconds"],
            "≤ 2 s cold",
        ),
        ("activations conv1+conv2, 100/label, cached", a["cached_median_seconds"], ""),
        (f"diff conv1.weight, {d['pairs']} random pairs, uncached p50", d["uncached"]["p50"], "p50 ≤ 100 ms"),
        ("diff conv1.weight, uncached p95", d["uncached"]["p95"], ""),
        ("diff conv1.weight, cached p50", d["cached"]["p50"], ""),
        ("diff conv1.weight, cached p95", d["cached"]["p95"], ""),
    ]
    for name, s in r["scatter"].items():
        rows.append((f"scatter {name} ({s['n']:,}) cold", s["cold_seconds"], ""))
        rows.append((f"scatter {name} cached", s["cached_seconds"], ""))
    t = r["trajectory_conv1"]
    rows.append(
        (f"trajectory conv1.weight, {t['indices']} elements × {r['run']['steps']} steps, p50", t["p50"], "")
    )
    width = max(len(x[0]) for x in rows)
    print(f"{'measure':<{width}}  {'ms':>9}  target")
    for name, secs, target in rows:
        print(f"{name:<{width}}  {secs * ms:9.1f}  {target}")
    print(
        f"\nrun {r['run']['id']}: {r['run']['steps']} steps, val accuracy {r['run']['val_accuracy']:.3f}, "
        f"cpus {r['env']['cpus']}, torch threads {r['env']['torch_threads']}, load {r['env']['load_avg_1m']:.1f}"
    )


if __name__ == "__main__":
    sys.exit(main())
