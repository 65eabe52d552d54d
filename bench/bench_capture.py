"""In-process capture benchmarks: training slowdown per step and per whole run (netlapse vs TensorBoard
histograms vs a wandb.watch-style torch.histc vs torch.save), bytes per snapshot (lossless at ingest and after compaction, lossy), writer throughput, and a ~25M-parameter CNN.

Run by ``python -m bench.run``; ``python -m bench.bench_capture --wide none|capture`` is the subprocess form
used for the wide model (one process per variant, so its peak RSS is its own).
"""

from __future__ import annotations

import argparse
import gc
import io
import json
import os
import resource
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from netlapse.analyzer.compaction import compact_tape
from netlapse.core.capture import CapturePipeline, capturable_tensors
from netlapse.core.datasets import load_dataset
from netlapse.core.modelspec import PRESETS, build_model
from netlapse.core.schemas import TrainingConfig
from netlapse.core.settings import Settings
from netlapse.core.store import LocalStore, Store
from netlapse.core.tape import TapeOptions, TapeReader, TapeWriter
from netlapse.trainer.training import make_optimizer

SGD = {"optimizer": "sgd", "lr": 0.01, "momentum": 0.9}
ADAM = {"optimizer": "adam", "lr": 0.001}


def settings() -> Settings:
    return Settings(data_dir=Path(os.environ.get("NETLAPSE_DATA_DIR", ".data")).resolve())


def batches(
    x: torch.Tensor, y: torch.Tensor, bs: int, seed: int
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Endless shuffled mini-batches (the trainer's order: a permutation per epoch)."""
    gen = torch.Generator().manual_seed(seed)
    while True:
        perm = torch.randperm(len(x), generator=gen)
        for i in range(0, len(x) - bs + 1, bs):
            idx = perm[i : i + bs]
            yield x[idx], y[idx]


def model_and_opt(
    preset: str, opt: dict[str, Any], seed: int = 0
) -> tuple[torch.nn.Module, torch.optim.Optimizer]:
    torch.manual_seed(seed)
    model = build_model(PRESETS[preset].spec)
    model.train()
    return model, make_optimizer(model.parameters(), TrainingConfig(**opt))


def train_step(
    model: torch.nn.Module, opt: torch.optim.Optimizer, xb: torch.Tensor, yb: torch.Tensor
) -> None:
    loss = F.cross_entropy(model(xb), yb)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()


def float_state(model: torch.nn.Module) -> dict[str, np.ndarray]:
    return {k: v.detach().numpy().copy() for k, v in model.state_dict().items() if v.is_floating_point()}


# --- (1) + (5): slowdown of each way of recording every step ---------------------------------------------------


class Variant:
    """One way of recording a training run; ``hook`` runs after every optimizer step."""

    name = "none"

    def __init__(self, model: torch.nn.Module, store: Store, tmp: Path) -> None:
        self.model, self.store, self.tmp = model, store, tmp

    def hook(self, step: int) -> None:
        """Record the model after optimizer step ``step``."""

    def drain(self) -> None:
        """Wait until everything recorded so far is written."""

    def close(self) -> dict[str, Any]:
        """Finish recording: everything written and closed (counted in the run's whole time); its figures."""
        return {}


class NetlapseVariant(Variant):
    name = "netlapse"
    mode: str | None = None  # the capture mode; None = the settings' (auto)

    def __init__(self, model: torch.nn.Module, store: Store, tmp: Path) -> None:
        super().__init__(model, store, tmp)
        s = settings()
        self.writer = TapeWriter(
            store, "bench/tape/", capturable_tensors(model), TapeOptions.from_settings(s)
        )
        self.pipe = CapturePipeline(
            model,
            self.writer,
            buffers=s.capture_buffers,
            nice=s.capture_nice,
            mode=self.mode or s.capture_mode,
        )
        self.pipe.capture(0)
        self.captured = 1

    def hook(self, step: int) -> None:
        self.pipe.capture(step)
        self.captured += 1

    def drain(self) -> None:
        while self.pipe.stats.steps < self.captured:
            time.sleep(0.002)

    def close(self) -> dict[str, Any]:
        st = self.pipe.close()
        return {
            "mode": self.pipe.mode,
            "steps": st.steps,
            "wait_seconds": st.wait_seconds,
            "copy_seconds": st.copy_seconds,
            "encode_seconds": st.encode_seconds,
            "commit_seconds": st.commit_seconds,
            "writer_cpu_seconds": st.writer_cpu_seconds,
            "raw_bytes": st.raw_bytes,
            "stored_bytes": st.stored_bytes,
        }


class NetlapseThreadVariant(NetlapseVariant):
    """netlapse with capture_mode "thread" (the default before 2026-12-02 night): the training thread copies
    the snapshot, a writer thread at nice +10 encodes and uploads it. The default ("auto") codes a CPU model's
    snapshots inline, on torch's own threads."""

    name = "netlapse-thread"
    mode = "thread"


class TensorBoardVariant(Variant):
    name = "tensorboard"

    def __init__(self, model: torch.nn.Module, store: Store, tmp: Path) -> None:
        super().__init__(model, store, tmp)
        from torch.utils.tensorboard import SummaryWriter

        self.sw = SummaryWriter(str(tmp / "tb"))

    def hook(self, step: int) -> None:
        for name, p in self.model.named_parameters():
            self.sw.add_histogram(name, p.detach(), step)

    def drain(self) -> None:
        self.sw.flush()

    def close(self) -> dict[str, Any]:
        self.sw.close()
        size = sum(f.stat().st_size for f in (self.tmp / "tb").rglob("*") if f.is_file())
        return {"stored_bytes": size}


class TorchSaveVariant(Variant):
    name = "torch.save"

    def __init__(self, model: torch.nn.Module, store: Store, tmp: Path) -> None:
        super().__init__(model, store, tmp)
        self.bytes = 0

    def hook(self, step: int) -> None:
        buf = io.BytesIO()
        torch.save(self.model.state_dict(), buf)
        data = buf.getvalue()
        self.store.put(f"bench/naive/{step:08d}.pt", data)
        self.bytes += len(data)

    def close(self) -> dict[str, Any]:
        return {"stored_bytes": self.bytes}


class HistcVariant(Variant):
    """What ``wandb.watch(model, log="parameters")`` computes: a 64-bin ``torch.histc`` of every parameter
    on its device at every step (here kept in memory, as counts and edges; nothing uploaded)."""

    name = "histc"

    def __init__(self, model: torch.nn.Module, store: Store, tmp: Path) -> None:
        super().__init__(model, store, tmp)
        self.logged: list[tuple[torch.Tensor, float, float]] = []
        self.bytes = 0

    def hook(self, step: int) -> None:
        with torch.no_grad():
            for _, p in self.model.named_parameters():
                t = p.detach()
                lo, hi = float(t.min()), float(t.max())
                counts = torch.histc(t, bins=64, min=lo, max=hi)
                self.logged.append((counts.cpu(), lo, hi))
                self.bytes += 64 * 4 + 16

    def close(self) -> dict[str, Any]:
        return {"stored_bytes": self.bytes}


VARIANTS: list[type[Variant]] = [
    Variant,
    NetlapseVariant,
    NetlapseThreadVariant,
    TensorBoardVariant,
    HistcVariant,
    TorchSaveVariant,
]


def bench_slowdown(
    rounds: int,
    steps_per_run: int | None,
    batch: int,
    log: Callable[[str], None],
    variants: list[type[Variant]] | None = None,
    torch_threads: int | None = None,
) -> dict[str, Any]:
    """paper-cnn on mnist-10k, SGD: every variant does the same run (``steps_per_run`` steps from the same
    initial weights; default one epoch, what a server run does by default), runs interleaved round by round."""
    data = load_dataset("mnist-10k", settings())
    before = torch.get_num_threads()
    torch.set_num_threads(torch_threads or before)
    try:
        steps = steps_per_run or len(data.train_x) // batch
        return _slowdown(data, rounds, steps, batch, log, variants or VARIANTS)
    finally:
        torch.set_num_threads(before)


def one_run(cls: type[Variant], data: Any, steps: int, batch: int, tmp: Path) -> dict[str, Any]:
    """One training run recorded by ``cls``, timed as a user sees it.

    ``loop_seconds``: the ``steps`` training steps with their hooks (the per-step cost); ``whole_seconds``:
    from setting the recorder up (netlapse: pipeline, tape, step 0) until it is closed — the last snapshot
    committed and the tape marked complete, so a writer still draining after the last step counts;
    ``cpu_seconds``: CPU time of the whole process over the same span (all threads)."""
    model, opt = model_and_opt("paper-cnn", SGD)
    it = batches(data.train_x, data.train_y, batch, 0)
    gc.collect()
    c0 = time.process_time()
    t0 = time.perf_counter()
    variant = cls(model, LocalStore(tmp / "store"), tmp)
    t1 = time.perf_counter()
    for step in range(1, steps + 1):
        xb, yb = next(it)
        train_step(model, opt, xb, yb)
        variant.hook(step)
    t2 = time.perf_counter()
    extra = variant.close()
    t3 = time.perf_counter()
    return {
        "loop_seconds": t2 - t1,
        "whole_seconds": t3 - t0,
        "setup_seconds": t1 - t0,
        "tail_seconds": t3 - t2,
        "cpu_seconds": time.process_time() - c0,
        **extra,
    }


_SUMMED = (
    "steps",
    "wait_seconds",
    "copy_seconds",
    "encode_seconds",
    "commit_seconds",
    "writer_cpu_seconds",
    "raw_bytes",
    "stored_bytes",
)


def _slowdown(
    data: Any,
    rounds: int,
    steps: int,
    batch: int,
    log: Callable[[str], None],
    variants: list[type[Variant]],
) -> dict[str, Any]:
    out: dict[str, Any] = {
        "what": "paper-cnn on mnist-10k, SGD momentum: the same run per variant, interleaved round by round",
        "rounds": rounds,
        "steps_per_run": steps,
        "batch_size": batch,
        "torch_threads": torch.get_num_threads(),
        "load_avg_1m_before": os.getloadavg()[0],
    }
    runs: dict[str, list[dict[str, Any]]] = {cls.name: [] for cls in variants}
    with tempfile.TemporaryDirectory(prefix="netlapse-bench-") as tmp_s:
        tmp = Path(tmp_s)
        # A short untimed run of each (imports, allocator, first-call overheads).
        for i, cls in enumerate(variants):
            (tmp / f"w{i}").mkdir()
            one_run(cls, data, 2, batch, tmp / f"w{i}")
        for rnd in range(rounds):
            order = variants[rnd % len(variants) :] + variants[: rnd % len(variants)]  # rotate who goes first
            for cls in order:
                vt = tmp / f"r{rnd}-{cls.name}"
                vt.mkdir()
                runs[cls.name].append(one_run(cls, data, steps, batch, vt))
                shutil.rmtree(vt, ignore_errors=True)
            base = runs[variants[0].name][-1]
            log(
                f"  round {rnd + 1}/{rounds} (load {os.getloadavg()[0]:.1f}): "
                + ", ".join(
                    f"{n} {rs[-1]['loop_seconds'] / steps * 1e3:.0f} ms/step "
                    f"(loop {rs[-1]['loop_seconds'] / base['loop_seconds'] - 1:+.1%}, "
                    f"run {rs[-1]['whole_seconds'] / base['whole_seconds'] - 1:+.1%})"
                    for n, rs in runs.items()
                )
            )
    out["load_avg_1m_after"] = os.getloadavg()[0]
    base = runs[variants[0].name]
    for name, rs in runs.items():
        row: dict[str, Any] = {}
        for what in ("loop", "whole"):
            ratios = [r[f"{what}_seconds"] / b[f"{what}_seconds"] - 1 for r, b in zip(rs, base, strict=True)]
            row[f"slowdown_{what}"] = (
                sum(r[f"{what}_seconds"] for r in rs) / sum(b[f"{what}_seconds"] for b in base) - 1
            )
            row[f"slowdown_{what}_per_round"] = ratios
            row[f"slowdown_{what}_median_round"] = float(np.median(ratios))
        row["cpu_overhead"] = sum(r["cpu_seconds"] for r in rs) / sum(b["cpu_seconds"] for b in base) - 1
        row["step_seconds"] = sum(r["loop_seconds"] for r in rs) / (rounds * steps)
        row["run_seconds"] = sum(r["whole_seconds"] for r in rs) / rounds
        row["tail_seconds"] = sum(r["tail_seconds"] for r in rs) / rounds
        row["setup_seconds"] = sum(r["setup_seconds"] for r in rs) / rounds
        # Older results (and the README) call the whole-run figure "slowdown".
        row["slowdown"] = row["slowdown_whole"]
        row["slowdown_median_round"] = row["slowdown_whole_median_round"]
        for k in _SUMMED:
            if k in rs[0]:
                row[k] = sum(r[k] for r in rs)
        if "mode" in rs[0]:
            row["mode"] = rs[0]["mode"]  # the capture mode the pipeline ran in
        if "stored_bytes" in rs[0] and "steps" not in rs[0]:
            row["stored_bytes_per_step"] = row["stored_bytes"] / (rounds * steps)
        out[name] = row
    for name in ("netlapse", "netlapse-thread"):
        nl = out.get(name)
        if nl is None:
            continue
        snaps = nl["steps"]
        train_s = sum(r["loop_seconds"] for r in runs[name])
        nl["writer_seconds_per_snapshot"] = (nl["encode_seconds"] + nl["commit_seconds"]) / snaps
        nl["encode_seconds_per_snapshot"] = nl["encode_seconds"] / snaps
        nl["commit_seconds_per_snapshot"] = nl["commit_seconds"] / snaps
        nl["writer_cpu_seconds_per_snapshot"] = nl["writer_cpu_seconds"] / snaps
        nl["wait_fraction"] = nl["wait_seconds"] / train_s
        nl["copy_seconds_per_snapshot"] = nl["copy_seconds"] / snaps
        nl["bytes_per_snapshot"] = nl["stored_bytes"] / snaps
        nl["ratio"] = nl["stored_bytes"] / nl["raw_bytes"]
    return out


def bench_paired_blocks(
    cycles: int,
    block: int,
    batch: int,
    log: Callable[[str], None],
    variants: Sequence[type[NetlapseVariant]] = (),
) -> dict[str, Any]:
    """The cost of capture with the drift between runs taken out: one continuous paper-cnn run (SGD, torch
    on every core) in blocks of ``block`` steps. Each cycle runs one block per arm - capture off, then each
    netlapse variant in ``variants`` (default: the settings' mode, then the writer-thread mode) - in a
    palindrome (off, A, B, B, A, off), so a load that drifts during the cycle weighs on every arm alike. An
    "on" block ends when its last snapshot is committed, so a writer still busy after the block's last step
    counts. Slowdown of an arm = its blocks' time / the "off" blocks' time - 1; per cycle too. Runs of their
    own on this VM scatter by +-15-20 % (the host's load drifts between them); blocks seconds apart in one
    process see the same model, data, allocator and threads."""
    variants = list(variants) or [NetlapseVariant, NetlapseThreadVariant]
    names = [v.name for v in variants]
    data = load_dataset("mnist-10k", settings())
    model, opt = model_and_opt("paper-cnn", SGD)
    it = batches(data.train_x, data.train_y, batch, 0)
    order = ["off", *names, *reversed(names), "off"]
    times: dict[str, list[float]] = {a: [] for a in ["off", *names]}
    per_cycle: dict[str, list[float]] = {n: [] for n in names}
    with tempfile.TemporaryDirectory(prefix="netlapse-bench-") as tmp:
        recs = {}
        for v in variants:  # each captures step 0 into a store of its own
            recs[v.name] = v(model, LocalStore(Path(tmp) / v.name / "store"), Path(tmp) / v.name)
        for _ in range(3):  # untimed: first-call overheads
            xb, yb = next(it)
            train_step(model, opt, xb, yb)
        step = 3
        for c in range(cycles):
            cyc = dict.fromkeys(times, 0.0)
            for arm in order:
                for r in recs.values():
                    r.drain()  # the previous block's snapshots, untimed
                rec = recs.get(arm)
                t0 = time.perf_counter()
                for _ in range(block):
                    xb, yb = next(it)
                    train_step(model, opt, xb, yb)
                    step += 1
                    if rec is not None:
                        rec.hook(step)
                if rec is not None:
                    rec.drain()
                dt = time.perf_counter() - t0
                times[arm].append(dt)
                cyc[arm] += dt
            for n in names:
                per_cycle[n].append(cyc[n] / cyc["off"] - 1)
            log(
                f"  cycle {c + 1}/{cycles} (load {os.getloadavg()[0]:.1f}): "
                + ", ".join(f"{n} {per_cycle[n][-1]:+.1%}" for n in names)
            )
        stats = {n: r.close() for n, r in recs.items()}
    off = sum(times["off"])
    arms = {}
    for n in names:
        st = stats[n]
        arms[n] = {
            "mode": st["mode"],
            "slowdown": sum(times[n]) / off - 1,
            "slowdown_per_cycle": per_cycle[n],
            "slowdown_median_cycle": float(np.median(per_cycle[n])),
            "step_seconds": sum(times[n]) / (len(times[n]) * block),
            "writer_cpu_seconds_per_snapshot": st["writer_cpu_seconds"] / max(1, st["steps"]),
            "copy_seconds_per_snapshot": st["copy_seconds"] / max(1, st["steps"]),
            "wait_seconds": st["wait_seconds"],
            "snapshots": st["steps"],
        }
    return {
        "what": "one continuous paper-cnn run, blocks of steps per arm in the order " + ", ".join(order),
        "cycles": cycles,
        "block_steps": block,
        "batch_size": batch,
        "torch_threads": torch.get_num_threads(),
        "step_seconds_off": off / (len(times["off"]) * block),
        "arms": arms,
    }


# --- (2) + (5): bytes per snapshot, compaction, lossy, writer throughput ------------------------------------------


def residual_entropy_ratio(snaps: list[dict[str, np.ndarray]]) -> float:
    """Order-0 entropy of the best per-tensor residual (previous value or linear extrapolation, in ULPs),
    as a fraction of raw: what any memoryless coder of these residuals needs at least."""
    bits = raw = 0.0
    for t in range(2, len(snaps)):
        for name, x in snaps[t].items():
            m = [s[name].reshape(-1).view(np.int32) for s in (snaps[t], snaps[t - 1], snaps[t - 2])]
            m = [a ^ ((a >> 31) & 0x7FFFFFFF) for a in m]
            best = None
            for r in (m[0] - m[1], m[0] - 2 * m[1] + m[2]):
                _, c = np.unique(r, return_counts=True)
                p = c / c.sum()
                h = float(-(p * np.log2(p)).sum()) * r.size
                best = h if best is None else min(best, h)
            assert best is not None
            bits += best
            raw += x.nbytes * 8
    return bits / raw


def bench_ratio(opt: dict[str, Any], steps: int, batch: int, rel_errors: tuple[float, ...]) -> dict[str, Any]:
    """Train paper-cnn with ``opt``; store every step lossless and lossy; compact; check the lossy error."""
    data = load_dataset("mnist-10k", settings())
    model, o = model_and_opt("paper-cnn", opt)
    it = batches(data.train_x, data.train_y, batch, 1)
    s = settings()
    infos = capturable_tensors(model)
    snaps = []
    out: dict[str, Any] = {"optimizer": opt, "steps": steps + 1}
    with tempfile.TemporaryDirectory(prefix="netlapse-bench-") as tmp:
        store = LocalStore(Path(tmp) / "store")
        ll = TapeWriter(store, "ll/", infos, zstd_level=s.zstd_level, keyframe_interval=s.keyframe_interval)
        lossy = {
            rel: TapeWriter(
                store,
                f"lossy{i}/",
                infos,
                zstd_level=s.zstd_level,
                keyframe_interval=s.keyframe_interval,
                lossy_rel_error=rel,
            )
            for i, rel in enumerate(rel_errors)
        }
        for step in range(steps + 1):
            if step:
                xb, yb = next(it)
                train_step(model, o, xb, yb)
            snap = float_state(model)
            snaps.append(snap)
            ll.append(step, snap)
            for lw in lossy.values():
                lw.append(step, snap)
        ll.close()
        for lw in lossy.values():
            lw.close()
        out["raw_bytes_per_snapshot"] = ll.raw_bytes / (steps + 1)
        out["ingest_ratio"] = ll.stored_bytes / ll.raw_bytes
        t0 = time.perf_counter()
        rep = compact_tape(store, "ll/", group_steps=s.compact_group_steps, unit_steps=s.compact_unit_steps)
        out["compaction_seconds"] = time.perf_counter() - t0
        r = TapeReader(store, "ll/")
        out["compacted_ratio"] = r.stored_bytes / r.raw_bytes
        out["compaction"] = {k: v for k, v in rep.to_json().items() if k != "unit_keys"}
        exact = all(
            np.array_equal(r.read(n, st).view(np.uint32), snaps[st][n].view(np.uint32))
            for st in range(0, steps + 1, max(1, steps // 8))
            for n in snaps[0]
        )
        out["compacted_bit_exact_sample"] = exact
        out["entropy_floor_ratio"] = residual_entropy_ratio(snaps[-6:])
        out["lossy"] = []
        for rel, lw in lossy.items():
            lr = TapeReader(store, lw.prefix)
            worst = 0.0
            k = lw.keyframe_interval
            for st in range(steps + 1):
                key = snaps[st - st % k]
                for n, want in snaps[st].items():
                    scale = float(np.abs(key[n]).max()) or 1.0
                    err = float(np.abs(lr.read(n, st).astype(np.float64) - want.astype(np.float64)).max())
                    worst = max(worst, err / scale)
            out["lossy"].append(
                {
                    "rel_error_setting": rel,
                    "keyframe_interval": k,
                    "ratio": lw.stored_bytes / lw.raw_bytes,
                    "compression": lw.raw_bytes / lw.stored_bytes,
                    "max_abs_error_over_scale": worst,
                }
            )
    out["snapshots"] = snaps  # for the writer microbenchmark; dropped before JSON
    return out


def bench_writer(snaps: list[dict[str, np.ndarray]]) -> dict[str, Any]:
    """Writer throughput with nothing else running: MB/s of raw snapshot data encoded and stored."""
    out: dict[str, Any] = {}
    infos = None
    s = settings()
    for threads in (1, 2):
        with tempfile.TemporaryDirectory(prefix="netlapse-bench-") as tmp:
            store = LocalStore(Path(tmp) / "store")
            if infos is None:
                from netlapse.core.tape import TensorInfo

                infos = [TensorInfo(n, a.shape, str(a.dtype)) for n, a in snaps[0].items()]
            w = TapeWriter(
                store,
                "w/",
                infos,
                zstd_level=s.zstd_level,
                keyframe_interval=s.keyframe_interval,
                threads=threads,
            )
            t0 = time.perf_counter()
            for i, snap in enumerate(snaps):
                w.append(i, snap)
            w.close()
            dt = time.perf_counter() - t0
            out[f"threads_{threads}"] = {
                "mb_per_s": w.raw_bytes / dt / 1e6,
                "ms_per_snapshot": dt / len(snaps) * 1e3,
                "encode_ms_per_snapshot": w.encode_seconds / len(snaps) * 1e3,
                "commit_ms_per_snapshot": w.commit_seconds / len(snaps) * 1e3,
            }
    return out


# --- (6): a ~25M-parameter CNN, one process per variant ----------------------------------------------------------


def wide_worker(mode: str, steps: int, batch: int) -> dict[str, Any]:
    """Train wide-cnn for ``steps`` (plus one untimed) capturing every step (or not); report time and peak RSS."""
    torch.set_num_threads(os.cpu_count() or 1)
    data = load_dataset("mnist-10k", settings())
    model, opt = model_and_opt("wide-cnn", SGD)
    it = batches(data.train_x, data.train_y, batch, 0)
    params = sum(p.numel() for p in model.parameters())
    out: dict[str, Any] = {"mode": mode, "params": params, "batch_size": batch, "steps": steps}
    with tempfile.TemporaryDirectory(prefix="netlapse-bench-") as tmp:
        store = LocalStore(Path(tmp) / "store")
        variant: Variant = (
            NetlapseVariant(model, store, Path(tmp))
            if mode == "capture"
            else Variant(model, store, Path(tmp))
        )
        xb, yb = next(it)
        train_step(model, opt, xb, yb)
        variant.hook(1)
        variant.drain()
        t0 = time.perf_counter()
        for step in range(2, steps + 2):
            xb, yb = next(it)
            train_step(model, opt, xb, yb)
            variant.hook(step)
        variant.drain()
        out["seconds"] = time.perf_counter() - t0
        out.update(variant.close())
    out["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="capture benchmark worker")
    ap.add_argument("--wide", choices=["none", "capture"], required=True)
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--batch", type=int, default=16)
    args = ap.parse_args(argv)
    print(json.dumps(wide_worker(args.wide, args.steps, args.batch)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
