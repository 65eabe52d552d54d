"""Users and API tokens, kept in the object store. Tokens are stored only as SHA-256 hashes.

Layout::

    auth/users/{name}.json          {"name", "created_at"}
    auth/tokens/{sha256}.json       {"user", "created_at", "label"}

A token is ``secrets.token_urlsafe(32)`` (256 random bits), shown once when it is issued. Looking one up
is a single read of ``auth/tokens/{sha256(token)}.json``, so the plaintext never reaches the store and
a leaked store does not leak usable tokens.
"""

from __future__ import annotations

import hashlib
import re
import secrets
import threading
import time
from datetime import datetime
from typing import Any

from pydantic import BaseModel, Field

from netlapse.core.schemas import RunRecord, utcnow
from netlapse.core.store import ObjectNotFound, Store

LOCAL_USER = "local"
"""The user of every request when auth is off; runs created then belong to it."""

USER_RE = re.compile(r"^[a-z][a-z0-9_.-]{0,31}$")
MAX_TOKEN_CHARS = 256
USERS_PREFIX = "auth/users/"
TOKENS_PREFIX = "auth/tokens/"


class UserExists(ValueError):
    """``add_user`` for a name that is taken."""


class UnknownUser(KeyError):
    """A user name with no record."""

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.name = name

    def __str__(self) -> str:
        return f"no user {self.name!r}; add one with `netlapse user add {self.name}`"


class UserRecord(BaseModel):
    """``auth/users/{name}.json``."""

    name: str
    created_at: datetime = Field(default_factory=utcnow)


class TokenRecord(BaseModel):
    """``auth/tokens/{sha256}.json``: who a token belongs to; never the token itself."""

    user: str
    created_at: datetime = Field(default_factory=utcnow)
    label: str = ""


class UserInfo(BaseModel):
    """A user as ``netlapse user list`` shows it."""

    name: str
    created_at: datetime
    tokens: int


def hash_token(token: str) -> str:
    """The hex SHA-256 of a token: its name in the store."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def new_token() -> str:
    """A fresh random token (43 URL-safe characters, never starting with '-')."""
    while True:  # a leading '-' would read as an option in `netlapse … --token T`
        token = secrets.token_urlsafe(32)
        if not token.startswith("-"):
            return token


def validate_user_name(name: str) -> str:
    """``name`` if it is a valid user name, else ValueError saying what is allowed."""
    if not USER_RE.match(name):
        raise ValueError(
            f"invalid user name {name!r}: 1-32 characters, lowercase letters, digits, '.', '_' or '-', "
            "starting with a letter"
        )
    return name


def user_key(name: str) -> str:
    return f"{USERS_PREFIX}{validate_user_name(name)}.json"


def token_key(digest: str) -> str:
    return f"{TOKENS_PREFIX}{digest}.json"


def may_access(auth_required: bool, user: str, rec: RunRecord) -> bool:
    """Whether ``user`` may see run ``rec``: its owner only, when auth is on; everyone when it is off."""
    return not auth_required or rec.owner == user


class Accounts:
    """Users and their tokens in a store. ``cache_ttl_s`` > 0 remembers valid tokens that long (the api does,
    so a request costs no extra store read; a revoked token then stops working within that time), and unknown
    ones as long (so a client retrying a bad token costs no store reads either)."""

    def __init__(self, store: Store, cache_ttl_s: float = 0.0) -> None:
        self.store = store
        self.cache_ttl_s = cache_ttl_s
        self._cache: dict[str, tuple[str, float]] = {}
        # unknown tokens, remembered as briefly (a client retrying a bad token costs no store reads)
        self._misses: dict[str, float] = {}
        self._lock = threading.Lock()

    # -- users

    def add_user(self, name: str, label: str = "") -> str:
        """Create user ``name`` and return its first token (the only time the plaintext exists)."""
        key = user_key(name)
        if self.store.exists(key):
            raise UserExists(
                f"user {name!r} already exists; `netlapse user token {name}` issues another token"
            )
        self.store.put(key, UserRecord(name=name).model_dump_json().encode())
        return self.issue_token(name, label)

    def get_user(self, name: str) -> UserRecord:
        """The user's record, or UnknownUser."""
        try:
            return UserRecord.model_validate_json(self.store.get(user_key(name)))
        except ObjectNotFound:
            raise UnknownUser(name) from None

    def list_users(self) -> list[UserInfo]:
        """Every user with its number of valid tokens, by name."""
        counts: dict[str, int] = {}
        for rec in self._tokens():
            counts[rec.user] = counts.get(rec.user, 0) + 1
        out = []
        for key in self.store.list(USERS_PREFIX):
            try:
                u = UserRecord.model_validate_json(self.store.get(key))
            except ObjectNotFound:
                continue  # removed between list and get
            out.append(UserInfo(name=u.name, created_at=u.created_at, tokens=counts.get(u.name, 0)))
        return sorted(out, key=lambda u: u.name)

    # -- tokens

    def issue_token(self, name: str, label: str = "") -> str:
        """A new token for an existing user; only its hash is stored."""
        self.get_user(name)
        token = new_token()
        rec = TokenRecord(user=name, label=label)
        self.store.put(token_key(hash_token(token)), rec.model_dump_json().encode())
        return token

    def revoke(self, name: str) -> int:
        """Delete every token of ``name``; returns how many. The user record stays (a new token can be issued)."""
        self.get_user(name)
        n = 0
        for key in self.store.list(TOKENS_PREFIX):
            try:
                rec = TokenRecord.model_validate_json(self.store.get(key))
            except ObjectNotFound:
                continue
            if rec.user == name:
                n += self.store.delete_prefix(key)
        with self._lock:
            self._cache = {d: v for d, v in self._cache.items() if v[0] != name}
        return n

    def authenticate(self, token: str) -> str | None:
        """The user a token belongs to, or None when it is unknown or revoked."""
        if not token or len(token) > MAX_TOKEN_CHARS:
            return None
        digest = hash_token(token)
        now = time.monotonic()
        if self.cache_ttl_s > 0:
            with self._lock:
                hit = self._cache.get(digest)
                missed = self._misses.get(digest, 0.0) > now
            if hit is not None and hit[1] > now:
                return hit[0]
            if missed:
                return None
        try:
            rec = TokenRecord.model_validate_json(self.store.get(token_key(digest)))
        except ObjectNotFound:
            if self.cache_ttl_s > 0:
                with self._lock:
                    if len(self._misses) > 10_000:
                        self._misses = {d: t for d, t in self._misses.items() if t > now}
                        if len(self._misses) > 10_000:
                            self._misses.clear()
                    self._misses[digest] = now + self.cache_ttl_s
            return None
        if self.cache_ttl_s > 0:
            with self._lock:
                if len(self._cache) > 10_000:  # bounded: drop everything rather than track ages
                    self._cache.clear()
                self._cache[digest] = (rec.user, now + self.cache_ttl_s)
        return rec.user

    def _tokens(self) -> list[TokenRecord]:
        out = []
        for key in self.store.list(TOKENS_PREFIX):
            try:
                out.append(TokenRecord.model_validate_json(self.store.get(key)))
            except ObjectNotFound:
                continue
        return out


TICKET_PREFIX = "netlapse:ws-ticket:"


class WsTickets:
    """Short-lived, single-use tickets that authenticate a WebSocket (``?ticket=``), so an API token never travels
    in a URL. Kept in Redis (shared by every api process) under the ticket's SHA-256, consumed atomically."""

    def __init__(self, redis_client: Any, ttl_s: float) -> None:
        self.redis = redis_client
        self.ttl_ms = max(1, int(ttl_s * 1000))

    def issue(self, user: str) -> str:
        """A new ticket for ``user``, valid once within the TTL."""
        ticket = secrets.token_urlsafe(24)
        self.redis.set(TICKET_PREFIX + hash_token(ticket), user, px=self.ttl_ms)
        return ticket

    def redeem(self, ticket: str) -> str | None:
        """The ticket's user, or None when it is unknown, expired or already used (it is used up either way)."""
        if not ticket or len(ticket) > MAX_TOKEN_CHARS:
            return None
        user = self.redis.getdel(TICKET_PREFIX + hash_token(ticket))
        if user is None:
            return None
        return user.decode() if isinstance(user, bytes) else str(user)
