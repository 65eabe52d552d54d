"""What does a CPU-millisecond of the writer cost the training loop, against a millisecond of plain compute or of
memory traffic? (docs/performance.md, "Capture slowdown (CPU), 2026-12-02 evening")

    NETLAPSE_DATA_DIR=.data .venv/bin/python -m bench.explore_interference [--cycles 16]

One continuous paper-cnn run (SGD, batch 128, torch on every core) in blocks of 8 steps, each block either
without recording ("off") or with one of three side loads started after every step, each on a thread of its
own at nice +10 like the writer:

- ``netlapse``: the capture pipeline (the bench's NetlapseVariant), writing to a local directory;
- ``netlapse-nofsync`` / ``-buffered`` / ``-tmpfs`` / ``-nodisk``: the same with a local store that never
  fsyncs, one that writes through the page cache (no O_DIRECT), one in /dev/shm, and bench_codec's NullStore
  (encoded and assembled, nothing written): what the store's part of the capture costs training;
- ``compute``: SHA-256 over a 16 KiB buffer (stays in L1; no memory traffic) for as much thread CPU time as
  the writer has spent per snapshot so far in this run;
- ``memory``: numpy copies and adds over two 12 MB arrays (streams through L3 and DRAM), for the same time.

Order per cycle: off, every load, every load in reverse, off; every block ends when its side
work is done. The cost of each load is its blocks' time over the "off" blocks' time, minus one; divided by the
CPU it used per step it gives the training time lost per millisecond of side work. If the writer's cost per
millisecond is near the compute load's, the capture costs what its CPU time costs and only a cheaper coder helps;
if it is near the memory load's, its memory traffic (and the cache it takes from training) is the lever.
A second part (``other_vcpu``) checks what the VM's two vCPUs share: torch on one thread pinned to CPU 0, the
compute or memory load busy on CPU 1. Writes bench/results/interference.json.
"""

from __future__ import annotations

import argparse
import functools
import hashlib
import json
import os
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

from bench.bench_capture import SGD, NetlapseVariant, batches, model_and_opt, settings, train_step
from bench.bench_codec import NullStore
from netlapse.core.datasets import load_dataset
from netlapse.core.store import LocalStore

OUT = Path(__file__).resolve().parent / "results" / "interference.json"
BLOCK, BATCH = 8, 128


class NoFsyncStore(LocalStore):
    """A LocalStore whose commit objects are not fsynced (nor what was written before them)."""

    def _write(self, path: Path, data: bytes, durable: bool) -> None:
        super()._write(path, data, False)

    def _sync_pending(self) -> None:
        with self._unsynced_lock:
            self._unsynced.clear()


def _buffered_store(root: Path) -> LocalStore:
    s = LocalStore(root)
    s._direct = False  # every write through the page cache
    return s


# name -> store, given (a directory on the disk, one in /dev/shm)
STORES: dict[str, Callable[[Path, Path], LocalStore]] = {
    "nofsync": lambda disk, shm: NoFsyncStore(disk / "nofsync"),
    "buffered": lambda disk, shm: _buffered_store(disk / "buffered"),
    "tmpfs": lambda disk, shm: LocalStore(shm / "tmpfs"),
    "nodisk": lambda disk, shm: NullStore(disk / "nodisk"),
}


class Work:
    """One unit (~1 ms) of a kind of side work: "compute" (SHA-256 of a 16 KiB buffer: L1, no memory traffic) or
    "memory" (numpy copy + add over a quarter of two 12 MB arrays in turn: streams through L3 and DRAM)."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._buf = os.urandom(16384)
        self._a = np.ones(3_000_000, np.float32)
        self._b = np.empty_like(self._a)
        self._part = 0

    def __call__(self) -> None:
        if self.kind == "compute":
            for _ in range(8):
                hashlib.sha256(self._buf).digest()
        else:
            q = len(self._a) // 4
            sl = slice(self._part * q, (self._part + 1) * q)
            self._part = (self._part + 1) % 4
            np.copyto(self._b[sl], self._a[sl])
            np.add(self._a[sl], self._b[sl], out=self._b[sl])


class SideLoad:
    """A thread that, per step handed to it, burns ``budget()`` seconds of its own CPU time on one kind of work."""

    def __init__(self, kind: str, budget: Any) -> None:
        self.kind, self.budget = kind, budget
        self.cpu = 0.0
        self.jobs = 0
        self._pending = 0
        self._cv = threading.Condition()
        self._work = Work(kind)
        threading.Thread(target=self._run, daemon=True, name=f"side-{kind}").start()

    def _run(self) -> None:
        os.nice(10)  # the writer's niceness (Settings.capture_nice)
        while True:
            with self._cv:
                while not self._pending:
                    self._cv.wait()
            t0 = time.thread_time()
            want = self.budget()
            while time.thread_time() - t0 < want:
                self._work()
            with self._cv:
                self.cpu += time.thread_time() - t0
                self.jobs += 1
                self._pending -= 1
                self._cv.notify_all()

    def hook(self, step: int) -> None:
        with self._cv:
            self._pending += 1
            self._cv.notify_all()

    def drain(self) -> None:
        with self._cv:
            while self._pending:
                self._cv.wait()


def _training() -> tuple[torch.nn.Module, torch.optim.Optimizer, Iterator[tuple[torch.Tensor, torch.Tensor]]]:
    """paper-cnn (SGD) and its batches, three untimed steps taken (first-call overheads)."""
    data = load_dataset("mnist-10k", settings())
    model, opt = model_and_opt("paper-cnn", SGD)
    it = batches(data.train_x, data.train_y, BATCH, 0)
    for _ in range(3):
        xb, yb = next(it)
        train_step(model, opt, xb, yb)
    return model, opt, it


def _block(train: tuple[Any, Any, Any], steps: int, after_step: Callable[[], None] | None = None) -> float:
    """Seconds for ``steps`` training steps, ``after_step`` called after each."""
    model, opt, it = train
    t0 = time.perf_counter()
    for _ in range(steps):
        xb, yb = next(it)
        train_step(model, opt, xb, yb)
        if after_step is not None:
            after_step()
    return time.perf_counter() - t0


def _costs(times: dict[str, list[float]], cycles: int) -> dict[str, dict[str, float]]:
    """Each load's slowdown over the "off" blocks, in all and per cycle (every cycle times "off" and each load
    twice, in that order of appearance)."""
    off = sum(times["off"])
    out = {}
    for n, t in times.items():
        if n == "off":
            continue
        per_cycle = [
            (t[2 * k] + t[2 * k + 1]) / (times["off"][2 * k] + times["off"][2 * k + 1]) - 1
            for k in range(cycles)
        ]
        out[n] = {"slowdown": sum(t) / off - 1, "slowdown_median_cycle": float(np.median(per_cycle))}
    return out


def run(cycles: int, log: Any = print) -> dict[str, Any]:
    with (
        tempfile.TemporaryDirectory(prefix="netlapse-bench-") as tmp,
        tempfile.TemporaryDirectory(prefix="netlapse-bench-", dir="/dev/shm") as shm,
    ):
        train = _training()
        model = train[0]
        nl = NetlapseVariant(model, LocalStore(Path(tmp) / "store"), Path(tmp))

        def writer_ms() -> float:  # the writer's CPU per snapshot so far (a first guess before it has any)
            st = nl.pipe.stats
            return st.writer_cpu_seconds / st.steps if st.steps > 1 else 0.004

        loads: dict[str, Any] = {
            "netlapse": nl,
            **{
                f"netlapse-{k}": NetlapseVariant(model, make(Path(tmp), Path(shm)), Path(tmp))
                for k, make in STORES.items()
            },
            "compute": SideLoad("compute", writer_ms),
            "memory": SideLoad("memory", writer_ms),
        }
        names = list(loads)
        times: dict[str, list[float]] = {n: [] for n in ["off", *names]}
        cpu0 = {n: 0.0 for n in names}
        step = 0

        def after_step(load: Any) -> None:  # the step number advances in "off" blocks too
            nonlocal step
            step += 1
            if load is not None:
                load.hook(step)

        for c in range(cycles):
            for name in ["off", *names, *names[::-1], "off"]:
                for ld in loads.values():
                    ld.drain()
                load = loads.get(name)
                t0 = time.perf_counter()
                _block(train, BLOCK, functools.partial(after_step, load))
                if load is not None:
                    load.drain()  # the block ends when its side work is done
                times[name].append(time.perf_counter() - t0)
            off = sum(times["off"][-2:])
            log(
                f"  cycle {c + 1}/{cycles} (load {os.getloadavg()[0]:.1f}, off {off / (2 * BLOCK) * 1e3:.0f} "
                "ms/step): " + " ".join(f"{n} {sum(times[n][-2:]) / off - 1:+.1%}" for n in names)
            )
        for n in names:
            if not isinstance(loads[n], NetlapseVariant):
                continue
            st = loads[n].close()
            cpu0[n] = st["writer_cpu_seconds"] / max(1, st["steps"])
        for n in ("compute", "memory"):
            cpu0[n] = loads[n].cpu / max(1, loads[n].jobs)
    off = sum(times["off"])
    step_off = off / (len(times["off"]) * BLOCK)
    out: dict[str, Any] = {
        "what": "one paper-cnn run, 8-step blocks with no side load or one of the side loads (see the docstring)",
        "cycles": cycles,
        "batch_size": BATCH,
        "torch_threads": torch.get_num_threads(),
        "step_seconds_off": step_off,
        "loads": {},
    }
    for n, cost in _costs(times, cycles).items():
        out["loads"][n] = {
            **cost,
            "side_cpu_ms_per_step": cpu0[n] * 1e3,
            # training time lost per unit of side CPU time (1.0: as if the side work ran on the loop's thread)
            "loop_seconds_lost_per_side_cpu_second": cost["slowdown"] * step_off / cpu0[n]
            if cpu0[n]
            else None,
        }
    return out


def other_vcpu(cycles: int, log: Any = print) -> dict[str, Any]:
    """Does work on the other vCPU slow a loop that has its own? Torch on one thread, the loop pinned to CPU 0, a
    side thread pinned to CPU 1 busy with compute or memory work during "on" blocks of 6 steps (off, compute,
    memory, memory, compute, off per cycle). On separate physical cores with their own caches and bandwidth to
    spare this is ~0; what it shows is what the two vCPUs of this VM share."""
    torch.set_num_threads(1)
    os.sched_setaffinity(0, {0})  # this thread only (Linux: per thread)
    on = {k: threading.Event() for k in ("compute", "memory")}

    def spin(kind: str) -> None:
        os.sched_setaffinity(0, {1})
        work = Work(kind)
        while True:
            on[kind].wait()
            work()

    for k in on:
        threading.Thread(target=spin, args=(k,), daemon=True, name=f"other-{k}").start()
    train = _training()
    times: dict[str, list[float]] = {"off": [], "compute": [], "memory": []}
    for c in range(cycles):
        for name in ("off", "compute", "memory", "memory", "compute", "off"):
            if name != "off":
                on[name].set()
            time.sleep(0.05)
            times[name].append(_block(train, 6))
            for e in on.values():
                e.clear()
        log(
            f"  other vCPU, cycle {c + 1}/{cycles}: "
            + " ".join(
                f"{n} {sum(times[n][-2:]) / sum(times['off'][-2:]) - 1:+.1%}" for n in ("compute", "memory")
            )
        )
    off = sum(times["off"])
    out: dict[str, Any] = {"step_seconds_off": off / (len(times["off"]) * 6), "cycles": cycles}
    out.update(_costs(times, cycles))
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cycles", type=int, default=16)
    ap.add_argument("--other-vcpu-cycles", type=int, default=8, help="0: skip that part")
    ap.add_argument("--out", default=str(OUT))
    args = ap.parse_args(argv)
    t0 = time.perf_counter()
    out = run(args.cycles)
    if args.other_vcpu_cycles:
        out["other_vcpu_busy"] = other_vcpu(args.other_vcpu_cycles)
    out["wall_seconds"] = time.perf_counter() - t0
    out["recorded_at"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    Path(args.out).write_text(json.dumps(out, indent=2) + "\n")
    for n, r in out["loads"].items():
        print(
            f"{n:9s} {r['slowdown']:+.2%} (median cycle {r['slowdown_median_cycle']:+.2%}), "
            f"{r['side_cpu_ms_per_step']:.2f} ms side CPU per step, "
            f"{r['loop_seconds_lost_per_side_cpu_second']:.2f} s lost per side CPU s"
        )
    if "other_vcpu_busy" in out:
        o = out["other_vcpu_busy"]
        print(
            f"one torch thread on CPU 0, CPU 1 busy: compute {o['compute']['slowdown']:+.2%}, "
            f"memory {o['memory']['slowdown']:+.2%} ({o['step_seconds_off'] * 1e3:.0f} ms/step off)"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
