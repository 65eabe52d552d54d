"""A real S3 server for tests: moto's standalone server as a subprocess on a free port.

Import the fixtures into a test module (``from tests.integration.conftest_s3 import s3_server``)."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from netlapse.core.store import S3Store


@dataclass(frozen=True)
class S3Server:
    """Where the test S3 server listens; any non-empty keys are accepted by moto."""

    endpoint: str
    access_key: str = "netlapse-test"
    secret_key: str = "netlapse-test-secret"

    def store(self, bucket: str | None = None, prefix: str = "") -> S3Store:
        """A store on a fresh bucket (created through the minio client), so tests never share objects."""
        return S3Store(
            bucket or f"t-{uuid.uuid4().hex[:20]}",
            prefix=prefix,
            endpoint=self.endpoint,
            access_key=self.access_key,
            secret_key=self.secret_key,
        )


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    """Start ``python -m moto.server`` on a free port, wait until it answers, stop it at session end."""
    port = _free_port()
    log_path = Path(tmp_path_factory.mktemp("moto")) / "moto.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 60
        while True:
            if proc.poll() is not None:
                raise RuntimeError(
                    f"moto server exited with {proc.returncode}: {log_path.read_text()[-2000:]}"
                )
            try:
                if httpx.get(f"http://127.0.0.1:{port}/", timeout=1).status_code < 500:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"moto server did not answer on port {port}: {log_path.read_text()[-2000:]}"
                )
            time.sleep(0.1)
        yield S3Server(endpoint=f"127.0.0.1:{port}")
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
