"""Capture on CUDA: training time per step with no capture, netlapse (lossless, every step, pinned buffers,
side stream, multi-threaded encoding), TensorBoard histograms and a wandb.watch-style 64-bin torch.histc of
every parameter on the device, interleaved; paper-cnn and wide-cnn.

    python bench/bench_capture_cuda.py --out DIR      (writes DIR/capture_cuda.json)

Self-contained on purpose: it needs only torch, numpy, zstandard and pydantic (no Redis, no Celery), so it
runs on a bare GPU machine. mnist-10k is used when ``.data/datasets/mnist-10k.npz`` is there, else random
MNIST-shaped data (the timing does not depend on it; the bytes per snapshot do).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / ".pkg"))  # the device's netlapse shim, if any

from netlapse.core.capture import CapturePipeline, capturable_tensors  # noqa: E402
from netlapse.core.modelspec import PRESETS, build_model  # noqa: E402
from netlapse.core.store import LocalStore  # noqa: E402
from netlapse.core.tape import TapeOptions, TapeWriter  # noqa: E402


def data(device: torch.device) -> tuple[torch.Tensor, torch.Tensor, str]:
    p = Path(".data/datasets/mnist-10k.npz")
    if p.exists():
        d = np.load(p)
        x = torch.from_numpy(d["train_images"].astype(np.float32) / 255.0).unsqueeze(1)
        y = torch.from_numpy(d["train_labels"].astype(np.int64))
        return x.to(device), y.to(device), "mnist-10k"
    g = torch.Generator().manual_seed(0)
    return (
        torch.rand(8000, 1, 28, 28, generator=g).to(device),
        torch.randint(0, 10, (8000,), generator=g).to(device),
        "random",
    )


def sync(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize()


def run(
    preset: str, variants: list[str], rounds: int, steps: int, batch: int, threads: int, dev: torch.device
) -> dict[str, Any]:
    x, y, src = data(dev)
    out: dict[str, Any] = {
        "preset": preset,
        "data": src,
        "rounds": rounds,
        "steps_per_round": steps,
        "batch": batch,
    }
    states: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for v in variants:
            torch.manual_seed(0)
            model = build_model(PRESETS[preset].spec).to(dev)
            opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
            st: dict[str, Any] = {"model": model, "opt": opt, "seconds": [], "step": 0, "captured": 0}
            if v == "netlapse":
                w = TapeWriter(
                    LocalStore(Path(tmp) / v), "t/", capturable_tensors(model), TapeOptions(threads=threads)
                )
                st["pipe"] = CapturePipeline(model, w, buffers=4)
                st["pipe"].capture(0)
                st["captured"] = 1
            if v == "tensorboard":
                from torch.utils.tensorboard import SummaryWriter

                st["tb"] = SummaryWriter(str(Path(tmp) / "tb"))
            states[v] = st
        gen = torch.Generator(device="cpu").manual_seed(0)

        def go(v: str, n: int) -> float:
            st = states[v]
            model, opt = st["model"], st["opt"]
            sync(dev)
            t0 = time.perf_counter()
            for _ in range(n):
                idx = torch.randint(0, len(x), (batch,), generator=gen).to(dev)
                loss = F.cross_entropy(model(x[idx]), y[idx])
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                st["step"] += 1
                if v == "netlapse":
                    st["pipe"].capture(st["step"])
                    st["captured"] += 1
                elif v == "tensorboard":
                    for name, p in model.named_parameters():
                        st["tb"].add_histogram(name, p.detach(), st["step"])
                elif v == "histc":  # wandb.watch(log="parameters"): a 64-bin histogram on the device
                    with torch.no_grad():
                        for p in model.parameters():
                            t = p.detach()
                            lo, hi = float(t.min()), float(t.max())
                            st.setdefault("hist", []).append(torch.histc(t, bins=64, min=lo, max=hi).cpu())
            if v == "netlapse":
                while st["pipe"].stats.steps < st["captured"]:
                    time.sleep(0.0005)
            elif v == "tensorboard":
                st["tb"].flush()
            sync(dev)
            return time.perf_counter() - t0

        for v in variants:
            go(v, 5)  # warm-up: cuDNN autotune, allocator
        for r in range(rounds):
            order = variants[r % len(variants) :] + variants[: r % len(variants)]
            for v in order:
                states[v]["seconds"].append(go(v, steps))
        base = sum(states["none"]["seconds"])
        for v in variants:
            st = states[v]
            tot = sum(st["seconds"])
            res: dict[str, Any] = {"step_ms": tot / (rounds * steps) * 1e3, "slowdown": tot / base - 1}
            if v == "netlapse":
                s = st["pipe"].close()
                res.update(
                    {
                        "snapshots": s.steps,
                        "bytes_per_snapshot": s.stored_bytes / s.steps,
                        "ratio": s.stored_bytes / s.raw_bytes,
                        "wait_fraction": s.wait_seconds / tot,
                        "copy_ms_per_snapshot": s.copy_seconds / s.steps * 1e3,
                        "writer_ms_per_snapshot": (s.encode_seconds + s.commit_seconds) / s.steps * 1e3,
                        "writer_mb_per_s": s.raw_bytes / max(1e-9, s.encode_seconds + s.commit_seconds) / 1e6,
                        "encoder_threads": threads,
                    }
                )
            if v == "tensorboard":
                st["tb"].close()
            out[v] = res
    return out


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", type=Path, default=Path(os.environ.get("OUT", ".")))
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--cpu", action="store_true", help="check the script's logic without a GPU")
    args = ap.parse_args()
    if not args.cpu and not torch.cuda.is_available():
        print("no CUDA device", file=sys.stderr)
        return 2
    dev = torch.device("cpu" if args.cpu else "cuda")
    torch.backends.cudnn.benchmark = True
    threads = min(8, os.cpu_count() or 1)
    q = args.quick
    res: dict[str, Any] = {
        "device": "cpu" if args.cpu else torch.cuda.get_device_name(0),
        "cpus": os.cpu_count(),
        "torch": torch.__version__,
        "python": platform.python_version(),
    }
    t0 = time.perf_counter()
    res["paper_cnn"] = run(
        "paper-cnn",
        ["none", "netlapse", "tensorboard", "histc"],
        2 if q else 3,
        20 if q else 100,
        128,
        threads,
        dev,
    )
    print(json.dumps(res["paper_cnn"]), flush=True)
    res["wide_cnn"] = run(
        "wide-cnn",
        ["none", "netlapse"],
        2,
        2 if args.cpu else (5 if q else 20),
        32 if args.cpu else 128,
        threads,
        dev,
    )
    print(json.dumps(res["wide_cnn"]), flush=True)
    res["wall_seconds"] = time.perf_counter() - t0
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "capture_cuda.json").write_text(json.dumps(res, indent=1))
    print(json.dumps(res, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
