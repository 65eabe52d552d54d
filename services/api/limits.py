"""Bounds on what clients send: request bodies over ``MAX_BODY_BYTES`` answer 413; requests from other sites
or for unknown Host names are refused (:class:`RequestGuard`)."""

from __future__ import annotations

import json

from fastapi import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from netlapse.api.errors import invalid
from netlapse.core.modelspec import ModelSpec, SpecTooCostly, check_compute_bounds
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
