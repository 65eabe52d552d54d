"""The tape encoder alone, per thread: MB/s of raw snapshot bytes and stored/raw, old release vs now.

    NETLAPSE_DATA_DIR=.data .venv/bin/python -m bench.bench_codec [--steps 25] [--out bench/results/codec.json]

Snapshots are paper-cnn's float state after each of ``--steps`` mini-batches on mnist-10k (SGD+momentum and
Adam, as in bench_capture). Each encoder writes every snapshot into a store that keeps nothing (so only
encoding and packing are timed, no disk), on the calling thread (``threads=1``); throughput is raw bytes over
that thread's CPU time (``time.thread_time``), which other processes on a shared machine do not inflate, and
over wall time. Encoders, interleaved round by round:

- ``release-0.1.0``: the writer of format 1, loaded from git (commit ``BASELINE_COMMIT``); skipped without git;
- ``native``: today's default writer: numpy lanes and the native C codec (format 3, services/core/tape/nlcodec.c);
- ``zstd``: the same writer with zstd byte planes (format 2: the engine before the native codec, and what an
  install without a C compiler writes);
- ``torch-cpu``: the writer with the device path's torch transform, run on the CPU (one torch thread; zstd planes).

Also recorded: whether zstd and torch-cpu wrote identical bytes, the profile of the native encoder (where its
thread time goes), and stored/raw when every step is fresh random weights (the incompressible bound).
"""

from __future__ import annotations

import argparse
import cProfile
import hashlib
import importlib.util
import json
import os
import platform
import pstats
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from bench.bench_capture import ADAM, SGD, batches, float_state, model_and_opt, settings, train_step
from netlapse.core.datasets import load_dataset
from netlapse.core.store import LocalStore
from netlapse.core.tape import TapeOptions, TapeWriter, TensorInfo

REPO = Path(__file__).resolve().parent.parent
BASELINE_COMMIT = "12f6f62"  # the last commit with the format-1 writer (services/core/tape.py)


class NullStore(LocalStore):
    """Takes every object and keeps only its size: the encoder's cost without the disk's."""

    def __init__(self, root: Path, digest: bool = False) -> None:
        super().__init__(root)
        self.digest = hashlib.sha256() if digest else None

    def put(self, key: str, data: bytes) -> None:
        if self.digest is not None:
            self.digest.update(data)

    def put_json(self, key: str, obj: Any) -> None:
        pass

    def exists(self, key: str) -> bool:
        return False


def baseline_module() -> Any | None:
    """The release's tape module, from git; None where git or the commit is not at hand."""
    try:
        src = subprocess.run(
            ["git", "show", f"{BASELINE_COMMIT}:services/core/tape.py"],
            cwd=REPO,
            capture_output=True,
            check=True,
        ).stdout
    except (OSError, subprocess.CalledProcessError):
        return None
    path = Path(tempfile.mkdtemp(prefix="netlapse-baseline-")) / "tape_release_0_1.py"
    path.write_bytes(src)
    spec = importlib.util.spec_from_file_location("tape_release_0_1", path)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules["tape_release_0_1"] = mod
    spec.loader.exec_module(mod)
    return mod


def snapshots(opt: dict[str, Any], steps: int, batch: int = 64) -> list[dict[str, np.ndarray]]:
    """paper-cnn's floating-point state at its start and after each of ``steps`` training steps."""
    data = load_dataset("mnist-10k", settings())
    model, o = model_and_opt("paper-cnn", opt)
    it = batches(data.train_x, data.train_y, batch, 1)
    out = [float_state(model)]
    for _ in range(steps):
        xb, yb = next(it)
        train_step(model, o, xb, yb)
        out.append(float_state(model))
    return out


def encode(
    make: Any,
    infos: list[Any],
    snaps: list[dict[str, np.ndarray]],
    profile: cProfile.Profile | None = None,
    digest: bool = False,
) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="netlapse-bench-") as tmp:
        store = NullStore(Path(tmp), digest)
        w = make(store, infos)
        c0, t0 = time.thread_time(), time.perf_counter()
        if profile is not None:
            profile.enable()
        for i, s in enumerate(snaps):
            w.append(i, s)
        w.close()
        if profile is not None:
            profile.disable()
        cpu, wall = time.thread_time() - c0, time.perf_counter() - t0
        return {
            "mb_per_s_thread": w.raw_bytes / cpu / 1e6,
            "mb_per_s_wall": w.raw_bytes / wall / 1e6,
            "ratio": w.stored_bytes / w.raw_bytes,
            "raw_bytes": w.raw_bytes,
            "digest": store.digest.hexdigest() if store.digest is not None else None,
        }


def profile_table(prof: cProfile.Profile, total_s: float, top: int = 12) -> list[dict[str, Any]]:
    """The functions that took the encoder's thread time (tottime), as fractions of the whole."""
    st = pstats.Stats(prof)
    rows = []
    for (file, _line, fn), (_, ncalls, tottime, _, _) in st.stats.items():  # type: ignore[attr-defined]
        where = fn if file == "~" else f"{Path(file).name}:{fn}"
        rows.append({"function": where, "calls": ncalls, "seconds": tottime, "share": tottime / total_s})
    rows.sort(key=lambda r: -r["seconds"])
    return rows[:top]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=24)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--out", default=str(REPO / "bench" / "results" / "codec.json"))
    args = ap.parse_args(argv)
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return _run(args)
    finally:
        torch.set_num_threads(before)


def _run(args: argparse.Namespace) -> int:
    t_start = time.perf_counter()
    base = baseline_module()
    encoders: dict[str, Any] = {
        "native": lambda st, inf: TapeWriter(st, "w/", inf, TapeOptions(encoder="numpy", entropy="native")),
        # What the SDK writes (and every writer did before segment_digest): each segment's SHA-256 too.
        "native+sha256": lambda st, inf: TapeWriter(
            st, "w/", inf, TapeOptions(encoder="numpy", entropy="native", segment_digest=True)
        ),
        "zstd": lambda st, inf: TapeWriter(st, "w/", inf, TapeOptions(encoder="numpy", entropy="zstd")),
        "torch-cpu": lambda st, inf: TapeWriter(st, "w/", inf, TapeOptions(encoder="torch")),
    }
    if base is not None:
        encoders = {
            "release-0.1.0": lambda st, inf: base.TapeWriter(
                st, "w/", [base.TensorInfo(t.name, t.shape, t.dtype) for t in inf]
            ),
            **encoders,
        }
    out: dict[str, Any] = {"baseline_commit": BASELINE_COMMIT if base is not None else None}
    for name, opt in (("sgd", SGD), ("adam", ADAM)):
        snaps = snapshots(opt, args.steps)
        infos = [TensorInfo(n, a.shape, str(a.dtype)) for n, a in snaps[0].items()]
        runs: dict[str, list[dict[str, float]]] = {k: [] for k in encoders}
        order = list(encoders)
        for r in range(args.rounds):
            for k in order[r % len(order) :] + order[: r % len(order)]:
                runs[k].append(encode(encoders[k], infos, snaps))
        res: dict[str, Any] = {"optimizer": opt, "snapshots": len(snaps), "raw_bytes_per_snapshot": 0}
        for k, rs in runs.items():
            thr = sorted(x["mb_per_s_thread"] for x in rs)
            wall = sorted(x["mb_per_s_wall"] for x in rs)
            res[k] = {
                "mb_per_s_thread_median": thr[len(thr) // 2],
                "mb_per_s_thread_best": thr[-1],
                "mb_per_s_wall_median": wall[len(wall) // 2],
                "ratio": rs[0]["ratio"],
            }
            res["raw_bytes_per_snapshot"] = rs[0]["raw_bytes"] / len(snaps)
        digests = {k: encode(encoders[k], infos, snaps, digest=True)["digest"] for k in ("zstd", "torch-cpu")}
        res["torch_equals_zstd_bytes"] = digests["zstd"] == digests["torch-cpu"]
        if base is not None:
            b = res["release-0.1.0"]["mb_per_s_thread_median"]
            for k in ("native", "native+sha256", "zstd", "torch-cpu"):
                key = k.replace("-", "_").replace("+", "_")
                res[f"speedup_thread_{key}"] = res[k]["mb_per_s_thread_median"] / b
        prof = cProfile.Profile(time.thread_time)
        one = encode(encoders["native"], infos, snaps, prof)
        res["profile_native"] = profile_table(prof, one["raw_bytes"] / one["mb_per_s_thread"] / 1e6)
        out[name] = res
        line = ", ".join(
            f"{k} {res[k]['mb_per_s_thread_median']:.0f} MB/s ({res[k]['ratio']:.3f})" for k in runs
        )
        print(f"{name}: {line}", flush=True)
    # Fresh random weights every step: nothing to predict.
    rng = np.random.default_rng(0)
    infos = [TensorInfo("w", (1024, 1024), "float32")]
    rand = [{"w": (rng.standard_normal((1024, 1024)) * 0.05).astype(np.float32)} for _ in range(12)]
    out["random_every_step"] = {
        k: {x: v for x, v in encode(encoders[k], infos, rand).items() if x != "digest"}
        for k in encoders
        if k not in ("torch-cpu", "native+sha256")
    }
    out["env"] = {
        "python": platform.python_version(),
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
        "torch": torch.__version__,
        "load_avg_1m": os.getloadavg()[0],
        "wall_seconds": time.perf_counter() - t_start,
        "finished_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=1) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
