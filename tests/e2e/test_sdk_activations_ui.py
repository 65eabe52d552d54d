"""The Activations view on SDK runs in headless Debian Chromium against the real stack.

Two runs are recorded with the SDK: a user's own residual CNN trained in a separate process with a model program
and evaluation data (tests/integration/sdk_train.py), and one without evaluation data. The scenario lives in
``sdk_activations.e2e.mjs``; screenshots land in ``test-artifacts/e2e-sdk/``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import torch
from torch import nn

import netlapse
from netlapse.cli.stack import Stack
from tests.e2e.test_browser import REPO, _preflight

SCRIPT = Path(__file__).with_name("sdk_activations.e2e.mjs")


def test_activations_view_on_sdk_runs(stack: Stack, artifacts_dir: Path, tmp_path: Path) -> None:
    node = _preflight()
    out = artifacts_dir / "e2e-sdk"
    out.mkdir(parents=True, exist_ok=True)
    server = f"http://127.0.0.1:{stack.api_port}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("NETLAPSE_")}
    loop = tmp_path / "loop"
    subprocess.run(
        [sys.executable, "-m", "tests.integration.sdk_train", "--out", str(loop), "--steps", "4"],
        cwd=REPO,
        env={**env, "NETLAPSE_URL": server},
        check=True,
        capture_output=True,
        timeout=300,
    )
    run_id = json.loads((loop / "run.json").read_text())["run_id"]

    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(), nn.Flatten(), nn.Linear(2 * 6 * 6, 3))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with netlapse.init(name="sdk-no-eval", server=server) as bare:
        bare.watch(model, opt, example_input=torch.randn(2, 1, 8, 8))
        model(torch.randn(4, 1, 8, 8)).sum().backward()
        opt.step()

    proc = subprocess.run(
        [node, str(SCRIPT), server, str(out)],
        cwd=REPO,
        env={**os.environ, "NETLAPSE_E2E_SDK_RUN": run_id, "NETLAPSE_E2E_SDK_BARE_RUN": bare.id},
        capture_output=True,
        text=True,
        timeout=400,
        check=False,
    )
    log = proc.stdout + ("\n--- stderr ---\n" + proc.stderr if proc.stderr.strip() else "")
    (out / "sdk_activations.e2e.log").write_text(log)
    assert proc.returncode == 0, f"browser e2e failed (exit {proc.returncode}); log in {out}\n{log[-8000:]}"
