"""Runs written straight into a store (record + tape), for states the trainer would not produce on purpose."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from netlapse.core.capture import capturable_tensors
from netlapse.core.datasets import load_dataset
from netlapse.core.modelspec import PRESETS, build_model
from netlapse.core.runs import RunRepository
from netlapse.core.schemas import CaptureConfig, RunRecord, TrainingConfig, tape_prefix
from netlapse.core.settings import Settings
from netlapse.core.store import Store
from netlapse.core.tape import TapeWriter

DEAD_FILTER = 2
LR = 0.1


def write_dead_filter_run(store: Store, run_id: str, steps: int = 6) -> list[dict[str, torch.Tensor]]:
    """tiny-cnn on synthetic, trained with plain SGD (lr 0.1, no momentum), every step captured; conv1's filter 2
    starts with bias −100, so its ReLU output is 0 for every input (inputs are in [0, 1], its 9 weights
    |w| < 1/3): no gradient ever reaches it and its parameters never change. Returns the captured states."""
    torch.manual_seed(0)
    spec = PRESETS["tiny-cnn"].spec
    model = build_model(spec)
    with torch.no_grad():
        model.conv1.bias[DEAD_FILTER] = -100.0
    RunRepository(store).save(
        RunRecord(
            id=run_id,
            name="dead-filter",
            model=spec,
            dataset="synthetic",
            training=TrainingConfig(epochs=1, batch_size=64, optimizer="sgd", lr=LR, momentum=0.0, seed=0),
            capture=CaptureConfig(),
            status="succeeded",
            tape_complete=True,
        )
    )
    writer = TapeWriter(store, tape_prefix(run_id), capturable_tensors(model), segment_max_steps=4)
    data = load_dataset("synthetic", Settings())
    opt = torch.optim.SGD(model.parameters(), lr=LR)
    states = []
    for step in range(steps + 1):
        if step:
            model.train()
            idx = torch.arange((step - 1) * 64, step * 64)
            loss = F.cross_entropy(model(data.train_x[idx]), data.train_y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
        sd = {k: v.detach().clone() for k, v in model.state_dict().items() if v.is_floating_point()}
        states.append(sd)
        writer.append(step, {k: v.numpy() for k, v in sd.items()})
    writer.close()
    return states
