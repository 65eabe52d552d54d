"""The SDK's capture overhead on a plain training loop, next to the trainer's own pipeline.

One plain loop (paper-cnn, 1.2 M parameters, batches of 128 of MNIST-shaped inputs, SGD with momentum) of
``--steps`` optimizer steps per round, timed twice: the loop itself (``loop``: until the last step returns) and
the whole run, *including* the end of recording (``whole``: setup, drain, close / finish: what a user waits
for), in these variants, interleaved round by round so machine noise hits them alike:

- ``none``: the loop alone;
- ``tensorboard``: TensorBoard ``add_histogram`` of every parameter every step (a peer's cheapest option);
- ``histc``: a ``wandb.watch``-style 64-bin ``torch.histc`` of every parameter every step (kept in memory);
- ``trainer``: what the server's trainer does — ``CapturePipeline`` + ``TapeWriter`` into a local store;
- ``sdk-offline``: ``netlapse.init(dir=...)`` + ``run.watch`` (the same pipeline, written to a directory);
- ``sdk-online``: ``netlapse.init(server=...)`` + ``run.watch``: encoding, upload queue and HTTP client in the
  training process; the server is an in-process stand-in that checks each upload's SHA-256 and keeps nothing
  (``--server URL`` uses a real one instead, e.g. a ``make run`` on another machine).

    python -m bench.bench_sdk [--steps 40] [--rounds 5] [--out bench/results/sdk.json]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import torch
import torch.nn.functional as F

import netlapse
from netlapse.core.capture import CapturePipeline, capturable_tensors
from netlapse.core.modelspec import PRESETS, build_model
from netlapse.core.store import LocalStore
from netlapse.core.tape import TapeOptions, TapeWriter
from netlapse.sdk.transport import IngestClient


def model_and_opt(seed: int = 0) -> tuple[torch.nn.Module, torch.optim.Optimizer]:
    torch.manual_seed(seed)
    model = build_model(PRESETS["paper-cnn"].spec)
    model.train()
    return model, torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)


def fake_ingest(request: httpx.Request) -> httpx.Response:
    """An ingest server that answers like the real one and verifies checksums, storing nothing."""
    path = request.url.path
    if request.method == "PUT":
        assert hashlib.sha256(request.content).hexdigest() == request.headers["x-netlapse-sha256"]
        return httpx.Response(200, json={"stored": True})
    if path.endswith("/api/ingest/runs"):
        run = {"id": "bench0000001", "status": "running"}
        return httpx.Response(
            201, json={"run": run, "created": True, "heartbeat_s": 10, "max_object_bytes": 1 << 26}
        )
    return httpx.Response(200, json={"status": "succeeded"})


class Loop:
    def __init__(self, steps: int) -> None:
        self.steps = steps
        gen = torch.Generator().manual_seed(1)
        self.x = torch.randn(steps, 128, 1, 28, 28, generator=gen)
        self.y = torch.randint(0, 10, (steps, 128), generator=gen)

    def run(self, model: torch.nn.Module, opt: torch.optim.Optimizer, after: Callable[[int], None]) -> None:
        for i in range(self.steps):
            loss = F.cross_entropy(model(self.x[i]), self.y[i])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            after(i + 1)


def round_none(loop: Loop, tmp: Path) -> dict[str, Any]:
    model, opt = model_and_opt()
    t0 = time.perf_counter()
    loop.run(model, opt, lambda s: None)
    t = time.perf_counter() - t0
    return {"seconds": t, "loop_seconds": t}


def round_tensorboard(loop: Loop, tmp: Path) -> dict[str, Any]:
    from torch.utils.tensorboard import SummaryWriter

    model, opt = model_and_opt()
    t0 = time.perf_counter()
    sw = SummaryWriter(str(tmp / "tb"))
    params = list(model.named_parameters())

    def hist(step: int) -> None:
        for name, p in params:
            sw.add_histogram(name, p.detach(), step)

    t1 = time.perf_counter()
    loop.run(model, opt, hist)
    t2 = time.perf_counter()
    sw.close()
    return {"seconds": time.perf_counter() - t0, "loop_seconds": t2 - t1}


def round_histc(loop: Loop, tmp: Path) -> dict[str, Any]:
    model, opt = model_and_opt()
    kept: list[tuple[torch.Tensor, float, float]] = []
    params = [p for _, p in model.named_parameters()]

    def hist(step: int) -> None:
        with torch.no_grad():
            for p in params:
                t = p.detach()
                lo, hi = float(t.min()), float(t.max())
                kept.append((torch.histc(t, bins=64, min=lo, max=hi).cpu(), lo, hi))

    t0 = time.perf_counter()
    loop.run(model, opt, hist)
    t = time.perf_counter() - t0
    return {"seconds": t, "loop_seconds": t}


def round_trainer(loop: Loop, tmp: Path) -> dict[str, Any]:
    model, opt = model_and_opt()
    t0 = time.perf_counter()
    writer = TapeWriter(
        LocalStore(tmp / "trainer"), "t/", capturable_tensors(model), TapeOptions(thread_nice=10)
    )
    pipe = CapturePipeline(model, writer, buffers=4, nice=10)
    pipe.capture(0)
    t1 = time.perf_counter()
    loop.run(model, opt, pipe.capture)
    t2 = time.perf_counter()
    st = pipe.close()
    return {
        "seconds": time.perf_counter() - t0,
        "loop_seconds": t2 - t1,
        "wait_seconds": st.wait_seconds,
        "stored_bytes": st.stored_bytes,
    }


def round_sdk(loop: Loop, tmp: Path, *, online: bool, server: str | None) -> dict[str, Any]:
    model, opt = model_and_opt()
    t0 = time.perf_counter()
    if online and server is None:
        real = IngestClient.__init__

        def mock_client(self: IngestClient, url: str, token: str | None = None, **kw: Any) -> None:
            real(self, url, token, http=httpx.Client(transport=httpx.MockTransport(fake_ingest)))

        IngestClient.__init__ = mock_client  # type: ignore[method-assign]
        try:
            run = netlapse.init(name="bench", server="http://bench.invalid")
        finally:
            IngestClient.__init__ = real  # type: ignore[method-assign]
    elif online:
        run = netlapse.init(name="bench-sdk", server=server)
    else:
        run = netlapse.init(name="bench", dir=tmp / "sdk")
    run.watch(model, opt, buffers=True)
    t1 = time.perf_counter()
    loop.run(model, opt, lambda s: None)
    t2 = time.perf_counter()
    run.finish()
    st = run.stats
    return {
        "seconds": time.perf_counter() - t0,
        "loop_seconds": t2 - t1,
        "wait_seconds": st.wait_seconds if st else None,
    }


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument(
        "--server", default=None, help="a real netlapse server for sdk-online (default: stand-in)"
    )
    ap.add_argument("--out", default="bench/results/sdk.json")
    args = ap.parse_args()
    loop = Loop(args.steps)
    variants: dict[str, Callable[[Loop, Path], dict[str, Any]]] = {
        "none": round_none,
        "tensorboard": round_tensorboard,
        "histc": round_histc,
        "trainer": round_trainer,
        "sdk-offline": lambda lp, t: round_sdk(lp, t, online=False, server=None),
        "sdk-online": lambda lp, t: round_sdk(lp, t, online=True, server=args.server),
    }
    results: dict[str, list[dict[str, Any]]] = {k: [] for k in variants}
    load_before = os.getloadavg()
    round_none(Loop(3), Path("."))  # warm up torch
    names = list(variants)
    for r in range(args.rounds):
        for name in names[r % len(names) :] + names[: r % len(names)]:  # rotate who goes first
            with tempfile.TemporaryDirectory() as tmp:
                results[name].append(variants[name](loop, Path(tmp)))
        print(
            f"round {r + 1}/{args.rounds} done (load {os.getloadavg()[0]:.1f})", file=sys.stderr, flush=True
        )
    table = {}
    print(f"{'variant':<12} {'ms/step':>9} {'loop':>8} {'whole':>8} {'wait s/round':>13}")
    base = results["none"]
    for name, rounds in results.items():
        per = statistics.median(x["seconds"] for x in rounds) / args.steps
        waits = [x["wait_seconds"] for x in rounds if x.get("wait_seconds") is not None]
        # Each round's ratio to the same round's plain loop (they ran back to back), then the median.
        loop_r = [x["loop_seconds"] / b["loop_seconds"] - 1 for x, b in zip(rounds, base, strict=True)]
        whole_r = [x["seconds"] / b["seconds"] - 1 for x, b in zip(rounds, base, strict=True)]
        row = {
            "ms_per_step": round(per * 1000, 2),
            "slowdown_loop_pct": round(statistics.median(loop_r) * 100, 1),
            "slowdown_whole_pct": round(statistics.median(whole_r) * 100, 1),
            "slowdown_loop_pct_range": [round(min(loop_r) * 100, 1), round(max(loop_r) * 100, 1)],
            "slowdown_whole_pct_range": [round(min(whole_r) * 100, 1), round(max(whole_r) * 100, 1)],
            "slowdown_pct": round(statistics.median(whole_r) * 100, 1),  # the whole run, as before
            "capture_wait_seconds_median": round(statistics.median(waits), 3) if waits else None,
        }
        table[name] = row
        wait = f"{row['capture_wait_seconds_median']:.3f}" if waits else "-"
        print(
            f"{name:<12} {row['ms_per_step']:>9.2f} {row['slowdown_loop_pct']:>7.1f}% "
            f"{row['slowdown_whole_pct']:>7.1f}% {wait:>13}"
        )
    out = {
        "what": "capture overhead on a plain loop: paper-cnn, batch 128, SGD momentum, every step recorded; "
        "slowdowns are medians over rounds of each round's ratio to the plain loop of the same round: "
        "loop = the training steps, whole = until recording is closed (last snapshot committed)",
        "steps_per_round": args.steps,
        "rounds": args.rounds,
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "cpus": os.cpu_count(),
        "load_average_1m_before_after": [round(load_before[0], 2), round(os.getloadavg()[0], 2)],
        "server": args.server or "in-process stand-in (checks SHA-256, stores nothing)",
        "variants": table,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=2) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
