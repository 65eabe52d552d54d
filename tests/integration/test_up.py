"""``netlapse up`` heals and stops cleanly: redis-server SIGKILLed mid-run is restarted (same port, its AOF)
and the run succeeds with every step; a whole trainer worker SIGKILLed mid-run is restarted and its run
resumed through the reaper; Ctrl-C (SIGINT) leaves none of the processes it started."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx

from netlapse.cli.stack import free_port
from tests.integration.helpers import create_run, wait_terminal

REPO = Path(__file__).resolve().parents[2]


def descendants(pid: int) -> dict[int, str]:
    """Every process below ``pid`` (children, grandchildren …) with its command name."""
    out: dict[int, str] = {}
    todo = [pid]
    while todo:
        ps = subprocess.run(
            ["ps", "-o", "pid=,comm=", "--ppid", str(todo.pop())], capture_output=True, text=True
        )
        for line in ps.stdout.splitlines():
            child, _, comm = line.strip().partition(" ")
            out[int(child)] = comm.strip()
            todo.append(int(child))
    return out


def cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except FileNotFoundError:
        return b""


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state != "Z"


def test_up_restarts_a_killed_redis_mid_run_and_ctrl_c_stops_everything(tmp_path: Path) -> None:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("NETLAPSE_")}
    env.update(
        NETLAPSE_DATA_DIR=str(tmp_path / "data"),
        NETLAPSE_AUTH_REQUIRED="0",
        NETLAPSE_SEGMENT_MAX_STEPS="16",
        NETLAPSE_RESUME_INTERVAL_S="1",
        PYTHONUNBUFFERED="1",
    )
    log = open(tmp_path / "up.log", "wb")  # noqa: SIM115 - the child writes it until the end
    up = subprocess.Popen(
        [sys.executable, "-m", "netlapse.cli", "up", "--port", str(port), "--quiet"],
        cwd=REPO,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as api:
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline:
                try:
                    if api.get("/api/health").status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                assert up.poll() is None, (tmp_path / "up.log").read_text()
                time.sleep(0.3)
            rid = create_run(api, training={"epochs": 16, "batch_size": 16, "seed": 4})["id"]
            while time.monotonic() < deadline:
                run = api.get(f"/api/runs/{rid}").json()
                if run["status"] == "running" and run["progress"]["step"] >= 20:
                    break
                time.sleep(0.2)
            assert run["status"] == "running", run
            redis_pids = [p for p, c in descendants(up.pid).items() if c.startswith("redis-server")]
            assert len(redis_pids) == 1, descendants(up.pid)
            os.kill(redis_pids[0], signal.SIGKILL)

            run = wait_terminal(api, rid, timeout=300)
            assert run["status"] == "succeeded" and run["error"] is None, run
            total = run["progress"]["total_steps"]
            assert run["progress"]["step"] == total and run["attempts"] == 1
            assert api.get(f"/api/runs/{rid}/steps").json()["steps"] == list(range(total + 1))
            assert [r["step"] for r in api.get(f"/api/runs/{rid}/metrics").json()["steps"]] == list(
                range(1, total + 1)
            )
            new_redis = [p for p, c in descendants(up.pid).items() if c.startswith("redis-server")]
            assert len(new_redis) == 1 and new_redis != redis_pids
            # After the restart, the queue works again: a new run is woken and trains.
            again = wait_terminal(api, create_run(api, training={"epochs": 1, "seed": 5})["id"], timeout=180)
            assert again["status"] == "succeeded"

            # A lost trainer (the whole worker, main process and pool, SIGKILLed: its Celery message stays
            # unacknowledged, nothing redelivers it): netlapse up restarts the worker, whose reaper finds the
            # run held by a dead process and wakes a trainer for it; the run resumes and succeeds.
            rid = create_run(api, training={"epochs": 24, "batch_size": 16, "seed": 6})["id"]
            resume_dir = tmp_path / "data" / "store" / "runs" / rid / "resume"
            while time.monotonic() < deadline + 240:
                run = api.get(f"/api/runs/{rid}").json()
                if run["status"] == "running" and any(resume_dir.glob("*.npz")):
                    break
                time.sleep(0.2)
            assert run["status"] == "running", run
            trainer = next(p for p in descendants(up.pid) if b"netlapse.trainer.worker" in cmdline(p))
            os.killpg(trainer, signal.SIGKILL)
            run = wait_terminal(api, rid, timeout=300)
            assert (
                run["status"] == "succeeded" and run["attempts"] == 2 and run["resumed_from"] is not None
            ), run
            total = run["progress"]["total_steps"]
            assert api.get(f"/api/runs/{rid}/steps").json()["steps"] == list(range(total + 1))

        started = descendants(up.pid)
        # redis-server, trainer / analyzer / compactor (each a Celery main process and its pool child), uvicorn
        assert len(started) >= 8 and any(c.startswith("redis-server") for c in started.values()), started
        up.send_signal(signal.SIGINT)
        assert up.wait(60) == 0
    finally:
        if up.poll() is None:  # Ctrl-C first: a SIGKILL of the supervisor alone would orphan its children
            up.send_signal(signal.SIGINT)
            try:
                up.wait(60)
            except subprocess.TimeoutExpired:
                up.kill()
        log.close()
    text = (tmp_path / "up.log").read_text()
    assert "redis exited with code -9; restarting it (restart #1)" in text, text
    assert "trainer exited with code -9; restarting it (restart #1)" in text, text
    left = {p: c for p, c in started.items() if alive(p)}
    assert not left, f"left running after Ctrl-C: {left}"
