"""The Compare and Health views in headless Debian Chromium against the real stack.

The scenario lives in ``analyses.e2e.mjs``; this test writes a run whose conv1 filter 2 is dead from init into the
stack's store (the trainer would never make one on purpose), starts the script, and fails with its output when any
check fails. Screenshots land in ``test-artifacts/e2e-analyses/``; with ``NETLAPSE_E2E_SCREENSHOTS=docs/img`` the
script trains paper-cnn on mnist-10k and copies ``ui-compare.png`` / ``ui-health.png`` there for the README.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from netlapse.cli.stack import Stack
from netlapse.core.store import LocalStore
from tests.crafted_runs import write_dead_filter_run
from tests.e2e.test_browser import REPO, _preflight

SCRIPT = Path(__file__).with_name("analyses.e2e.mjs")


@pytest.mark.timeout(1800)  # the realistic profile trains two paper-cnn runs first
def test_compare_and_health_views(stack: Stack, artifacts_dir: Path) -> None:
    """Tick two runs → Compare (overlay, cross-run diff pixels, URL state, activations) → Health (ratio pixels)."""
    node = _preflight()
    out = artifacts_dir / "e2e-analyses"
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    dead_run = "deadfilterui01"
    write_dead_filter_run(LocalStore(stack.data_dir / "store"), dead_run, steps=6)
    realistic = bool(os.environ.get("NETLAPSE_E2E_SCREENSHOTS"))
    proc = subprocess.run(
        [node, str(SCRIPT), f"http://127.0.0.1:{stack.api_port}", str(out)],
        cwd=REPO,
        env={**os.environ, "NETLAPSE_E2E_DEAD_RUN": dead_run},
        capture_output=True,
        text=True,
        timeout=1500 if realistic else 400,
        check=False,
    )
    log = proc.stdout + ("\n--- stderr ---\n" + proc.stderr if proc.stderr.strip() else "")
    (out / "analyses.e2e.log").write_text(log)
    print(log)
    assert proc.returncode == 0, f"browser e2e failed (exit {proc.returncode}); log in {out}\n{log[-12000:]}"
