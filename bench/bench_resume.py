"""What resume checkpoints cost (docs/durability.md): paper-cnn, SGD+momentum and Adam, batch 128, CPU.

A checkpoint is one copy of the model, the optimizer state and the RNGs on the training thread, then an
encode + upload on a background thread. The table gives each part per checkpoint, the bytes, and the share
of training time at the default interval (one checkpoint per ``NETLAPSE_RESUME_INTERVAL_S``, after a
segment commit) and at the extreme of one checkpoint per segment. Also the full resume path: decode and
restore. ``python -m bench.bench_resume`` prints the table and writes bench/results/resume.json.
"""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from netlapse.core.modelspec import PRESETS, build_model
from netlapse.core.schemas import TrainingConfig
from netlapse.core.settings import Settings
from netlapse.core.store import LocalStore
from netlapse.trainer.resume import ResumeState, capture_state, restore_state
from netlapse.trainer.training import make_optimizer

RESULTS = Path(__file__).resolve().parent / "results" / "resume.json"
OPTIMIZERS = {
    "sgd-momentum": {"optimizer": "sgd", "lr": 0.01, "momentum": 0.9},
    "adam": {"optimizer": "adam", "lr": 0.001},
}


def _median(xs: list[float]) -> float:
    return sorted(xs)[len(xs) // 2]


def measure(name: str, opt_cfg: dict[str, Any], steps: int = 12, reps: int = 5) -> dict[str, Any]:
    torch.manual_seed(0)
    model = build_model(PRESETS["paper-cnn"].spec)
    opt = make_optimizer(model.parameters(), TrainingConfig(**opt_cfg))  # type: ignore[arg-type]
    gen = torch.Generator().manual_seed(0)
    x, y = torch.randn(128, 1, 28, 28), torch.randint(0, 10, (128,))
    step_s = []
    for _ in range(steps):
        t0 = time.perf_counter()
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        step_s.append(time.perf_counter() - t0)
    perm = torch.randperm(8000, generator=gen)
    copy_s, encode_s, put_s, restore_s = [], [], [], []
    nbytes = raw = 0
    with tempfile.TemporaryDirectory() as d:
        store = LocalStore(d)
        for i in range(reps):
            t0 = time.perf_counter()
            st = capture_state(model, opt, gen, step=i, epoch=1, batch=i, perm=perm, epoch_metrics=[])
            copy_s.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            data = st.encode()
            encode_s.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            store.put(f"runs/bench/resume/{i:012d}.npz", data)
            put_s.append(time.perf_counter() - t0)
            nbytes, raw = len(data), st.nbytes
            t0 = time.perf_counter()
            restore_state(ResumeState.decode(store.get(f"runs/bench/resume/{i:012d}.npz")), model, opt, gen)
            restore_s.append(time.perf_counter() - t0)
    interval = Settings().resume_interval_s
    step = _median(step_s)
    copy, bg = _median(copy_s), _median(encode_s) + _median(put_s)
    return {
        "optimizer": name,
        "step_ms": round(step * 1e3, 2),
        "checkpoint_bytes": nbytes,
        "state_bytes": raw,
        "copy_ms_training_thread": round(copy * 1e3, 2),
        "encode_ms": round(_median(encode_s) * 1e3, 2),
        "put_ms": round(_median(put_s) * 1e3, 2),
        "restore_ms": round(_median(restore_s) * 1e3, 2),
        "interval_s": interval,
        "training_thread_share_at_interval_pct": round(100 * copy / interval, 4),
        # paper-cnn stores ~2.5 MB per step and a segment is 8 MiB: a checkpoint per segment is one per ~3 steps.
        "training_thread_share_per_segment_pct": round(100 * copy / (3 * step + copy), 2),
        "background_ms": round(bg * 1e3, 2),
    }


def main() -> None:
    torch.set_num_threads(max(1, torch.get_num_threads()))
    rows = [measure(n, cfg) for n, cfg in OPTIMIZERS.items()]
    cols = [
        ("optimizer", "optimizer"),
        ("step_ms", "step ms"),
        ("checkpoint_bytes", "bytes"),
        ("copy_ms_training_thread", "copy ms (loop)"),
        ("encode_ms", "encode ms"),
        ("put_ms", "put ms"),
        ("restore_ms", "restore ms"),
        ("training_thread_share_at_interval_pct", "loop % @interval"),
        ("training_thread_share_per_segment_pct", "loop % @segment"),
    ]
    print("  ".join(f"{h:>17}" for _, h in cols))
    for r in rows:
        print("  ".join(f"{r[k]!s:>17}" for k, _ in cols))
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps({"model": "paper-cnn", "batch_size": 128, "rows": rows}, indent=2) + "\n")
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
