"""Bounds on what clients send: request bodies over ``MAX_BODY_BYTES`` answer 413; requests from other sites
or for unknown Host names are refused (:class:`RequestGuard`)."""

from __future__ import annotations

import json
import math
import threading
from collections.abc import Iterator
from contextlib import contextmanager

from fastapi import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from netlapse.api.errors import invalid
from netlapse.core.modelspec import ModelSpec, SpecTooCostly, check_compute_bounds, state_dict_shapes
from netlapse.core.schemas import TERMINAL_STATUSES, CaptureConfig, RunRecord, TrainingConfig
from netlapse.core.settings import Settings

MAX_BODY_BYTES = 1024 * 1024
"""The largest request body accepted (every body the API takes is a small JSON document)."""


def too_large_message(limit: int) -> str:
    return (
        f"request body too large: at most {limit} bytes ({limit // 1024} KiB) are accepted; "
        "run specs and analysis requests are small JSON documents"
    )


class BodyTooLarge(HTTPException):
    """Raised from ``receive`` once a streamed body passes the limit; FastAPI answers it like any 413."""

    def __init__(self, limit: int) -> None:
        super().__init__(status_code=413, detail=too_large_message(limit))


class BodySizeLimit:
    """ASGI middleware: 413 before reading when ``Content-Length`` is over the limit, and while reading when a
    body without one (chunked) grows past it, so the api never buffers more than ``limit`` bytes."""

    def __init__(self, app: ASGIApp, limit: int = MAX_BODY_BYTES) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for name, value in scope.get("headers", []):
            if name == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    declared = -1
                if declared > self.limit:
                    await self._reject(send)
                    return
        received = 0
        started = False

        async def counted_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.limit:
                    raise BodyTooLarge(self.limit)
            return message

        async def tracked_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, counted_receive, tracked_send)
        except BodyTooLarge:
            # Only reached when the app read the body outside FastAPI's handling (which answers 413 itself).
            if started:
                raise
            await self._reject(send)

    async def _reject(self, send: Send) -> None:
        body = json.dumps({"detail": too_large_message(self.limit)}).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 413,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                    (b"connection", b"close"),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})


STATE_CHANGING = frozenset({"POST", "PUT", "PATCH"})
"""Methods that must say ``Content-Type: application/json``. A DELETE without a body is exempt: a browser sends
it to another origin only after a preflight, while a bodyless POST is a "simple" request it sends straight."""
JSON = "application/json"
BINARY = "application/octet-stream"
BINARY_UPLOAD_PREFIXES = ("/api/ingest/",)
"""Paths whose state-changing requests may also send raw bytes (SDK segment, program and eval uploads)."""


def _csv(value: str) -> list[str]:
    return [v.strip() for v in value.split(",") if v.strip()]


def allowed_host_names(settings: Settings) -> frozenset[str] | None:
    """Host names the api answers, lowercased; None = any (``NETLAPSE_ALLOWED_HOSTS=*``)."""
    names = _csv(settings.allowed_hosts) or [settings.api_host, "localhost", "127.0.0.1"]
    if "*" in names:
        return None
    return frozenset(n.lower().strip("[]") for n in names)


def host_name(host_header: str) -> str:
    """``Host`` header → name without port: ``lab.example:8000`` → ``lab.example``, ``[::1]:80`` → ``::1``."""
    h = host_header.strip().lower()
    if h.startswith("["):
        return h[1:].split("]", 1)[0]
    return h.rsplit(":", 1)[0] if h.count(":") == 1 else h


def _needs_json(method: str, headers: dict[str, str]) -> bool:
    has_body = headers.get("content-length", "0") != "0" or "transfer-encoding" in headers
    return method in STATE_CHANGING or (method == "DELETE" and has_body)


class RequestGuard:
    """ASGI middleware against cross-site requests and DNS rebinding (docs/security.md):

    - a ``Host`` not in ``NETLAPSE_ALLOWED_HOSTS`` → 400 (HTTP and WebSocket);
    - an ``Origin`` that is neither the api's own (the same scheme-less host as ``Host``) nor in
      ``NETLAPSE_ALLOWED_ORIGINS`` → 403 (HTTP and WebSocket: browsers do not apply CORS to WebSockets);
    - a POST/PUT/PATCH (or a DELETE with a body) under /api without ``Content-Type: application/json`` → 415
      (``application/octet-stream`` too on the SDK upload routes). A browser page can only send such a request
      to another origin after a CORS preflight, which this api never grants.
    """

    def __init__(self, app: ASGIApp, settings: Settings) -> None:
        self.app = app
        self.hosts = allowed_host_names(settings)
        self.origins = frozenset(o.rstrip("/").lower() for o in _csv(settings.allowed_origins))

    def problem(self, scope: Scope) -> tuple[int, str] | None:
        """Why this request is refused (status, message), or None."""
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        host = headers.get("host", "")
        if self.hosts is not None and host_name(host) not in self.hosts:
            return 400, (
                f"unknown Host {host!r}: this server answers only {', '.join(sorted(self.hosts))}; "
                "its admin can add names with NETLAPSE_ALLOWED_HOSTS"
            )
        origin = headers.get("origin")
        if origin is not None:
            o = origin.rstrip("/").lower()
            if o not in self.origins and o not in (f"http://{host.lower()}", f"https://{host.lower()}"):
                return 403, (
                    f"requests from web pages of {origin!r} are not allowed; the server's admin can allow "
                    "that origin with NETLAPSE_ALLOWED_ORIGINS"
                )
        path = scope.get("path", "")
        if scope["type"] == "http" and path.startswith("/api/") and _needs_json(scope["method"], headers):
            media = headers.get("content-type", "").split(";", 1)[0].strip().lower()
            ok = {JSON, BINARY} if path.startswith(BINARY_UPLOAD_PREFIXES) else {JSON}
            if media not in ok:
                return 415, (
                    f"{scope['method']} requests must send `Content-Type: {JSON}`"
                    f" (got {media or 'none'}); e.g. curl -H 'Content-Type: {JSON}'"
                )
        return None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        refused = self.problem(scope)
        if refused is None:
            await self.app(scope, receive, send)
            return
        status, detail = refused
        body = json.dumps({"detail": detail}).encode()
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
        if scope["type"] == "http":
            await send({"type": "http.response.start", "status": status, "headers": headers})
            await send({"type": "http.response.body", "body": body})
            return
        await receive()  # websocket.connect
        if "websocket.http.response" in scope.get("extensions", {}):
            await send({"type": "websocket.http.response.start", "status": status, "headers": headers})
            await send({"type": "websocket.http.response.body", "body": body})
        else:
            await send({"type": "websocket.close", "code": 1008, "reason": detail[:120]})


def refuse_costly_spec(spec: ModelSpec, batch_size: int, settings: Settings, inline: bool) -> None:
    """422 naming the layer and the bound when the spec needs more parameters, activation memory or compute
    per training step than this server allows (computed from the spec: nothing is built or run)."""
    try:
        check_compute_bounds(
            spec,
            batch_size,
            max_params=settings.max_params,
            max_activation_elements=settings.max_activation_elements,
            max_step_flops=settings.max_step_flops,
        )
    except SpecTooCostly as exc:
        loc: list[str | int] = ["body", "model"]
        if inline and exc.index is not None:
            loc += ["layers", exc.index]
        raise invalid(loc, str(exc), bound=exc.bound) from None


# --- per-user bounds at run creation: active runs and capture volume ------------------------------------------


def snapshot_bytes(spec: ModelSpec) -> int:
    """Raw bytes of one captured snapshot: every floating-point ``state_dict`` tensor as float32."""
    return sum(
        4 * math.prod(shape)
        for name, shape in state_dict_shapes(spec).items()
        if not name.endswith("_tracked")
    )


def captured_count(total_steps: int, every: int) -> int:
    """Snapshots a run of ``total_steps`` keeps: step 0, every ``every``-th step and the last one."""
    return 1 + total_steps // every + (1 if total_steps % every else 0)


def planned_steps(training: TrainingConfig, train_size: int) -> int:
    n = min(train_size, training.max_train_samples or train_size)
    return training.epochs * math.ceil(n / training.batch_size)


def smallest_every(total_steps: int, snap: int, allowed_bytes: int) -> int | None:
    """The smallest ``capture.every`` whose raw capture fits ``allowed_bytes`` (None: not even step 0 + last)."""
    if snap * captured_count(total_steps, max(total_steps, 1)) > allowed_bytes:
        return None
    lo, hi = 1, max(total_steps, 1)
    while lo < hi:
        mid = (lo + hi) // 2
        if captured_count(total_steps, mid) * snap <= allowed_bytes:
            hi = mid
        else:
            lo = mid + 1
    return lo


def _gb(n: float) -> str:
    return f"{n / 1e9:,.2f} GB"


def planned_raw_bytes(rec: RunRecord, train_sizes: dict[str, int]) -> int:
    """What a stored run holds or will hold: its measured raw bytes, else its plan (0 when unknown)."""
    if rec.summary.raw_bytes:
        return int(rec.summary.raw_bytes)
    if rec.status in TERMINAL_STATUSES or rec.dataset not in train_sizes:
        return 0
    try:
        spec = rec.layer_spec()
    except Exception:  # an SDK run has no spec: it reports what it uploaded
        return 0
    return snapshot_bytes(spec) * captured_count(
        planned_steps(rec.training, train_sizes[rec.dataset]), rec.capture.every
    )


def refuse_over_user_bounds(
    spec: ModelSpec,
    training: TrainingConfig,
    capture: CaptureConfig,
    train_size: int,
    settings: Settings,
    user: str,
    runs: list[RunRecord],
    train_sizes: dict[str, int],
) -> None:
    """429 when ``user`` already has ``user_max_active_runs`` queued or running; 422 suggesting a
    ``capture.every`` when the run's planned raw capture is over ``run_max_raw_bytes`` or the user's remaining
    ``user_storage_quota_bytes``."""
    mine = [r for r in runs if r.owner == user]
    active = sum(r.status not in TERMINAL_STATUSES for r in mine)
    if settings.user_max_active_runs and active >= settings.user_max_active_runs:
        raise HTTPException(
            429,
            detail=(
                f"you have {active} runs queued or running; this server allows {settings.user_max_active_runs} "
                "per user at once (NETLAPSE_USER_MAX_ACTIVE_RUNS): wait for one to finish or cancel one"
            ),
        )
    total = planned_steps(training, train_size)
    snap = snapshot_bytes(spec)
    raw = snap * captured_count(total, capture.every)
    limits = []
    if settings.run_max_raw_bytes:
        limits.append(
            (
                settings.run_max_raw_bytes,
                f"the per-run limit of {_gb(settings.run_max_raw_bytes)} (NETLAPSE_RUN_MAX_RAW_BYTES)",
            )
        )
    if settings.user_storage_quota_bytes:
        used = sum(planned_raw_bytes(r, train_sizes) for r in mine)
        left = max(0, settings.user_storage_quota_bytes - used)
        limits.append(
            (
                left,
                f"your remaining storage of {_gb(left)} (quota {_gb(settings.user_storage_quota_bytes)}, "
                f"your runs hold or plan {_gb(used)}; NETLAPSE_USER_STORAGE_QUOTA_BYTES)",
            )
        )
    for allowed, what in sorted(limits):
        if raw <= allowed:
            continue
        every = smallest_every(total, snap, allowed)
        hint = (
            f"use capture.every >= {every} ({captured_count(total, every):,} snapshots)"
            if every is not None
            else "even step 0 and the last step alone do not fit: delete old runs or train a smaller model"
        )
        raise invalid(
            ["body", "capture", "every"],
            f"this run would capture {captured_count(total, capture.every):,} snapshots of {snap / 1e6:,.1f} MB "
            f"= {_gb(raw)} raw, over {what}; {hint}",
            suggested_every=every,
        )


# --- analyses in flight per user ---------------------------------------------------------------------------

_analyses: dict[str, int] = {}
_analyses_lock = threading.Lock()


@contextmanager
def analysis_slot(user: str, settings: Settings) -> Iterator[None]:
    """Hold one of ``user``'s ``user_max_analyses`` concurrent analysis requests (an api thread waits for the
    analyzer during each); 429 when all are taken, so one user cannot pin the api's threads."""
    cap = settings.user_max_analyses
    with _analyses_lock:
        n = _analyses.get(user, 0)
        if cap and n >= cap:
            raise HTTPException(
                429,
                detail=f"you have {n} analyses in progress; this server computes at most {cap} per user at once "
                "(NETLAPSE_USER_MAX_ANALYSES): wait for one to answer",
                headers={"Retry-After": "2"},
            )
        _analyses[user] = n + 1
    try:
        yield
    finally:
        with _analyses_lock:
            _analyses[user] -= 1
            if _analyses[user] <= 0:
                del _analyses[user]
