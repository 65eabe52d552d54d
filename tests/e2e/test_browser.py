"""The web UI in headless Debian Chromium against the real stack (api + trainer + analyzer workers).

The browser scenario lives in ``ui.e2e.mjs`` (playwright-core from ``frontend/node_modules``); this
test starts it against the session's stack and fails with its output when any check fails.
Screenshots of every view are kept in ``test-artifacts/e2e/``. With
``NETLAPSE_E2E_SCREENSHOTS=docs/img`` the script uses a realistic run (paper-cnn on mnist-10k)
and copies the screenshots there as ``ui-<view>.png`` for the README.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from netlapse.cli.stack import Stack

REPO = Path(__file__).resolve().parents[2]
SCRIPT = Path(__file__).with_name("ui.e2e.mjs")
FRONTEND = REPO / "frontend"
CHROMIUM = os.environ.get("NETLAPSE_CHROMIUM", "/usr/bin/chromium")


def _newest_source_mtime() -> float:
    files = [FRONTEND / "index.html", *(p for p in (FRONTEND / "src").rglob("*") if p.is_file())]
    return max(p.stat().st_mtime for p in files if p.exists())


def _preflight() -> str:
    """Path of node, after checking everything the browser run needs; fails with what to do."""
    node = shutil.which("node")
    if node is None:
        pytest.fail("node is not on PATH (needed to drive Chromium with playwright-core)")
    if not (FRONTEND / "node_modules" / "playwright-core" / "package.json").exists():
        pytest.fail("playwright-core is missing: run `cd frontend && npm ci`")
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: install Debian's chromium (apt-get install chromium)")
    index = FRONTEND / "dist" / "index.html"
    if not index.exists():
        pytest.fail("frontend/dist is not built: run `cd frontend && npm run build` (or `make setup`)")
    if _newest_source_mtime() > index.stat().st_mtime:
        pytest.fail("frontend/dist is older than frontend/src: run `cd frontend && npm run build`")
    return node


def test_ui_end_to_end(stack: Stack, artifacts_dir: Path) -> None:
    """Form → live training → explorer pixels → exports → links → scatter → activations → run-list tour."""
    node = _preflight()
    out = artifacts_dir / "e2e"
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    realistic = (
        bool(os.environ.get("NETLAPSE_E2E_SCREENSHOTS"))
        or os.environ.get("NETLAPSE_E2E_PROFILE") == "realistic"
    )
    proc = subprocess.run(
        [node, str(SCRIPT), f"http://127.0.0.1:{stack.api_port}", str(out)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=1200 if realistic else 300,
        check=False,
    )
    log = proc.stdout + ("\n--- stderr ---\n" + proc.stderr if proc.stderr.strip() else "")
    (out / "ui.e2e.log").write_text(log)
    print(log)
    assert proc.returncode == 0, (
        f"browser e2e failed (exit {proc.returncode}); log and screenshots in {out}\n{log[-12000:]}"
    )
