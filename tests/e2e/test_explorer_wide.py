"""The explorer on a wide model (wide-cnn's fc1, 1984 x 12544) in headless Debian Chromium against the real stack.

The scenario lives in ``explorer_wide.e2e.mjs``: it asserts the bytes one view downloads (at most 4 MB), the
pixels at cells known from the tile endpoint, the tooltip's exact element and the 500-tensor picker and overview;
open times (cold, difference cached, all cached) are recorded, not asserted, in
``test-artifacts/e2e-wide/explorer_open.json`` (``bench/bench_explorer.py`` writes the same figures to
``bench/results/explorer_open.json``).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

from netlapse.cli.stack import Stack
from tests.e2e.test_browser import REPO, _preflight

SCRIPT = Path(__file__).with_name("explorer_wide.e2e.mjs")


def run_script(
    base_url: str, out: Path, timeout: float = 1500, store_dir: Path | None = None
) -> tuple[int, str, dict]:
    """Run the browser scenario; (exit code, log, recorded figures). ``store_dir``: the stack's local store, where
    the scenario sees when the run's tape is compacted (and then opens an untouched pair of steps cold)."""
    node = _preflight()
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    env = {**os.environ, **({"NETLAPSE_E2E_STORE": str(store_dir)} if store_dir is not None else {})}
    proc = subprocess.run(
        [node, str(SCRIPT), base_url, str(out)],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    log = proc.stdout + ("\n--- stderr ---\n" + proc.stderr if proc.stderr.strip() else "")
    (out / "explorer_wide.e2e.log").write_text(log)
    figures = out / "explorer_open.json"
    return proc.returncode, log, json.loads(figures.read_text()) if figures.exists() else {}


def test_explorer_on_a_wide_model(stack: Stack, artifacts_dir: Path) -> None:
    """wide-cnn fc1's difference: ≤ 4 MB per view, pixels and tooltip against the API, 500-tensor picker."""
    code, log, figures = run_script(
        f"http://127.0.0.1:{stack.api_port}", artifacts_dir / "e2e-wide", store_dir=stack.data_dir / "store"
    )
    print(log)
    assert code == 0, f"browser e2e failed (exit {code}); log in {artifacts_dir / 'e2e-wide'}\n{log[-12000:]}"
    for k in ("cold", "cold_compacted", "diff_cached", "cached"):
        assert figures[k]["bytes"] <= figures["limit_bytes"], figures
