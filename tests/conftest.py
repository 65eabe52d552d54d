"""Shared fixtures: a private Redis, and a whole netlapse stack (real workers, real api) on free ports."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from netlapse.cli.stack import Stack, free_port

REPO = Path(__file__).resolve().parent.parent
DATA_DIR = Path(os.environ.get("NETLAPSE_DATA_DIR", REPO / ".data")).resolve()
MNIST = DATA_DIR / "datasets" / "mnist-10k.npz"

# Tests on the real digits: skipped only on a machine that never fetched them; with NETLAPSE_REQUIRE_MNIST set
# (make test, CI) they run, and fail if the file is missing, so CI can never skip them silently.
requires_mnist = pytest.mark.skipif(
    not MNIST.exists() and not os.environ.get("NETLAPSE_REQUIRE_MNIST"),
    reason="mnist-10k not fetched (make setup fetches it; CI requires it)",
)


@pytest.fixture(scope="session")
def artifacts_dir() -> Path:
    d = REPO / "test-artifacts"
    d.mkdir(exist_ok=True)
    return d


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory, artifacts_dir: Path) -> Iterator[Stack]:
    """Private redis-server, trainer + analyzer Celery workers and uvicorn, sharing a fresh data dir."""
    data = tmp_path_factory.mktemp("netlapse-data")
    if MNIST.exists():
        (data / "datasets").mkdir()
        (data / "datasets" / "mnist-10k.npz").symlink_to(MNIST)
    s = Stack(
        data_dir=data,
        api_port=free_port(),
        log_dir=artifacts_dir / "stack-logs",
        extra_env={
            "NETLAPSE_SEGMENT_MAX_STEPS": "16",
            "NETLAPSE_RESUME_INTERVAL_S": "0.25",  # a resume checkpoint at most every 0.25 s (chaos tests)
            "NETLAPSE_FRONTEND_DIR": str(REPO / "frontend" / "dist"),
            "NETLAPSE_AUTH_REQUIRED": "0",  # the shared stack is single-user; tests/integration/test_auth.py has its own
            "NETLAPSE_USER_MAX_ACTIVE_RUNS": "0",  # tests queue many runs at once; tests/unit/test_user_bounds.py
            "NETLAPSE_SDK_HEARTBEAT_TIMEOUT_S": "15",  # an SDK run whose process died fails within ~16 s
            "NETLAPSE_SDK_REAPER_INTERVAL_S": "1",
        },
    )
    s.start()
    yield s
    s.stop()


@pytest.fixture(scope="session")
def api(stack: Stack) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=f"http://127.0.0.1:{stack.api_port}", timeout=60) as c:
        yield c
