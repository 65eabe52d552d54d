"""Opening wide-cnn's fc1 difference (1984 x 12544) in the explorer, in headless Chromium: time and bytes.

    .venv/bin/python -m bench.bench_explorer

Starts a private stack (redis, trainer, analyzer, api) serving the built frontend, and runs the browser scenario
of ``tests/e2e/explorer_wide.e2e.mjs``: a short wide-cnn run on synthetic data, then the explorer opened cold
(nothing cached) right after the run (its compaction may still be running: ``cold.compacted_at_start`` says),
cold again on an untouched pair of steps once the tape is compacted (time-major), with the difference cached
(tiles not), and with everything cached, plus one zoom step and the 500-tensor picker / overview. Each open's
``phases_ms`` split its time: page (HTML/JS), bootstrap requests, the tile request (the server), drawing. "before" is what the previous explorer downloaded for this view: both tensors
whole as .npy. Prints a table and writes bench/results/explorer_open.json. Needs node, frontend/node_modules
(playwright-core), /usr/bin/chromium and a built frontend/dist.
"""

from __future__ import annotations

import json
import os
import platform
import re
import sys
import tempfile
import time
from pathlib import Path

from netlapse.cli.stack import Stack, free_port
from tests.e2e.test_explorer_wide import run_script

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "bench" / "results" / "explorer_open.json"
TARGETS_S = {"diff_cached": 1.5, "cold": 3.0}


def main() -> int:
    with tempfile.TemporaryDirectory(prefix="netlapse-bench-explorer-") as tmp:
        data = Path(tmp)
        stack = Stack(
            data_dir=data,
            api_port=free_port(),
            log_dir=data / "logs",
            extra_env={
                "NETLAPSE_FRONTEND_DIR": str(REPO / "frontend" / "dist"),
                "NETLAPSE_AUTH_REQUIRED": "0",
            },
        )
        stack.start()
        try:
            code, log, figures = run_script(
                f"http://127.0.0.1:{stack.api_port}", data / "e2e-wide", store_dir=data / "store"
            )
        finally:
            stack.stop()
        # Where the tile requests' seconds went on the analyzer (its log lines for fc1, in order).
        log_text = (data / "logs" / "analyzer.log").read_text(errors="replace")
        server = [m.group(1) for m in re.finditer(r"((?:diff|heatmap) \w+ fc1\.weight .*)", log_text)]
    if code != 0 or not figures:
        print(log[-8000:])
        return 1
    rows = [("before (both tensors whole)", figures["before"]["fetch_ms"], figures["before"]["bytes"])]
    for k, label in [
        ("cold", "cold, right after the run"),
        ("cold_compacted", "cold, tape compacted"),
        ("diff_cached", "difference cached"),
        ("cached", "all cached"),
        ("zoom", "zoom in"),
    ]:
        if k in figures:
            rows.append((label, figures[k]["ms"], figures[k]["bytes"]))
    print(f"{'wide-cnn fc1 difference':32} {'time (ms)':>10} {'downloaded':>14}")
    for label, ms, b in rows:
        print(f"{label:32} {ms:>10} {b / 1e6:>11.2f} MB")
    for k in ("cold", "cold_compacted", "diff_cached", "cached"):
        if figures.get(k, {}).get("phases_ms"):
            print(f"  {k} phases (ms): {figures[k]['phases_ms']}")
    print(f"  cold open: tape compacted at its start: {figures.get('cold', {}).get('compacted_at_start')}")
    for line in server:
        print(f"  analyzer: {line}")
    out = {
        **figures,
        "analyzer_log": server,
        "targets_s": TARGETS_S,
        "machine": {
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
            "python": sys.version.split()[0],
            "loadavg_1m_at_end": round(os.getloadavg()[0], 2),  # other work on the machine skews every time
        },
        "measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    RESULTS.write_text(json.dumps(out, indent=1) + "\n")
    print(f"wrote {RESULTS.relative_to(REPO)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
