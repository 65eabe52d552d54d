"""HTTP to the server's ingest routes (``/api/ingest/...``, docs/sdk.md), with retries and backoff.

Network errors, 5xx, 408 and 429 are retried with exponential backoff (0.5 s doubling to 30 s, with jitter)
until ``deadline``; any other 4xx is the server refusing the request and raises :class:`IngestRejected` at
once. Every call is idempotent on the server, so a retry after a lost answer is safe.
"""

from __future__ import annotations

import hashlib
import os
import random
import time
from collections.abc import Callable
from typing import Any

import httpx

RETRY_STATUS = frozenset({408, 429, 500, 502, 503, 504})
BACKOFF_START_S = 0.5
BACKOFF_MAX_S = 30.0


class ServerUnreachable(ConnectionError):
    """The server did not answer (connection refused, DNS, timeout) when the run was created."""


class IngestRejected(RuntimeError):
    """The server refused a request (a 4xx other than 408/429); ``status`` and ``detail`` say why."""

    def __init__(self, status: int, detail: Any, what: str) -> None:
        self.status, self.detail = status, detail
        msg = detail.get("message", detail) if isinstance(detail, dict) else detail
        super().__init__(f"{what}: the server answered {status}: {msg}")


def server_url(server: str | None) -> str | None:
    """The server to use: the argument, else ``NETLAPSE_URL``, else ``NETLAPSE_SERVER`` (older name)."""
    url = server or os.environ.get("NETLAPSE_URL") or os.environ.get("NETLAPSE_SERVER") or None
    return url.rstrip("/") if url else None


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class IngestClient:
    """The ingest routes of one server, for one user (``token``: ``Authorization: Bearer``)."""

    def __init__(
        self,
        server: str,
        token: str | None = None,
        *,
        timeout: float = 60.0,
        http: httpx.Client | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        base = server.rstrip("/")
        self.server = base.removesuffix("/api")
        self.base = self.server + "/api/ingest"
        token = token or os.environ.get("NETLAPSE_TOKEN") or None
        self.headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.http = http or httpx.Client(timeout=timeout)
        self._own_http = http is None
        self.sleep = sleep
        self.retries = 0  # requests sent again after a network error or a retryable status

    def close(self) -> None:
        if self._own_http:
            self.http.close()

    # -- plumbing

    def request(
        self,
        method: str,
        path: str,
        *,
        what: str,
        deadline: float | None = None,
        retry: bool = True,
        stop: Callable[[], bool] | None = None,
        **kw: Any,
    ) -> Any:
        """One call; retried (with backoff) on network errors and retryable statuses until ``deadline``
        (a ``time.monotonic()`` value; None = forever) or until ``stop()`` is true."""
        url = f"{self.base}/{path.lstrip('/')}"
        headers = {**self.headers, **kw.pop("headers", {})}
        delay = BACKOFF_START_S
        while True:
            try:
                r = self.http.request(method, url, headers=headers, **kw)
            except httpx.TransportError as exc:
                error: Exception = exc
                status = None
            else:
                if r.status_code < 400:
                    return r.json() if r.content else None
                status = r.status_code
                try:
                    detail = r.json().get("detail", r.text)
                except ValueError:
                    detail = r.text
                if status not in RETRY_STATUS:
                    raise IngestRejected(status, detail, what)
                error = IngestRejected(status, detail, what)
            out_of_time = deadline is not None and time.monotonic() + delay > deadline
            if not retry or out_of_time or (stop is not None and stop()):
                if status is None:
                    raise ServerUnreachable(
                        f"{what}: cannot reach the netlapse server at {self.server}: {error}"
                    )
                raise error
            self.retries += 1
            self.sleep(delay * (0.75 + random.random() / 2))
            delay = min(BACKOFF_MAX_S, delay * 2)

    # -- the routes

    def create_run(self, body: dict[str, Any], **kw: Any) -> dict[str, Any]:
        return self.request("POST", "runs", json=body, what="creating the run", **kw)

    def state(self, run_id: str, **kw: Any) -> dict[str, Any]:
        return self.request("GET", f"runs/{run_id}/state", what="reading the run's state", **kw)

    def watch(self, run_id: str, body: dict[str, Any], **kw: Any) -> dict[str, Any]:
        return self.request("POST", f"runs/{run_id}/watch", json=body, what="describing the model", **kw)

    def put_tape_object(self, run_id: str, key: str, data: bytes, **kw: Any) -> dict[str, Any]:
        """One object of the run's tape (``segments/….seg``, ``manifest.json``, an index part), as written."""
        return self.request(
            "PUT",
            f"runs/{run_id}/tape/{key}",
            content=data,
            headers={"X-Netlapse-SHA256": sha256_hex(data), "Content-Type": "application/octet-stream"},
            what=f"uploading {key}",
            **kw,
        )

    def metrics(self, run_id: str, seq: int, rows: list[dict[str, Any]], **kw: Any) -> dict[str, Any]:
        return self.request(
            "POST", f"runs/{run_id}/metrics", json={"seq": seq, "rows": rows}, what="sending metrics", **kw
        )

    def heartbeat(self, run_id: str, **kw: Any) -> dict[str, Any]:
        return self.request("POST", f"runs/{run_id}/heartbeat", json={}, what="heartbeat", **kw)

    def put_program(self, run_id: str, data: bytes, **kw: Any) -> dict[str, Any]:
        return self.request(
            "PUT",
            f"runs/{run_id}/program",
            content=data,
            headers={"X-Netlapse-SHA256": sha256_hex(data), "Content-Type": "application/octet-stream"},
            what="uploading the model program",
            **kw,
        )

    def put_eval(self, run_id: str, part: str, data: bytes, **kw: Any) -> dict[str, Any]:
        return self.request(
            "PUT",
            f"runs/{run_id}/eval/{part}",
            content=data,
            headers={"X-Netlapse-SHA256": sha256_hex(data), "Content-Type": "application/octet-stream"},
            what=f"uploading eval {part}",
            **kw,
        )

    def finish(self, run_id: str, body: dict[str, Any], **kw: Any) -> dict[str, Any]:
        return self.request("POST", f"runs/{run_id}/finish", json=body, what="finishing the run", **kw)
