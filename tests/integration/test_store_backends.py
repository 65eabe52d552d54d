"""One store contract, checked on both backends: a local directory and a real S3 server (moto) via minio."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from netlapse.core.settings import Settings
from netlapse.core.store import (
    LocalStore,
    ObjectNotFound,
    S3Store,
    Store,
    StoreError,
    open_store,
    store_from_settings,
)
from netlapse.core.tape import TapeReader, TapeWriter, TensorInfo
from tests.integration.conftest_s3 import S3Server, s3_server  # noqa: F401  (fixture)

pytestmark = pytest.mark.integration


@pytest.fixture(params=["local", "s3"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    if request.param == "local":
        yield LocalStore(tmp_path / "store")
    else:
        server: S3Server = request.getfixturevalue("s3_server")
        yield server.store(prefix="some/prefix")


def test_put_get_overwrite_and_empty(store: Store) -> None:
    store.put("a/b/c.bin", b"\x00\x01hello")
    assert store.get("a/b/c.bin") == b"\x00\x01hello"
    store.put("a/b/c.bin", b"new")
    assert store.get("a/b/c.bin") == b"new"
    store.put("empty", b"")
    assert store.get("empty") == b"" and store.size("empty") == 0 and store.exists("empty")


def test_get_range(store: Store) -> None:
    data = bytes(range(256)) * 40
    store.put("r/blob", data)
    assert store.get_range("r/blob", 0, 10) == data[:10]
    assert store.get_range("r/blob", 1000, 3000) == data[1000:4000]
    assert store.get_range("r/blob", len(data) - 5, 100) == data[-5:]  # short at the end
    assert store.get_range("r/blob", len(data), 10) == b""  # at/past the end: empty, not an error
    assert store.get_range("r/blob", len(data) + 100, 10) == b""
    assert store.get_range("r/blob", 5, 0) == b""
    with pytest.raises(ValueError):
        store.get_range("r/blob", -1, 3)


def test_exists_and_size(store: Store) -> None:
    store.put("x/y", b"12345")
    assert store.exists("x/y") and store.size("x/y") == 5
    assert not store.exists("x/z")
    assert not store.exists("x")  # a prefix is not an object


def test_list_is_sorted_recursive_and_prefix_exact(store: Store) -> None:
    keys = ["runs/b/run.json", "runs/a/tape/segments/2.seg", "runs/a/run.json", "runs/ab/run.json", "other/x"]
    for k in keys:
        store.put(k, k.encode())
    assert store.list("runs/a/") == ["runs/a/run.json", "runs/a/tape/segments/2.seg"]
    assert store.list("runs/a") == ["runs/a/run.json", "runs/a/tape/segments/2.seg", "runs/ab/run.json"]
    assert store.list("runs/") == sorted(k for k in keys if k.startswith("runs/"))
    assert store.list("") == sorted(keys)
    assert store.list("nothing/") == []


def test_children_lists_one_level(store: Store) -> None:
    for k in [
        "runs/b/run.json",
        "runs/a/tape/segments/2.seg",
        "runs/a/run.json",
        "runs/ab/x",
        "runs/top",
        "other/x",
    ]:
        store.put(k, b"x")
    assert store.children("runs/") == ["a", "ab", "b"]  # folders only, not the object runs/top
    assert store.children("runs/a/") == ["tape"]
    assert store.children("") == ["other", "runs"]
    assert store.children("nothing/") == []


def test_delete_prefix(store: Store) -> None:
    for k in ["runs/a/1", "runs/a/deep/2", "runs/ab/3", "runs/b/4"]:
        store.put(k, b"x")
    assert store.delete_prefix("runs/a/") == 2
    assert store.list("") == ["runs/ab/3", "runs/b/4"]
    assert store.delete_prefix("runs/a/") == 0
    assert store.delete_prefix("runs/") == 2
    assert store.list("") == []
    with pytest.raises(ValueError, match="non-empty"):
        store.delete_prefix("")


def test_json_round_trip(store: Store) -> None:
    obj = {"name": "r", "steps": [0, 1, 2], "nested": {"f": 1.5, "none": None, "ü": "✓"}}
    store.put_json("runs/r/run.json", obj)
    assert store.get_json("runs/r/run.json") == obj
    store.put("bad.json", b"{not json")
    with pytest.raises(StoreError, match="bad.json"):
        store.get_json("bad.json")


def test_missing_objects_raise_object_not_found_naming_the_key(store: Store) -> None:
    for call in (
        lambda: store.get("no/such/key"),
        lambda: store.get_range("no/such/key", 0, 4),
        lambda: store.size("no/such/key"),
        lambda: store.get_json("no/such/key"),
    ):
        with pytest.raises(ObjectNotFound, match="no/such/key") as exc:
            call()
        assert exc.value.key == "no/such/key"
        assert isinstance(exc.value, KeyError) and isinstance(exc.value, StoreError)


@pytest.mark.parametrize("bad", ["", "/abs", "a/../b", "..", "a//b", "a/./b", "dir/", "a\\b"])
def test_invalid_keys_are_rejected(store: Store, bad: str) -> None:
    with pytest.raises(ValueError):
        store.put(bad, b"x")
    with pytest.raises(ValueError):
        store.get(bad)


def test_concurrent_writers_and_readers_never_see_partial_objects(store: Store) -> None:
    a, b = b"A" * 300_000, b"B" * 200_000
    store.put("hot/obj", a)
    errors: list[str] = []
    stop = threading.Event()

    def writer() -> None:
        for i in range(20):
            store.put("hot/obj", b if i % 2 == 0 else a)
        stop.set()

    def reader() -> None:
        while not stop.is_set():
            got = store.get("hot/obj")
            if got not in (a, b):
                errors.append(f"partial read of {len(got)} bytes")

    threads = [threading.Thread(target=writer)] + [threading.Thread(target=reader) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors[:3]
    assert store.list("hot/") == ["hot/obj"]  # no temporary files left visible


def test_tape_round_trip(store: Store) -> None:
    rng = np.random.default_rng(0)
    tensors = [TensorInfo("w", (32, 16), "float32"), TensorInfo("b", (16,), "float64")]
    cur: dict[str, np.ndarray] = {
        "w": rng.standard_normal((32, 16)).astype(np.float32),
        "b": rng.standard_normal(16),
    }
    history = {}
    w = TapeWriter(store, "runs/x/tape/", tensors, segment_target_bytes=3000, segment_max_steps=5)
    for step in range(0, 40, 2):
        w.append(step, cur)
        history[step] = {k: v.copy() for k, v in cur.items()}
        cur = {k: (v - 0.01 * rng.standard_normal(v.shape)).astype(v.dtype) for k, v in cur.items()}
    w.close()
    r = TapeReader(store, "runs/x/tape/")
    assert r.steps() == list(range(0, 40, 2)) and r.complete
    assert len(r.manifest["segments"]) >= 4
    for step, snap in history.items():
        assert np.array_equal(r.read("w", step).view(np.uint32), snap["w"].view(np.uint32))
        assert np.array_equal(r.read("b", step).view(np.uint64), snap["b"].view(np.uint64))
    steps, values = r.trajectory("w", [0, 511])
    assert np.array_equal(values, np.stack([history[s]["w"].reshape(-1)[[0, 511]] for s in steps]))
    r.verify()
    assert store.delete_prefix("runs/x/") == len(r.manifest["segments"]) + 1


def test_open_store_by_url(tmp_path: Path, s3_server: S3Server) -> None:  # noqa: F811
    local = open_store(f"file://{tmp_path}/st")
    assert isinstance(local, LocalStore) and local.url == f"file://{tmp_path}/st"
    local.put("k", b"v")
    assert open_store(local.url).get("k") == b"v"

    s3 = open_store(
        "s3://url-bucket/deep/prefix",
        endpoint=f"http://{s3_server.endpoint}",
        access_key=s3_server.access_key,
        secret_key=s3_server.secret_key,
    )
    assert isinstance(s3, S3Store) and s3.url == "s3://url-bucket/deep/prefix"
    s3.put("k", b"v")
    # The prefix is part of the object name: a store on the bare bucket sees it under deep/prefix/.
    assert s3_server.store(bucket="url-bucket").list("") == ["deep/prefix/k"]

    with pytest.raises(ValueError, match="scheme"):
        open_store("ftp://host/x")
    with pytest.raises(ValueError, match="endpoint"):
        open_store("s3://bucket/x")
    with pytest.raises(ValueError, match="absolute"):
        open_store("file://relative/path")


def test_store_from_settings(tmp_path: Path, s3_server: S3Server) -> None:  # noqa: F811
    local = store_from_settings(Settings(data_dir=tmp_path))
    assert isinstance(local, LocalStore) and local.root == (tmp_path / "store").resolve()
    s3 = store_from_settings(
        Settings(
            s3_endpoint=s3_server.endpoint,
            s3_access_key=s3_server.access_key,
            s3_secret_key=s3_server.secret_key,
            s3_bucket="from-settings",
        )
    )
    assert isinstance(s3, S3Store) and s3.url == "s3://from-settings"
    s3.put_json("x.json", [1])
    assert s3.get_json("x.json") == [1]
