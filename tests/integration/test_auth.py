"""Multi-user against a real stack started with NETLAPSE_AUTH_REQUIRED=1: tokens, private runs, WebSocket auth,
body limit. Users are created through core.auth straight in the stack's store, as `netlapse user add` does."""

from __future__ import annotations

import json
import re
import shutil
import time
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import httpx
import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from netlapse.cli.stack import Stack, free_port
from netlapse.client import ApiError, Client
from netlapse.core.auth import Accounts
from netlapse.core.store import LocalStore
from tests.integration.helpers import wait_terminal

TINY_RUN = {
    "name": "alice-private",
    "model": {"preset": "tiny-cnn"},
    "dataset": "synthetic",
    "training": {"epochs": 1, "batch_size": 512, "optimizer": "sgd", "lr": 0.05, "seed": 0},
    "capture": {"every": 1},
}


class AuthStack:
    """The running stack, its users' tokens, and a way to add more."""

    def __init__(self, stack: Stack, accounts: Accounts, tokens: dict[str, str]) -> None:
        self.stack, self.accounts, self.tokens = stack, accounts, tokens
        self.base = f"http://127.0.0.1:{stack.api_port}"

    def client(self, user: str | None) -> httpx.Client:
        headers = {"Authorization": f"Bearer {self.tokens[user]}"} if user else {}
        return httpx.Client(base_url=self.base, headers=headers, timeout=60)


@pytest.fixture(scope="module")
def auth_stack(tmp_path_factory: pytest.TempPathFactory, artifacts_dir: Path) -> Iterator[AuthStack]:
    data = tmp_path_factory.mktemp("netlapse-auth")
    store_dir = data / "store"
    accounts = Accounts(LocalStore(store_dir))
    tokens = {user: accounts.add_user(user) for user in ("alice", "bob")}
    log_dir = artifacts_dir / "stack-logs-auth"
    shutil.rmtree(
        log_dir, ignore_errors=True
    )  # test_no_token_or_ticket_in_any_service_log reads this run's only
    s = Stack(
        data_dir=data,
        api_port=free_port(),
        log_dir=log_dir,
        extra_env={
            "NETLAPSE_AUTH_REQUIRED": "1",
            "NETLAPSE_STORE_URL": f"file://{store_dir}",
            "NETLAPSE_WS_TICKET_TTL_S": "4",
            "NETLAPSE_WS_MAX_PER_USER": "2",
        },
        api_log_level="info",  # every request line is logged: test_no_secret_in_any_log reads them
    )
    s.start()
    try:
        yield AuthStack(s, accounts, tokens)
    finally:
        s.stop()


@pytest.fixture(scope="module")
def alice_run(auth_stack: AuthStack) -> dict[str, Any]:
    """A finished run of alice's."""
    with auth_stack.client("alice") as alice:
        r = alice.post("/api/runs", json=TINY_RUN)
        assert r.status_code == 201, r.text
        assert r.json()["owner"] == "alice"
        run = wait_terminal(alice, r.json()["id"])
    assert run["status"] == "succeeded", run
    return run


def ws_session(base: str, path: str, headers: dict[str, str] | None = None) -> tuple[list[dict], int | None]:
    """Every message the server sends on a WebSocket until it closes, and its close code."""
    url = base.replace("http://", "ws://") + path
    messages: list[dict] = []
    with connect(url, additional_headers=headers or {}, open_timeout=10, close_timeout=5) as ws:
        try:
            while True:
                messages.append(json.loads(ws.recv(timeout=60)))
        except ConnectionClosed:
            pass
        return messages, ws.close_code


def ticket(auth_stack: AuthStack, user: str) -> str:
    """A WebSocket ticket of ``user`` (POST /api/ws-ticket with the user's token)."""
    with auth_stack.client(user) as c:
        r = c.post("/api/ws-ticket", json={})
        assert r.status_code == 200, r.text
        return str(r.json()["ticket"])


def test_health_presets_datasets_need_no_token(auth_stack: AuthStack) -> None:
    with auth_stack.client(None) as anon:
        assert anon.get("/api/health").json()["status"] == "ok"
        assert anon.get("/api/presets").status_code == 200
        assert anon.get("/api/datasets").status_code == 200


def test_no_token_or_a_bad_one_is_401_saying_how_to_get_one(auth_stack: AuthStack) -> None:
    with auth_stack.client(None) as anon:
        for method, path in (("GET", "/api/runs"), ("POST", "/api/runs"), ("GET", "/api/me")):
            r = anon.request(method, path, json=TINY_RUN if method == "POST" else None)
            assert r.status_code == 401, (path, r.text)
            assert "netlapse user add" in r.json()["detail"]
        r = anon.get("/api/runs", headers={"Authorization": "Bearer not-a-real-token"})
        assert r.status_code == 401 and "not valid" in r.json()["detail"]
        assert anon.get("/api/datasets/synthetic/samples", params={"indices": "0"}).status_code == 401
    msgs, code = ws_session(auth_stack.base, "/api/runs/whatever0001/events")
    assert code == 4401 and msgs[0]["type"] == "error" and "token" in msgs[0]["data"]["detail"]
    # a token in a URL is never accepted (URLs land in logs and browser history), not even a valid one
    msgs, code = ws_session(
        auth_stack.base, f"/api/runs/whatever0001/events?token={auth_stack.tokens['alice']}"
    )
    assert code == 4401 and "ws-ticket" in msgs[0]["data"]["detail"]
    with auth_stack.client(None) as anon:
        assert anon.get("/api/me", params={"token": auth_stack.tokens["alice"]}).status_code == 401
        assert anon.post("/api/ws-ticket", json={}).status_code == 401
    msgs, code = ws_session(auth_stack.base, "/api/runs/whatever0001/events?ticket=made-up")
    assert code == 4401 and "unknown, expired or already used" in msgs[0]["data"]["detail"]


def test_runs_are_private_to_their_owner(auth_stack: AuthStack, alice_run: dict[str, Any]) -> None:
    rid = alice_run["id"]
    with auth_stack.client("alice") as alice, auth_stack.client("bob") as bob:
        steps = alice.get(f"/api/runs/{rid}/steps").json()["steps"]
        assert steps[0] == 0 and len(steps) > 1
        assert (
            alice.get(f"/api/runs/{rid}/diff/conv1.weight", params={"from": 0, "to": steps[-1]}).status_code
            == 200
        )
        unknown = bob.get("/api/runs/nosuchrun0001").json()["detail"]
        for method, path, body in (
            ("GET", "", None),
            ("GET", "/steps", None),
            ("GET", "/tensors", None),
            ("GET", "/tensors/conv1.weight?step=0", None),
            ("GET", f"/diff/conv1.weight?from=0&to={steps[-1]}", None),
            ("GET", "/metrics", None),
            ("POST", "/activations", {"step": 0, "layer": "conv1", "per_label": 1}),
            ("POST", "/cancel", {}),
            ("DELETE", "", None),
        ):
            r = bob.request(method, f"/api/runs/{rid}{path}", json=body)
            assert r.status_code == 404, (method, path, r.text)
            assert r.json()["detail"] == unknown.replace("nosuchrun0001", rid)
        assert rid not in [r["id"] for r in bob.get("/api/runs").json()["runs"]]
        assert rid in [r["id"] for r in alice.get("/api/runs").json()["runs"]]
        assert (
            alice.get(f"/api/runs/{rid}").json()["status"] == "succeeded"
        )  # bob's cancel/delete did nothing

    bob_msgs, bob_code = ws_session(
        auth_stack.base, f"/api/runs/{rid}/events?ticket={ticket(auth_stack, 'bob')}"
    )
    assert bob_code == 4404 and bob_msgs == [
        {"type": "error", "run_id": rid, "data": {"detail": f"run {rid!r} not found"}}
    ]
    # The browser's way (a single-use ticket) and the header both stream the owner's events to the final status.
    for path, headers in (
        (f"/api/runs/{rid}/events?ticket={ticket(auth_stack, 'alice')}", None),
        (f"/api/runs/{rid}/events", {"Authorization": f"Bearer {auth_stack.tokens['alice']}"}),
    ):
        msgs, code = ws_session(auth_stack.base, path, headers)
        assert code == 1000
        assert msgs[-1]["type"] == "status" and msgs[-1]["data"]["status"] == "succeeded"


def test_python_client_sends_its_token(auth_stack: AuthStack, alice_run: dict[str, Any]) -> None:
    with Client(auth_stack.base, token=auth_stack.tokens["alice"]) as alice:
        assert alice.me() == {"user": "alice", "auth_required": True}
        assert alice_run["id"] in [r["id"] for r in alice.runs()]
        assert alice.tensor(alice_run["id"], "conv1.weight", 0).shape[0] > 0
    with Client(auth_stack.base, token=auth_stack.tokens["bob"]) as bob, pytest.raises(ApiError) as err:
        bob.steps(alice_run["id"])
    assert err.value.status == 404


def test_bodies_over_1_mib_are_refused_with_413(auth_stack: AuthStack) -> None:
    body = json.dumps({**TINY_RUN, "name": "x" * (2 * 1024 * 1024)}).encode()
    with auth_stack.client("alice") as alice:
        r = alice.post("/api/runs", content=body, headers={"content-type": "application/json"})
        assert r.status_code == 413
        assert "too large" in r.json()["detail"]
        assert alice.get("/api/me").json()["user"] == "alice"  # the server is fine afterwards


def test_a_revoked_token_stops_working(auth_stack: AuthStack) -> None:
    token = auth_stack.accounts.add_user("carol")
    with httpx.Client(base_url=auth_stack.base, headers={"Authorization": f"Bearer {token}"}) as carol:
        assert carol.get("/api/me").json()["user"] == "carol"
        assert carol.get("/api/runs").json()["runs"] == []
        auth_stack.accounts.revoke("carol")
        deadline = time.monotonic() + 15  # the api caches a valid token for a few seconds
        while carol.get("/api/me").status_code != 401:
            assert time.monotonic() < deadline, "revoked token still accepted"
            time.sleep(0.5)


def test_a_ws_ticket_works_once_and_only_within_its_ttl(
    auth_stack: AuthStack, alice_run: dict[str, Any]
) -> None:
    rid = alice_run["id"]
    with auth_stack.client("alice") as alice:
        ttl = alice.get("/api/limits").json()["ws_ticket_ttl_s"]  # the TTL the server enforces
        r = alice.post("/api/ws-ticket", json={})
        assert r.json()["expires_in"] == ttl and auth_stack.tokens["alice"] not in r.text
    t = r.json()["ticket"]
    msgs, code = ws_session(auth_stack.base, f"/api/runs/{rid}/events?ticket={t}")
    assert code == 1000 and msgs[-1]["data"]["status"] == "succeeded"
    msgs, code = ws_session(auth_stack.base, f"/api/runs/{rid}/events?ticket={t}")  # the same ticket again
    assert code == 4401 and "already used" in msgs[0]["data"]["detail"]
    # just under the TTL: accepted; just over: refused
    t1, t2 = ticket(auth_stack, "alice"), ticket(auth_stack, "alice")
    issued = time.monotonic()
    time.sleep(max(0.0, ttl - 1.5 - (time.monotonic() - issued)))
    age = time.monotonic() - issued
    msgs, code = ws_session(auth_stack.base, f"/api/runs/{rid}/events?ticket={t1}")
    assert age < ttl and code == 1000, (age, msgs[:1])
    time.sleep(max(0.0, ttl + 0.5 - (time.monotonic() - issued)))
    msgs, code = ws_session(auth_stack.base, f"/api/runs/{rid}/events?ticket={t2}")
    assert code == 4401 and "expired" in msgs[0]["data"]["detail"]


def test_websockets_per_user_are_capped(auth_stack: AuthStack) -> None:
    long_run = {
        **TINY_RUN,
        "name": "long",
        "training": {**TINY_RUN["training"], "epochs": 50, "batch_size": 16},
    }
    with auth_stack.client("alice") as alice:
        cap = alice.get("/api/limits").json()["ws_max_per_user"]
        r = alice.post("/api/runs", json=long_run)
        assert r.status_code == 201, r.text
        rid = r.json()["id"]
        url = auth_stack.base.replace("http://", "ws://") + f"/api/runs/{rid}/events"
        header = {"Authorization": f"Bearer {auth_stack.tokens['alice']}"}
        sockets = ExitStack()
        held = [
            sockets.enter_context(connect(url, additional_headers=header, open_timeout=10))
            for _ in range(cap)
        ]
        try:
            for ws in held:
                assert json.loads(ws.recv(timeout=30))["run_id"] == rid  # each one streams
            msgs, code = ws_session(auth_stack.base, f"/api/runs/{rid}/events", header)
            assert code == 4429 and f"at most {cap} live event streams" in msgs[0]["data"]["detail"]
            # another user is not affected by alice's sockets
            _, bob_code = ws_session(
                auth_stack.base, f"/api/runs/{rid}/events?ticket={ticket(auth_stack, 'bob')}"
            )
            assert bob_code == 4404
            held.pop().close()
            deadline = time.monotonic() + 10
            while True:  # the server notices the close within its poll interval
                with connect(url, additional_headers=header, open_timeout=10) as ws:
                    first = json.loads(ws.recv(timeout=30))
                if first["type"] != "error" or time.monotonic() > deadline:
                    break
                time.sleep(0.5)
            assert first["type"] != "error", first
        finally:
            sockets.close()
            alice.post(f"/api/runs/{rid}/cancel", json={})
            wait_terminal(alice, rid)


def test_no_token_or_ticket_in_any_service_log(auth_stack: AuthStack, alice_run: dict[str, Any]) -> None:
    """What a browser session does (sign in, list, open a run, live events by ticket, analyses), then every log
    of every service is searched for the tokens and for any unmasked ticket."""
    rid = alice_run["id"]
    with auth_stack.client("alice") as alice:
        for path in (
            "/api/me",
            "/api/runs",
            f"/api/runs/{rid}",
            f"/api/runs/{rid}/steps",
            f"/api/runs/{rid}/metrics",
        ):
            assert alice.get(path).status_code == 200, path
        assert alice.get(f"/api/runs/{rid}/diff/conv1.weight", params={"from": 0, "to": 1}).status_code == 200
        alice.get("/api/runs", params={"token": auth_stack.tokens["alice"]})  # a careless client's URL
    for _ in range(2):
        ws_session(auth_stack.base, f"/api/runs/{rid}/events?since=0-0&ticket={ticket(auth_stack, 'alice')}")
    ws_session(auth_stack.base, f"/api/runs/{rid}/events?ticket={ticket(auth_stack, 'bob')}")
    log_dir = artifacts_logs(auth_stack)
    logs = {p.name: p.read_text(errors="replace") for p in sorted(log_dir.glob("*.log"))}
    assert {"api.log", "trainer.log", "analyzer.log", "redis.log"} <= set(logs)
    assert (
        "/api/ws-ticket" in logs["api.log"] and "ticket=[redacted]" in logs["api.log"]
    )  # access lines exist
    for name, text in logs.items():
        for user, token in auth_stack.tokens.items():
            assert token not in text, f"{user}'s token is in {name}"
        for m in re.finditer(r"(?:ticket|token)=([^&\s\"']*)", text):
            assert m.group(1) == "[redacted]", f"{name}: {m.group(0)}"


def artifacts_logs(auth_stack: AuthStack) -> Path:
    assert auth_stack.stack.log_dir is not None
    return auth_stack.stack.log_dir


def test_the_embedded_redis_needs_its_random_password(auth_stack: AuthStack) -> None:
    import redis

    s = auth_stack.stack
    assert s.redis_url is not None and s.redis_password and f":{s.redis_password}@" in s.redis_url
    port = int(s.redis_url.rsplit(":", 1)[1].split("/")[0])
    with pytest.raises(redis.AuthenticationError):
        redis.Redis(
            host="127.0.0.1", port=port
        ).ping()  # another local account knows the port, not the password
    assert redis.Redis.from_url(s.redis_url).ping()
    cmdline = Path(f"/proc/{s.procs['redis'].pid}/cmdline").read_bytes()
    assert s.redis_password.encode() not in cmdline  # `ps` shows argv to every local user
    assert b"127.0.0.1" in cmdline  # loopback only
    logs = "".join(p.read_text(errors="replace") for p in artifacts_logs(auth_stack).glob("*.log"))
    assert s.redis_password not in logs


# --- the authorization matrix, generated from the OpenAPI document ---------------------------------------------

DESTRUCTIVE = {("post", "/api/runs/{run_id}/cancel"), ("delete", "/api/runs/{run_id}")}


def _values(last_step: int) -> dict[str, Any]:
    """A valid value for every parameter name the run routes use (a new name fails the matrix, asking for one)."""
    return {
        "name": "conv1.weight",
        "step": 0,
        "from": 0,
        "to": last_step,
        "index": "0",
        "layer": "conv1",
        "per_label": 1,
    }


def _request(op: dict[str, Any], path: str, run_id: str, last_step: int) -> tuple[str, dict[str, Any], Any]:
    values = _values(last_step)
    url = path.replace("{run_id}", run_id)
    query: dict[str, Any] = {}
    params = op.get("parameters", [])
    has_range = any(p["name"] in ("from", "to") and p.get("required") for p in params)
    for p in params:
        if p["in"] == "path" and p["name"] != "run_id":
            assert p["name"] in values, f"{path}: no test value for path parameter {p['name']!r}"
            url = url.replace("{" + p["name"] + "}", str(values[p["name"]]))
        elif p["in"] == "query" and (p.get("required") or (p["name"] == "step" and not has_range)):
            assert p["name"] in values, f"{path}: no test value for required query parameter {p['name']!r}"
            query[p["name"]] = values[p["name"]]
    body = None
    if "requestBody" in op:
        ref = op["requestBody"]["content"]["application/json"]["schema"]["$ref"].rsplit("/", 1)[1]
        schema = SPEC_CACHE["components"]["schemas"][ref]
        body = {}
        for f in schema.get("required", []) + (["per_label"] if "per_label" in schema["properties"] else []):
            assert f in values, f"{path}: no test value for body field {f!r}"
            body[f] = values[f]
    return url, query, body


SPEC_CACHE: dict[str, Any] = {}


def test_authorization_matrix_of_every_run_operation(
    auth_stack: AuthStack, alice_run: dict[str, Any]
) -> None:
    """Every ``/api/runs/{run_id}…`` operation of the OpenAPI document × {owner, another user, no token}
    → 2xx / 404 (the same answer as for an unknown run) / 401; plus the run's WebSocket."""
    rid = alice_run["id"]
    with (
        auth_stack.client("alice") as alice,
        auth_stack.client("bob") as bob,
        auth_stack.client(None) as anon,
    ):
        SPEC_CACHE.update(anon.get("/openapi.json").json())
        last = alice.get(f"/api/runs/{rid}/steps").json()["steps"][-1]
        ops = [
            (method, path, op)
            for path, item in SPEC_CACHE["paths"].items()
            if path.startswith("/api/runs/{run_id}")
            for method, op in item.items()
        ]
        assert len(ops) >= 15, [f"{m} {p}" for m, p, _ in ops]
        victim = alice.post(
            "/api/runs",
            json={
                **TINY_RUN,
                "name": "victim",
                "training": {**TINY_RUN["training"], "epochs": 100, "batch_size": 16},
            },
        ).json()["id"]
        seen = []
        # destructive last: cancel the victim, then delete it
        for method, path, op in sorted(ops, key=lambda o: ((o[0], o[1]) in DESTRUCTIVE, o[0] == "delete")):
            target = victim if (method, path) in DESTRUCTIVE else rid
            url, query, body = _request(op, path, target, last)
            kw: dict[str, Any] = {"params": query}
            if method != "get" and method != "delete":
                kw["json"] = body if body is not None else {}
            # another user and no token first: they must change nothing
            r = bob.request(method.upper(), url, **kw)
            assert r.status_code == 404, (method, path, "bob", r.status_code, r.text[:200])
            assert r.json()["detail"] == f"run {target!r} not found"
            r = anon.request(method.upper(), url, **kw)
            assert r.status_code == 401, (method, path, "no token", r.status_code, r.text[:200])
            if (method, path) == ("delete", "/api/runs/{run_id}"):
                wait_terminal(alice, victim)  # the owner deletes it once cancelled
            r = alice.request(method.upper(), url, **kw)
            assert 200 <= r.status_code < 300, (method, path, "owner", r.status_code, r.text[:300])
            seen.append(f"{method.upper()} {path}")
        assert len(seen) == len(ops)
        assert alice.get(f"/api/runs/{victim}").status_code == 404  # deleted by its owner only
        assert alice.get(f"/api/runs/{rid}").json()["status"] == "succeeded"  # untouched by bob
    # the WebSocket of the same run
    msgs, code = ws_session(auth_stack.base, f"/api/runs/{rid}/events?ticket={ticket(auth_stack, 'alice')}")
    assert code == 1000 and {"type": "status", "status": "succeeded"} in [
        {"type": m["type"], "status": m["data"].get("status")} for m in msgs
    ]
    msgs, code = ws_session(auth_stack.base, f"/api/runs/{rid}/events?ticket={ticket(auth_stack, 'bob')}")
    assert code == 4404 and msgs[0]["data"]["detail"] == f"run {rid!r} not found"
    msgs, code = ws_session(auth_stack.base, f"/api/runs/{rid}/events")
    assert code == 4401
