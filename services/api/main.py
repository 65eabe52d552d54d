"""The api app: ``uvicorn netlapse.api.main:app``. REST + WebSocket under /api, the built UI at /."""

from __future__ import annotations

from pathlib import Path

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse
from fastapi.staticfiles import StaticFiles

from netlapse.api import redact
from netlapse.api.deps import current_user, visible_run
from netlapse.api.limits import MAX_BODY_BYTES, RequestGuard
from netlapse.api.routes import analyses, catalog, events, health, runs, tensors, users
from netlapse.api.routes import limits as limits_routes
from netlapse.api.routes.ingest import UploadBodyLimit, heartbeat_checks
from netlapse.api.routes.ingest import router as ingest_router
from netlapse.core.settings import get_settings
from netlapse.core.tape import TapeCorrupt

NOT_BUILT = """<!doctype html><title>netlapse</title><h1>netlapse</h1>
<p>The web UI is not built. Run <code>make run</code> (or <code>cd frontend && npm ci && npm run build</code>).
The API is at <a href="/docs">/docs</a>.</p>"""


def create_app() -> FastAPI:
    """Build the api app: routers under /api, error handlers, and the static UI.

    Every /api route needs the caller's token (when ``auth_required``) except the public ones below, and every
    ``/runs/{run_id}...`` route answers 404 for another user's run: both are router-level dependencies here,
    so a new route is protected without doing anything. The WebSocket authenticates itself (close codes).
    """
    settings = get_settings()
    redact.install()  # no token or ticket in any log line (uvicorn logs paths with their query strings)
    app = FastAPI(
        title="netlapse",
        version="0.1.0",
        description="Every parameter after every batch.",
        lifespan=heartbeat_checks,  # SDK runs whose training process died are marked failed
    )
    app.add_middleware(UploadBodyLimit, limit=MAX_BODY_BYTES, upload_limit=settings.ingest_max_object_bytes)
    app.add_middleware(RequestGuard, settings=settings)  # outermost: Host, Origin, Content-Type first
    for public in (health.router, catalog.router):  # GET /api/health, /api/presets, /api/datasets
        app.include_router(public, prefix="/api")
    guarded = [Depends(current_user), Depends(visible_run)]
    for router in (
        users.router,
        limits_routes.router,
        catalog.samples_router,
        runs.router,
        tensors.router,
        analyses.router,
    ):
        app.include_router(router, prefix="/api", dependencies=guarded)
    app.include_router(ingest_router, prefix="/api", dependencies=guarded)
    app.include_router(events.router, prefix="/api")

    @app.exception_handler(TapeCorrupt)
    async def _corrupt(_: Request, exc: TapeCorrupt) -> JSONResponse:
        return JSONResponse({"detail": f"stored snapshot data failed its checksum: {exc}"}, status_code=500)

    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        # FastAPI's default, minus the echoed input (bodies can be large); ctx values made JSON-safe.
        errors = [
            {
                k: (v if k != "ctx" else {ck: str(cv) for ck, cv in v.items()})
                for k, v in e.items()
                if k != "input"
            }
            for e in exc.errors()
        ]
        return JSONResponse({"detail": errors}, status_code=422)

    dist = Path(settings.frontend_dir)
    if (dist / "index.html").exists():
        app.mount("/", StaticFiles(directory=dist, html=True), name="ui")
    else:

        @app.get("/", include_in_schema=False)
        def _ui_missing() -> HTMLResponse:
            return HTMLResponse(NOT_BUILT)

    return app


app = create_app()
