"""Train a small CNN through the real capture pipeline into both store backends; read every value back."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from netlapse.core.capture import CapturePipeline, capturable_tensors
from netlapse.core.store import LocalStore, Store
from netlapse.core.tape import TapeReader, TapeWriter
from tests.integration.conftest_s3 import S3Server, s3_server  # noqa: F401  (fixture)

pytestmark = pytest.mark.integration

STEPS = 30


class TinyCNN(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 4, 3)
        self.fc = nn.Linear(4 * 12 * 12, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.relu(self.conv1(x)).flatten(1))


@pytest.fixture(params=["local", "s3"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    if request.param == "local":
        yield LocalStore(tmp_path / "store")
    else:
        server: S3Server = request.getfixturevalue("s3_server")
        yield server.store()


def test_every_captured_tensor_reads_back_bit_exact(store: Store) -> None:
    torch.manual_seed(0)
    model = TinyCNN()
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    x = torch.randn(64, 1, 14, 14)
    y = torch.randint(0, 10, (64,))

    def float_state() -> dict[str, np.ndarray]:
        return {k: v.detach().numpy().copy() for k, v in model.state_dict().items() if v.is_floating_point()}

    commits: list[int] = []
    writer = TapeWriter(
        store,
        "runs/cnn/tape/",
        capturable_tensors(model),
        segment_target_bytes=64 * 1024,
        segment_max_steps=8,
        on_commit=commits.append,
    )
    pipe = CapturePipeline(model, writer, buffers=3)
    expected = {0: float_state()}
    pipe.capture(0)
    for step in range(1, STEPS + 1):
        idx = torch.randint(0, 64, (16,))
        loss = nn.functional.cross_entropy(model(x[idx]), y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
        expected[step] = float_state()
        pipe.capture(step)
    stats = pipe.close()

    assert stats.steps == STEPS + 1
    r = TapeReader(store, "runs/cnn/tape/")
    assert r.steps() == list(range(STEPS + 1))
    assert r.complete
    assert [t.name for t in r.tensors()] == ["conv1.weight", "conv1.bias", "fc.weight", "fc.bias"]
    assert commits == [s["last_step"] for s in r.manifest["segments"]] and commits[-1] == STEPS
    assert stats.stored_bytes == r.stored_bytes and stats.raw_bytes == r.raw_bytes
    for step, snap in expected.items():
        for name, want in snap.items():
            got = r.read(name, step)
            assert got.shape == want.shape and got.dtype == np.float32
            assert np.array_equal(got.view(np.uint32), want.view(np.uint32)), (name, step)
    # Training changed the weights, so a stale or shared buffer could not pass the loop above.
    assert not np.array_equal(expected[0]["fc.weight"], expected[STEPS]["fc.weight"])
    steps, values = r.trajectory("conv1.weight", [0, 35])
    assert steps == list(range(STEPS + 1))
    want_traj = np.stack([expected[s]["conv1.weight"].reshape(-1)[[0, 35]] for s in steps])
    assert np.array_equal(values.view(np.uint32), want_traj.view(np.uint32))
