"""Dependencies of the api, as ``Annotated`` aliases that tests can override."""

from __future__ import annotations

from functools import lru_cache
from typing import Annotated

import redis
from celery import Celery
from fastapi import Depends

from netlapse.core.events import EventStream, connect
from netlapse.core.queue import make_celery
from netlapse.core.runs import RunRepository
from netlapse.core.settings import Settings, get_settings
from netlapse.core.store import Store, store_from_settings


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


SettingsDep = Annotated[Settings, Depends(get_settings)]
StoreDep = Annotated[Store, Depends(get_store)]
RedisDep = Annotated[redis.Redis, Depends(get_redis)]
EventsDep = Annotated[EventStream, Depends(get_events)]
CeleryDep = Annotated[Celery, Depends(get_celery)]
RepoDep = Annotated[RunRepository, Depends(get_repo)]
