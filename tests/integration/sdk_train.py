"""A user's own training loop recorded with the SDK, run as a separate process by tests/integration/test_sdk.py.

A model no preset can express (a residual block with BatchNorm), Adam with two parameter groups, a frozen
parameter, gradient accumulation (two micro-batches per optimizer step) and AMP's GradScaler, which skips the
optimizer step whose gradients hold an inf (``--skip-at``). After every real optimizer step the loop saves
its own copy of every floating-point tensor of the state dict (``DIR/step{k}.npz``) and the metrics it logged
(``DIR/logged.json``), so the test can compare what the server stores with what the loop held.

    python -m tests.integration.sdk_train --out DIR --steps 10 [--offline RUNS_DIR] [--sleep 0.2]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

import netlapse
from netlapse.core.tape import TapeOptions


class ResidualBlock(nn.Module):
    def __init__(self, c: int) -> None:
        super().__init__()
        self.a = nn.Conv2d(c, c, 3, padding=1, bias=False)
        self.bn_a = nn.BatchNorm2d(c)
        self.b = nn.Conv2d(c, c, 3, padding=1, bias=False)
        self.bn_b = nn.BatchNorm2d(c)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(x + self.bn_b(self.b(torch.relu(self.bn_a(self.a(x))))))


class ResNetTiny(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(1, 4, 3, padding=1)
        self.block = ResidualBlock(4)
        self.head = nn.Linear(4 * 8 * 8, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.block(torch.relu(self.stem(x))).flatten(1))


def state_copy(model: nn.Module) -> dict[str, np.ndarray]:
    return {
        k: v.detach().cpu().numpy().copy() for k, v in model.state_dict().items() if v.is_floating_point()
    }


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    ap.add_argument("--steps", type=int, default=10, help="loop iterations (one of them may be skipped)")
    ap.add_argument("--skip-at", type=int, default=3, help="iteration whose step GradScaler skips (-1: none)")
    ap.add_argument("--offline", default=None, help="record offline into this directory")
    ap.add_argument("--sleep", type=float, default=0.0, help="seconds to wait after each step")
    ap.add_argument("--segment-steps", type=int, default=4)
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(1)
    model = ResNetTiny()
    model.stem.bias.requires_grad_(False)  # frozen: recorded all the same
    opt = torch.optim.Adam(
        [
            {
                "params": [
                    p for n, p in model.named_parameters() if not n.startswith("head") and p.requires_grad
                ]
            },
            {"params": list(model.head.parameters()), "lr": 5e-3},
        ],
        lr=1e-2,
    )
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**4)
    x_eval = torch.randn(30, 1, 8, 8, generator=gen)
    y_eval = torch.arange(30) % 3

    run = netlapse.init(name="sdk-resnet", config={"lr": 1e-2, "steps": args.steps}, dir=args.offline)
    info = {"run_id": run.id, "path": str(run.path) if run.path else None}
    (out / "run.json").write_text(json.dumps(info))
    run.watch(
        model,
        opt,
        buffers=True,
        example_input=x_eval[:2],
        options=TapeOptions(segment_max_steps=args.segment_steps),
    )
    run.eval_data(x_eval, y_eval)
    np.savez(out / "step0.npz", **state_copy(model))
    logged: list[dict[str, float]] = []
    step = 0
    for it in range(args.steps):
        loss_sum = 0.0
        for _ in range(2):  # gradient accumulation: two micro-batches, one optimizer step
            x = torch.randn(16, 1, 8, 8, generator=gen)
            y = torch.randint(0, 3, (16,), generator=gen)
            loss = nn.functional.cross_entropy(model(x), y) / 2
            scaler.scale(loss).backward()
            loss_sum += float(loss.detach())
        if it == args.skip_at:
            next(model.block.a.parameters()).grad[0, 0, 0, 0] = float("inf")  # GradScaler skips this step
        scale = scaler.get_scale()
        scaler.step(opt)
        scaler.update()
        opt.zero_grad(set_to_none=True)
        if scaler.get_scale() < scale:  # skipped: no optimizer step, no snapshot, nothing logged
            continue
        step += 1
        np.savez(out / f"step{step}.npz", **state_copy(model))
        run.log({"loss": loss_sum, "iteration": it})
        logged.append({"step": step, "loss": loss_sum, "iteration": it})
        (out / "logged.json").write_text(json.dumps(logged))
        if args.sleep:
            time.sleep(args.sleep)
    run.finish()
    info.update({"steps": step, "status": run.status})
    (out / "run.json").write_text(json.dumps(info))
    print(json.dumps(info))
    return 0


if __name__ == "__main__":
    sys.exit(main())
