"""Users and tokens (core.auth), the api's token check, run ownership and body limit — in process, no services."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from netlapse.api.limits import MAX_BODY_BYTES
from netlapse.api.main import create_app
from netlapse.cli.main import main as cli_main
from netlapse.core.auth import (
    LOCAL_USER,
    Accounts,
    UnknownUser,
    UserExists,
    hash_token,
    may_access,
)
from netlapse.core.modelspec import PRESETS
from netlapse.core.runs import RunRepository
from netlapse.core.schemas import CaptureConfig, RunRecord, TrainingConfig
from netlapse.core.settings import Settings, get_settings
from netlapse.core.store import LocalStore


@pytest.fixture
def store(tmp_path: Path) -> LocalStore:
    return LocalStore(tmp_path / "store")


def stored_bytes(root: Path) -> bytes:
    return b"".join(p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file())


# --- core.auth -----------------------------------------------------------------------------------------------------


def test_token_is_stored_only_as_its_sha256(store: LocalStore, tmp_path: Path) -> None:
    token = Accounts(store).add_user("alice", label="laptop")
    assert len(token) >= 40
    digest = hashlib.sha256(token.encode()).hexdigest()
    assert hash_token(token) == digest
    assert store.list("auth/") == ["auth/tokens/" + digest + ".json", "auth/users/alice.json"]
    rec = store.get_json(f"auth/tokens/{digest}.json")
    assert rec["user"] == "alice" and rec["label"] == "laptop"
    everything = stored_bytes(tmp_path / "store")
    assert token.encode() not in everything
    assert token[:16].encode() not in everything


def test_authenticate_finds_the_owner_and_rejects_others(store: LocalStore) -> None:
    accounts = Accounts(store)
    alice = accounts.add_user("alice")
    bob = accounts.add_user("bob")
    assert accounts.authenticate(alice) == "alice"
    assert accounts.authenticate(bob) == "bob"
    assert alice != bob
    assert accounts.authenticate(alice + "x") is None
    assert accounts.authenticate("") is None
    assert accounts.authenticate("a" * 10_000) is None
    assert accounts.authenticate(hash_token(alice)) is None  # the stored hash is not a token


def test_revoke_removes_every_token_of_the_user_only(store: LocalStore) -> None:
    accounts = Accounts(store)
    t1 = accounts.add_user("alice")
    t2 = accounts.issue_token("alice", label="ci")
    tb = accounts.add_user("bob")
    assert {u.name: u.tokens for u in accounts.list_users()} == {"alice": 2, "bob": 1}
    assert accounts.revoke("alice") == 2
    assert accounts.authenticate(t1) is None and accounts.authenticate(t2) is None
    assert accounts.authenticate(tb) == "bob"
    assert {u.name: u.tokens for u in accounts.list_users()} == {"alice": 0, "bob": 1}
    t3 = accounts.issue_token("alice")  # the user stays; a new token works
    assert accounts.authenticate(t3) == "alice"


def test_revoked_token_stops_working_in_another_process_after_the_cache_ttl(
    store: LocalStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    cli = Accounts(store)
    token = cli.add_user("alice")
    api = Accounts(store, cache_ttl_s=5.0)
    now = [1000.0]
    monkeypatch.setattr("netlapse.core.auth.time.monotonic", lambda: now[0])
    assert api.authenticate(token) == "alice"
    cli.revoke("alice")
    assert api.authenticate(token) == "alice"  # still cached
    now[0] += 5.1
    assert api.authenticate(token) is None


def test_user_names_and_errors(store: LocalStore) -> None:
    accounts = Accounts(store)
    accounts.add_user("alice")
    with pytest.raises(UserExists, match="netlapse user token alice"):
        accounts.add_user("alice")
    with pytest.raises(UnknownUser, match="netlapse user add carol"):
        accounts.issue_token("carol")
    with pytest.raises(UnknownUser):
        accounts.revoke("carol")
    for bad in ("", "Alice", "../x", "a/b", "1abc", "a" * 33, "a b"):
        with pytest.raises(ValueError, match="invalid user name"):
            accounts.add_user(bad)
    assert not any("/.." in k or "//" in k for k in store.list(""))


def _run(run_id: str, owner: str) -> RunRecord:
    return RunRecord(
        id=run_id,
        name=run_id,
        owner=owner,
        status="succeeded",
        model=PRESETS["tiny-cnn"].spec,
        dataset="synthetic",
        training=TrainingConfig(),
        capture=CaptureConfig(),
    )


def test_may_access_is_owner_only_when_auth_is_on() -> None:
    rec = _run("aaaaaaaa0001", "alice")
    assert may_access(True, "alice", rec)
    assert not may_access(True, "bob", rec)
    assert may_access(False, LOCAL_USER, rec)  # auth off: one user sees everything, as before


# --- CLI ----------------------------------------------------------------------------------------------------------


def test_cli_user_add_prints_the_token_once_and_revoke_kills_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("NETLAPSE_STORE_URL", f"file://{tmp_path / 'store'}")
    get_settings.cache_clear()
    try:
        assert cli_main(["user", "add", "alice", "--label", "laptop"]) == 0
        out = capsys.readouterr()
        token = out.out.strip()
        assert "\n" not in token and len(token) >= 40
        assert "shown only this once" in out.err
        accounts = Accounts(LocalStore(tmp_path / "store"))
        assert accounts.authenticate(token) == "alice"
        assert cli_main(["user", "add", "alice"]) == 2
        assert "already exists" in capsys.readouterr().err
        assert cli_main(["user", "list"]) == 0
        listing = capsys.readouterr().out
        assert "alice" in listing and token not in listing
        assert cli_main(["user", "revoke", "alice"]) == 0
        assert "revoked 1 token" in capsys.readouterr().out
        assert accounts.authenticate(token) is None
        assert cli_main(["user", "token", "alice"]) == 0
        assert accounts.authenticate(capsys.readouterr().out.strip()) == "alice"
    finally:
        get_settings.cache_clear()


# --- the api in process (TestClient): tokens, ownership, body limit ------------------------------------------------


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[TestClient, dict[str, str], RunRepository]]:
    """The api with auth on over a local store holding alice's and bob's finished runs (no Redis needed)."""
    settings = Settings(
        store_url=f"file://{tmp_path / 'store'}",
        data_dir=tmp_path,
        auth_required=True,
        redis_url="redis://127.0.0.1:1/0",
    )
    store = LocalStore(tmp_path / "store")
    accounts = Accounts(store)
    tokens = {"alice": accounts.add_user("alice"), "bob": accounts.add_user("bob")}
    repo = RunRepository(store)
    repo.save(_run("aaaaaaaa0001", "alice"))
    repo.save(_run("bbbbbbbb0001", "bob"))
    app = create_app()
    app.dependency_overrides[get_settings] = lambda: settings
    with TestClient(app, base_url="http://127.0.0.1") as client:  # an allowed Host (NETLAPSE_ALLOWED_HOSTS)
        yield client, tokens, repo


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def test_api_needs_a_token_and_says_how_to_get_one(
    served: tuple[TestClient, dict[str, str], RunRepository],
) -> None:
    client, tokens, _ = served
    r = client.get("/api/runs")
    assert r.status_code == 401
    assert "netlapse user add" in r.json()["detail"] and "Authorization: Bearer" in r.json()["detail"]
    assert r.headers["www-authenticate"] == "Bearer"
    r = client.get("/api/runs", headers=auth("not-a-token"))
    assert r.status_code == 401 and "not valid" in r.json()["detail"]
    assert client.get("/api/runs", headers={"Authorization": f"Basic {tokens['alice']}"}).status_code == 401
    assert client.get("/api/me", headers=auth(tokens["alice"])).json() == {
        "user": "alice",
        "auth_required": True,
    }
    assert client.get("/api/me", params={"token": tokens["bob"]}).status_code == 401  # never in a URL
    assert client.get("/api/presets").status_code == 200
    assert client.get("/api/datasets").status_code == 200
    assert client.get("/api/datasets/synthetic/samples", params={"indices": "0"}).status_code == 401


def test_another_users_run_is_not_found(served: tuple[TestClient, dict[str, str], RunRepository]) -> None:
    client, tokens, _ = served
    mine = client.get("/api/runs/aaaaaaaa0001", headers=auth(tokens["alice"]))
    assert mine.status_code == 200 and mine.json()["owner"] == "alice"
    theirs = client.get("/api/runs/bbbbbbbb0001", headers=auth(tokens["alice"]))
    unknown = client.get("/api/runs/cccccccc0001", headers=auth(tokens["alice"]))
    assert theirs.status_code == unknown.status_code == 404
    assert theirs.json()["detail"] == "run 'bbbbbbbb0001' not found"
    for method, path in (
        ("GET", "steps"),
        ("GET", "tensors"),
        ("GET", "metrics"),
        ("GET", "tensors/conv1.weight?step=0"),
        ("GET", "diff/conv1.weight?from=0&to=1"),
        ("GET", "trajectory/conv1.weight?index=0"),
        ("GET", "diff/conv1.weight"),  # a 422 here would tell that the run exists
        ("GET", "scatter/conv1.weight?to=1"),
        ("GET", "featuremaps?step=0&layer=conv1&index=0"),
        ("POST", "cancel"),
        ("DELETE", ""),
    ):
        r = client.request(
            method,
            f"/api/runs/bbbbbbbb0001/{path}".rstrip("/"),
            headers={**auth(tokens["alice"]), "content-type": "application/json"},
        )
        assert r.status_code == 404, (method, path, r.text)
    listed = client.get("/api/runs", headers=auth(tokens["alice"])).json()
    assert [r["id"] for r in listed["runs"]] == ["aaaaaaaa0001"] and listed["total"] == 1
    with client.websocket_connect(
        "ws://127.0.0.1/api/runs/bbbbbbbb0001/events", headers=auth(tokens["alice"])
    ) as ws:
        assert ws.receive_json()["data"]["detail"] == "run 'bbbbbbbb0001' not found"
        assert ws.receive()["code"] == 4404
    with client.websocket_connect("ws://127.0.0.1/api/runs/aaaaaaaa0001/events?token=wrong") as ws:
        assert "ws-ticket" in ws.receive_json()["data"]["detail"]
        assert ws.receive()["code"] == 4401


def test_bodies_over_1_mib_answer_413(served: tuple[TestClient, dict[str, str], RunRepository]) -> None:
    client, tokens, _ = served
    big = b'{"name": "' + b"x" * (2 * MAX_BODY_BYTES) + b'"}'
    r = client.post(
        "/api/runs", content=big, headers={**auth(tokens["alice"]), "content-type": "application/json"}
    )
    assert r.status_code == 413 and "at most 1048576 bytes" in r.json()["detail"]

    def chunks() -> Iterator[bytes]:  # no Content-Length: the size is counted while reading
        yield b'{"name": "'
        for _ in range(32):
            yield b"x" * 65536
        yield b'"}'

    r = client.post(
        "/api/runs/aaaaaaaa0001/activations",
        content=chunks(),
        headers={**auth(tokens["alice"]), "content-type": "application/json"},
    )
    assert r.status_code == 413, r.text
    assert "too large" in r.json()["detail"]


def test_unknown_tokens_are_remembered_briefly(store: LocalStore) -> None:
    reads = []
    real_get = store.get
    store.get = lambda key: (reads.append(key), real_get(key))[1]  # type: ignore[method-assign]
    api = Accounts(store, cache_ttl_s=60.0)
    for _ in range(5):
        assert api.authenticate("guessed-token") is None
    assert len(reads) == 1  # one store read, then the miss is cached
    assert Accounts(store, cache_ttl_s=0).authenticate("guessed-token") is None


def test_log_lines_never_carry_secrets_from_urls() -> None:
    import logging

    from netlapse.api.redact import RedactSecrets

    rec = logging.LogRecord(
        "uvicorn.access",
        logging.INFO,
        "",
        0,
        '%s - "%s %s HTTP/%s" %d',
        ("1.2.3.4", "GET", "/a?since=1-0&ticket=abc&token=xyz", "1.1", 200),
        None,
    )
    RedactSecrets().filter(rec)
    line = rec.getMessage()
    assert "abc" not in line and "xyz" not in line
    assert "/a?since=1-0&ticket=[redacted]&token=[redacted]" in line


def test_health_says_only_ok_or_degraded_without_a_token(
    served: tuple[TestClient, dict[str, str], RunRepository],
) -> None:
    client, tokens, _ = served  # its Redis URL points at a closed port: the server is degraded
    anon = client.get("/api/health")
    assert anon.status_code == 503 and anon.json() == {"status": "degraded"}
    bad = client.get("/api/health", headers=auth("not-a-token"))
    assert bad.json() == {"status": "degraded"}
    full = client.get("/api/health", headers=auth(tokens["alice"])).json()
    assert full["status"] == "degraded" and full["redis"].startswith("error") and full["store"] == "ok"
    assert "store_url" in full


def test_local_store_files_are_0600_and_directories_0700(tmp_path: Path) -> None:
    import stat

    s = LocalStore(tmp_path / "store")
    s.put("runs/abc/run.json", b"{}")
    s.put_if("runs/abc/tape/manifest.json", b"{}", None)
    Accounts(s).add_user("alice")
    root = tmp_path / "store"
    for p in [root, *root.rglob("*")]:
        mode = stat.S_IMODE(p.stat().st_mode)
        assert mode == (0o700 if p.is_dir() else 0o600), (p, oct(mode))


def test_new_tokens_never_start_with_a_dash() -> None:
    """`netlapse runs --token T list` would read a token starting with '-' as an option."""
    from netlapse.core.auth import new_token

    tokens = [new_token() for _ in range(2000)]  # ~1 in 64 of token_urlsafe's strings start with '-'
    assert all(len(t) == 43 and not t.startswith("-") for t in tokens)
    assert len(set(tokens)) == len(tokens)
