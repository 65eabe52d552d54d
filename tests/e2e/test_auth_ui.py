"""A browser session on a server with tokens, then the token-not-in-logs check over every service log.

``auth.e2e.mjs`` signs in through the top bar and watches a training run live (its WebSocket authenticates with
a single-use ticket from POST /api/ws-ticket); afterwards no log of the api, the workers or Redis contains the
token, and every ticket that reached a log line is masked."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import httpx

from netlapse.cli.stack import Stack, free_port
from netlapse.core.auth import Accounts
from netlapse.core.store import LocalStore
from tests.e2e.test_browser import REPO, _preflight


def test_a_signed_in_ui_session_leaves_no_secret_in_any_log(tmp_path: Path, artifacts_dir: Path) -> None:
    node = _preflight()
    out = artifacts_dir / "e2e-auth"
    logs = artifacts_dir / "stack-logs-e2e-auth"
    for d in (out, logs):
        shutil.rmtree(d, ignore_errors=True)
    store = tmp_path / "store"
    token = Accounts(LocalStore(store)).add_user("alice")
    s = Stack(
        data_dir=tmp_path,
        api_port=free_port(),
        log_dir=logs,
        api_log_level="info",  # every request line, with its query string, goes to api.log
        extra_env={
            "NETLAPSE_AUTH_REQUIRED": "1",
            "NETLAPSE_STORE_URL": f"file://{store}",
            "NETLAPSE_FRONTEND_DIR": str(REPO / "frontend" / "dist"),
        },
    )
    s.start()
    try:
        base = f"http://127.0.0.1:{s.api_port}"
        with httpx.Client(base_url=base, headers={"Authorization": f"Bearer {token}"}, timeout=60) as alice:
            run = {
                "name": "watched",
                "model": {"preset": "tiny-cnn"},
                "dataset": "synthetic",
                "training": {"epochs": 20, "batch_size": 16, "optimizer": "sgd", "lr": 0.05, "seed": 0},
            }
            r = alice.post("/api/runs", json=run)
            assert r.status_code == 201, r.text
            rid = r.json()["id"]
            proc = subprocess.run(
                [node, str(Path(__file__).with_name("auth.e2e.mjs")), base, token, rid, str(out)],
                cwd=REPO,
                capture_output=True,
                text=True,
                timeout=300,
                check=False,
            )
            print(proc.stdout, proc.stderr)
            assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
            alice.post(f"/api/runs/{rid}/cancel", json={})
    finally:
        s.stop()
    texts = {p.name: p.read_text(errors="replace") for p in sorted(logs.glob("*.log"))}
    assert {"api.log", "trainer.log", "analyzer.log", "redis.log"} <= set(texts)
    assert "WebSocket /api/runs/" in texts["api.log"] and "ticket=[redacted]" in texts["api.log"]
    for name, text in texts.items():
        assert token not in text, f"the token is in {name}"
        for m in re.finditer(r"(?:ticket|token)=([^&\s\"']*)", text):
            assert m.group(1) == "[redacted]", f"{name}: {m.group(0)}"
