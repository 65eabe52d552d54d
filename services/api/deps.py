"""Dependencies of the api, as ``Annotated`` aliases that tests can override."""

from __future__ import annotations

from functools import lru_cache
from typing import Annotated

import redis
from celery import Celery
from fastapi import Depends, HTTPException, Request
from starlette.requests import HTTPConnection

from netlapse.api.errors import not_found
from netlapse.core.auth import LOCAL_USER, Accounts, WsTickets, may_access
from netlapse.core.events import EventStream, connect
from netlapse.core.queue import make_celery
from netlapse.core.runs import RunNotFound, RunRepository
from netlapse.core.schemas import RunRecord
from netlapse.core.settings import Settings, get_settings
from netlapse.core.store import Store, store_from_settings

NO_TOKEN = (
    "this server requires an API token: send the header `Authorization: Bearer <token>` (a WebSocket takes "
    "`?ticket=` from `POST /api/ws-ticket` instead; tokens never go in URLs). The server's admin creates one "
    "with `netlapse user add NAME`"
)
BAD_TOKEN = (
    "this API token is not valid (unknown or revoked); ask the server's admin for a new one "
    "(`netlapse user token NAME`)"
)


@lru_cache
def _store(settings: Settings) -> Store:
    return store_from_settings(settings)


@lru_cache
def _redis(url: str) -> redis.Redis:
    return connect(url)


@lru_cache
def _celery(settings: Settings) -> Celery:
    return make_celery("netlapse-api", settings)


def get_store(settings: Annotated[Settings, Depends(get_settings)]) -> Store:
    return _store(settings)


def get_redis(settings: Annotated[Settings, Depends(get_settings)]) -> redis.Redis:
    return _redis(settings.redis_url)


def get_events(
    settings: Annotated[Settings, Depends(get_settings)], r: Annotated[redis.Redis, Depends(get_redis)]
) -> EventStream:
    return EventStream(r, settings.events_maxlen)


def get_celery(settings: Annotated[Settings, Depends(get_settings)]) -> Celery:
    return _celery(settings)


def get_repo(store: Annotated[Store, Depends(get_store)]) -> RunRepository:
    return RunRepository(store)


@lru_cache
def _accounts(settings: Settings) -> Accounts:
    return Accounts(_store(settings), cache_ttl_s=settings.auth_cache_s)


def get_accounts(settings: Annotated[Settings, Depends(get_settings)]) -> Accounts:
    return _accounts(settings)


class AuthFailed(Exception):
    """No usable token; the message says how to get one."""


def get_tickets(settings: Annotated[Settings, Depends(get_settings)]) -> WsTickets:
    return WsTickets(_redis(settings.redis_url), settings.ws_ticket_ttl_s)


def bearer_token(conn: HTTPConnection) -> str | None:
    """The token of a request or WebSocket: ``Authorization: Bearer <token>`` only (never a URL parameter:
    URLs end up in proxy logs and browser history)."""
    scheme, _, value = conn.headers.get("authorization", "").partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip()
    return None


def authenticate(conn: HTTPConnection, settings: Settings, accounts: Accounts) -> str:
    """The calling user: ``local`` when auth is off, else the owner of the token (AuthFailed without one)."""
    if not settings.auth_required:
        return LOCAL_USER
    token = bearer_token(conn)
    if token is None:
        raise AuthFailed(NO_TOKEN)
    user = accounts.authenticate(token)
    if user is None:
        raise AuthFailed(BAD_TOKEN)
    return user


def current_user(
    request: Request,
    settings: Annotated[Settings, Depends(get_settings)],
    accounts: Annotated[Accounts, Depends(get_accounts)],
) -> str:
    """The calling user, or 401 saying how to get a token."""
    try:
        return authenticate(request, settings, accounts)
    except AuthFailed as exc:
        raise HTTPException(401, detail=str(exc), headers={"WWW-Authenticate": "Bearer"}) from None


def load_run(repo: RunRepository, run_id: str) -> RunRecord:
    """The run record, or 404."""
    try:
        return repo.get(run_id)
    except RunNotFound as exc:
        raise not_found(str(exc)) from None
    except ValueError:
        raise not_found(f"run {run_id!r} not found") from None


def visible_run(
    request: Request,
    settings: Annotated[Settings, Depends(get_settings)],
    repo: Annotated[RunRepository, Depends(get_repo)],
    user: Annotated[str, Depends(current_user)],
) -> RunRecord | None:
    """Router-level guard for every ``/runs/{run_id}...`` route: another user's run answers the same 404 as an
    unknown one. None on routes without a ``run_id``."""
    run_id = request.path_params.get("run_id")
    if run_id is None:
        return None
    rec = load_run(repo, run_id)
    if not may_access(settings.auth_required, user, rec):
        raise not_found(f"run {run_id!r} not found")
    return rec


def current_run(rec: Annotated[RunRecord | None, Depends(visible_run)]) -> RunRecord:
    """The run named by the path, checked by :func:`visible_run` (computed once per request)."""
    if rec is None:  # a route without {run_id} asked for a run: a bug in the route, not bad input
        raise RuntimeError("current_run used on a route without a {run_id} path parameter")
    return rec


SettingsDep = Annotated[Settings, Depends(get_settings)]
StoreDep = Annotated[Store, Depends(get_store)]
RedisDep = Annotated[redis.Redis, Depends(get_redis)]
EventsDep = Annotated[EventStream, Depends(get_events)]
CeleryDep = Annotated[Celery, Depends(get_celery)]
RepoDep = Annotated[RunRepository, Depends(get_repo)]
AccountsDep = Annotated[Accounts, Depends(get_accounts)]
TicketsDep = Annotated[WsTickets, Depends(get_tickets)]
CurrentUser = Annotated[str, Depends(current_user)]
RunDep = Annotated[RunRecord, Depends(current_run)]
