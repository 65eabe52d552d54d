"""The snapshot tape: bit-exact round trips, manifest-last visibility, corruption detection, clear errors."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from netlapse.core.store import LocalStore, ObjectNotFound, Store
from netlapse.core.tape import (
    MANIFEST_NAME,
    StepNotCaptured,
    TapeCorrupt,
    TapeReader,
    TapeWriter,
    TensorInfo,
    shuffle_bytes,
    unshuffle_bytes,
)

PREFIX = "runs/r1/tape/"

TENSORS = [
    TensorInfo("conv.weight", (4, 1, 3, 3), "float32"),
    TensorInfo("conv.bias", (4,), "float32"),
    TensorInfo("fc.weight", (10, 64), "float64"),
    TensorInfo("half", (33,), "float16"),
    TensorInfo("scalar", (), "float32"),
]

# Bit patterns a lossy or value-based codec would mangle: NaN payloads, signalling NaN, infinities, -0.0,
# the smallest subnormal.
SPECIAL_F32 = np.array(
    [0x7FC00001, 0x7F800001, 0xFFC12345, 0x7F800000, 0xFF800000, 0x80000000, 0x00000001], "<u4"
)
SPECIAL_F64 = np.array(
    [0x7FF8000000000001, 0x7FF0000000000000, 0x8000000000000000, 0xFFF0000000000001], "<u8"
)
SPECIAL_F16 = np.array([0x7E01, 0x7C00, 0xFC00, 0x8000, 0x0001], "<u2")


def bits(a: np.ndarray) -> np.ndarray:
    """The raw bits of ``a`` as unsigned ints, so NaN payloads and -0.0 compare exactly."""
    a = np.ascontiguousarray(a)
    if a.dtype.itemsize > 8:  # e.g. complex128: compare as pairs of 8-byte words
        return a.view("<u8")
    return a.view(f"<u{a.dtype.itemsize}")


def snapshots(steps: list[int], seed: int = 0) -> dict[int, dict[str, np.ndarray]]:
    """A random walk per tensor, with special bit patterns sprinkled in at some steps."""
    rng = np.random.default_rng(seed)
    cur = {t.name: rng.standard_normal(t.shape).astype(t.dtype) for t in TENSORS}
    out: dict[int, dict[str, np.ndarray]] = {}
    for i, step in enumerate(steps):
        snap = {}
        for t in TENSORS:
            a = (cur[t.name] + rng.standard_normal(t.shape).astype(t.dtype) * 0.01).astype(t.dtype)
            cur[t.name] = a
            a = a.copy()
            if i % 4 == 1 and a.size >= 8:
                special = {"float32": SPECIAL_F32, "float64": SPECIAL_F64, "float16": SPECIAL_F16}[t.dtype]
                flat = a.reshape(-1).view(special.dtype)
                pos = rng.choice(flat.size, size=min(special.size, flat.size), replace=False)
                flat[pos] = special[: pos.size]
            snap[t.name] = a
        out[step] = snap
    return out


@pytest.fixture
def store(tmp_path: Path) -> LocalStore:
    return LocalStore(tmp_path / "store")


def write_tape(store: Store, snaps: dict[int, dict[str, np.ndarray]], **kw: Any) -> TapeWriter:
    w = TapeWriter(store, PREFIX, TENSORS, **kw)
    for step, snap in snaps.items():
        w.append(step, snap)
    w.close()
    return w


def test_shuffle_roundtrip_all_itemsizes() -> None:
    rng = np.random.default_rng(1)
    for dt in ("float16", "float32", "float64", "int8", "complex128"):
        a = rng.standard_normal((7, 5)).astype(dt)
        assert np.array_equal(bits(unshuffle_bytes(shuffle_bytes(a), a.dtype, a.shape)), bits(a))


def test_round_trip_is_bit_exact_over_segments_with_every_third_step(store: LocalStore) -> None:
    steps = list(range(0, 121, 3))
    snaps = snapshots(steps)
    committed: list[int] = []
    w = write_tape(store, snaps, segment_target_bytes=6_000, segment_max_steps=7, on_commit=committed.append)

    r = TapeReader(store, PREFIX)
    assert r.complete
    assert r.steps() == steps
    assert r.tensors() == TENSORS
    segs = r.manifest["segments"]
    assert len(segs) >= 6, "small targets must split the tape into several segments"
    assert committed == [s["last_step"] for s in segs]
    assert [st for s in segs for st in s["steps"]] == steps
    assert r.manifest["raw_bytes"] == w.raw_bytes == sum(a.nbytes for s in snaps.values() for a in s.values())
    assert r.manifest["stored_bytes"] == w.stored_bytes == sum(store.size(PREFIX + s["key"]) for s in segs)

    # Random order exercises the caches (continuing from cached states, extending cached ranges).
    rng = np.random.default_rng(2)
    pairs = [(t.name, s) for t in TENSORS for s in steps]
    for i in rng.permutation(len(pairs)):
        name, step = pairs[i]
        got = r.read(name, step)
        want = snaps[step][name]
        assert got.dtype == want.dtype and got.shape == want.shape
        assert np.array_equal(bits(got), bits(want)), (name, step)
    # A fresh reader reading each tensor backwards (no useful cache) gives the same answers.
    r2 = TapeReader(store, PREFIX)
    for t in TENSORS:
        for step in reversed(steps):
            assert np.array_equal(bits(r2.read(t.name, step)), bits(snaps[step][t.name]))
    r2.verify()


def test_returned_arrays_are_private_copies(store: LocalStore) -> None:
    snaps = snapshots([0, 1, 2])
    write_tape(store, snaps)
    r = TapeReader(store, PREFIX)
    a = r.read("conv.weight", 1)
    a[...] = 0  # must not poison the cache
    assert np.array_equal(bits(r.read("conv.weight", 1)), bits(snaps[1]["conv.weight"]))


def test_trajectory_matches_every_step(store: LocalStore) -> None:
    steps = list(range(0, 60, 3))
    snaps = snapshots(steps, seed=5)
    write_tape(store, snaps, segment_target_bytes=5_000, segment_max_steps=4)
    r = TapeReader(store, PREFIX)
    for name, idx in (("fc.weight", [0, 5, 639, 5]), ("half", [32, 0]), ("scalar", [0]), ("conv.bias", [])):
        got_steps, values = r.trajectory(name, idx)
        assert got_steps == steps
        want = np.stack([snaps[s][name].reshape(-1)[idx] for s in steps])
        assert values.shape == (len(steps), len(idx))
        assert values.dtype == want.dtype
        assert np.array_equal(bits(values), bits(want))
    with pytest.raises(IndexError, match="0..639"):
        r.trajectory("fc.weight", [640])
    with pytest.raises(IndexError):
        r.trajectory("fc.weight", [-1])


def test_slowly_changing_float32_compresses_below_raw(store: LocalStore) -> None:
    rng = np.random.default_rng(3)
    w = (rng.standard_normal(200_000) * 0.05).astype(np.float32)
    velocity = np.zeros_like(w)
    info = [TensorInfo("w", w.shape, "float32")]
    deltas = TapeWriter(store, "sgd/", info, segment_max_steps=64)
    keyframes_only = TapeWriter(store, "key/", info, keyframe_interval=1)
    history = []
    for step in range(30):
        deltas.append(step, {"w": w})
        keyframes_only.append(step, {"w": w})
        history.append(w)
        grad = (rng.standard_normal(w.shape) * 0.01).astype(np.float32)
        velocity = (0.9 * velocity + grad).astype(np.float32)  # SGD with momentum, lr 0.01
        w = (w - 0.01 * velocity).astype(np.float32)
    deltas.close()
    keyframes_only.close()
    ratio = deltas.stored_bytes / deltas.raw_bytes
    assert ratio < 0.7, f"stored/raw = {ratio:.3f}"
    # Deltas against the previous step must beat storing every step on its own by a clear margin.
    assert deltas.stored_bytes < 0.85 * keyframes_only.stored_bytes
    r = TapeReader(store, "sgd/")
    assert r.stored_bytes == deltas.stored_bytes
    for step in (0, 17, 29):
        assert np.array_equal(bits(r.read("w", step)), bits(history[step]))


def test_reader_sees_only_committed_segments_and_refresh_shows_new_ones(store: LocalStore) -> None:
    snaps = snapshots(list(range(10)))
    w = TapeWriter(store, PREFIX, TENSORS, segment_max_steps=4)
    r = TapeReader(store, PREFIX)  # the empty manifest exists from the start, tensors already listed
    assert r.steps() == [] and r.tensors() == TENSORS and not r.complete
    with pytest.raises(StepNotCaptured, match="no steps are committed"):
        r.read("conv.bias", 0)
    for step in range(6):
        w.append(step, snaps[step])
    assert w.last_committed_step == 3
    r.refresh()
    assert r.steps() == [0, 1, 2, 3]
    with pytest.raises(StepNotCaptured):
        r.read("conv.bias", 5)  # appended but still in the open segment
    w.close(complete=False)
    r.refresh()
    assert r.steps() == list(range(6)) and not r.complete
    assert np.array_equal(bits(r.read("half", 5)), bits(snaps[5]["half"]))


def test_stray_segment_not_in_manifest_is_invisible(store: LocalStore) -> None:
    snaps = snapshots([0, 1, 2, 3])
    write_tape(store, snaps, segment_max_steps=2)
    manifest_before = store.get(PREFIX + MANIFEST_NAME)
    # A segment uploaded by a writer that died before rewriting the manifest.
    store.put(PREFIX + "segments/000000000004-000000000009.seg", b"garbage that is not a segment")
    store.put(PREFIX + "segments/000000000000-000000000001.seg.bak", b"more garbage")
    r = TapeReader(store, PREFIX)
    assert r.steps() == [0, 1, 2, 3]
    with pytest.raises(StepNotCaptured):
        r.read("conv.weight", 4)
    for step in range(4):
        assert np.array_equal(bits(r.read("conv.weight", step)), bits(snaps[step]["conv.weight"]))
    r.verify()
    assert store.get(PREFIX + MANIFEST_NAME) == manifest_before


class FailingManifestStore(LocalStore):
    """Uploads segments fine but fails every index write (manifest or index part) after the first ``allowed``."""

    def __init__(self, root: Path, allowed: int) -> None:
        super().__init__(root)
        self.allowed = allowed

    def put(self, key: str, data: bytes) -> None:
        if key.endswith(MANIFEST_NAME) or "/index/" in key:
            if self.allowed <= 0:
                raise OSError("simulated crash before the manifest write")
            self.allowed -= 1
        super().put(key, data)


def test_segment_uploaded_but_manifest_write_failed_stays_invisible(tmp_path: Path) -> None:
    flaky = FailingManifestStore(tmp_path / "s", allowed=2)  # initial manifest + first index part succeed
    snaps = snapshots(list(range(6)))
    w = TapeWriter(flaky, PREFIX, TENSORS, segment_max_steps=3)
    for step in range(3):
        w.append(step, snaps[step])
    for step in range(3, 5):
        w.append(step, snaps[step])
    with pytest.raises(OSError, match="simulated crash"):
        w.append(5, snaps[5])  # fills the second segment: its upload works, its index part write fails
    segs = flaky.list(PREFIX + "segments/")
    assert len(segs) == 2, "the second segment object was uploaded"
    r = TapeReader(LocalStore(tmp_path / "s"), PREFIX)
    assert r.steps() == [0, 1, 2]
    assert w.last_committed_step == 2
    # The writer kept the open segment, so a retry once the store works again commits it.
    flaky.allowed = 10
    w.commit()
    r.refresh()
    assert r.steps() == list(range(6))
    assert np.array_equal(bits(r.read("fc.weight", 5)), bits(snaps[5]["fc.weight"]))


def _first_segment(store: Store) -> dict[str, Any]:
    return json.loads(store.get(PREFIX + MANIFEST_NAME))["segments"][0]


@pytest.mark.parametrize("digest", [False, True])
def test_flipped_byte_in_a_chunk_raises_tape_corrupt_naming_the_object(
    store: LocalStore, digest: bool
) -> None:
    """With or without the segment's SHA-256 (segment_digest), a flipped byte is found: by the digest, or by
    the chunk's CRC-32 (every read, and verify())."""
    snaps = snapshots(list(range(5)))
    write_tape(store, snaps, segment_digest=digest)
    seg = _first_segment(store)
    assert ("sha256" in seg) == digest
    key = PREFIX + seg["key"]
    data = bytearray(store.get(key))
    # A segment opens with its largest tensor's chunks (the writer encodes them in place): byte 10 lies in
    # fc.weight's keyframe chunk.
    data[10] ^= 0xFF
    store.put(key, bytes(data))
    r = TapeReader(store, PREFIX)
    with pytest.raises(TapeCorrupt, match=seg["key"]):
        r.read("fc.weight", 3)
    with pytest.raises(TapeCorrupt, match=f"{seg['key']}.*(fails its sha256|chunk .* fails its crc32)"):
        r.verify()
    if not digest:
        with pytest.raises(TapeCorrupt, match="crc32"):
            r.verify()


def test_truncated_or_missing_segment_raises_tape_corrupt(store: LocalStore) -> None:
    snaps = snapshots(list(range(5)))
    write_tape(store, snaps)
    seg = _first_segment(store)
    key = PREFIX + seg["key"]
    data = store.get(key)
    store.put(key, data[: len(data) // 2])
    with pytest.raises(TapeCorrupt, match=r"bytes, the manifest says"):
        TapeReader(store, PREFIX).read("half", 0)
    store.delete_prefix(key)
    with pytest.raises(TapeCorrupt, match="missing"):
        TapeReader(store, PREFIX).read("half", 0)


def test_corrupt_index_raises_tape_corrupt(store: LocalStore) -> None:
    write_tape(store, snapshots(list(range(3))))
    seg = _first_segment(store)
    key = PREFIX + seg["key"]
    data = bytearray(store.get(key))
    data[seg["index_offset"] + 3] ^= 0x01
    store.put(key, bytes(data))
    with pytest.raises(TapeCorrupt, match="index"):
        TapeReader(store, PREFIX).read("scalar", 1)


def test_unsupported_manifest_format_or_segment_kind(store: LocalStore) -> None:
    write_tape(store, snapshots([0, 1]))
    m = store.get_json(PREFIX + MANIFEST_NAME)
    store.put_json(PREFIX + MANIFEST_NAME, {**m, "format": 99})
    with pytest.raises(TapeCorrupt, match="format 99"):
        TapeReader(store, PREFIX)
    m["segments"][0]["kind"] = "time-major-v7"
    store.put_json(PREFIX + MANIFEST_NAME, m)
    with pytest.raises(TapeCorrupt, match="time-major-v7"):
        TapeReader(store, PREFIX)


def test_read_errors_are_clear(store: LocalStore) -> None:
    steps = list(range(0, 31, 3))
    write_tape(store, snapshots(steps))
    r = TapeReader(store, PREFIX)
    with pytest.raises(KeyError, match="conv.weight"):  # the message lists what exists
        r.read("nope.weight", 0)
    with pytest.raises(IndexError, match=r"0\.\.30 every 3"):
        r.read("conv.weight", 4)
    with pytest.raises(ValueError, match="step 31 is not on the tape"):
        r.read("conv.weight", 31)
    with pytest.raises(IndexError):
        r.read("conv.weight", -3)
    with pytest.raises(ObjectNotFound, match="manifest.json"):
        TapeReader(store, "runs/none/tape/")


def test_writer_rejects_bad_input_without_changing_the_tape(store: LocalStore) -> None:
    snaps = snapshots([0, 1, 2])
    w = TapeWriter(store, PREFIX, TENSORS)
    w.append(5, snaps[0])
    with pytest.raises(ValueError, match="strictly increase: got step 5 after step 5"):
        w.append(5, snaps[1])
    with pytest.raises(ValueError, match="after step 5"):
        w.append(4, snaps[1])
    bad_shape = {**snaps[1], "fc.weight": snaps[1]["fc.weight"].T}
    with pytest.raises(ValueError, match=r"'fc.weight'.*expected shape \(10, 64\).*got shape \(64, 10\)"):
        w.append(6, bad_shape)
    bad_dtype = {**snaps[1], "conv.bias": snaps[1]["conv.bias"].astype(np.float64)}
    with pytest.raises(ValueError, match="'conv.bias'.*dtype float32.*float64"):
        w.append(6, bad_dtype)
    missing = {k: v for k, v in snaps[1].items() if k != "half"}
    with pytest.raises(ValueError, match=r"missing: \['half'\]"):
        w.append(6, missing)
    with pytest.raises(ValueError, match=r"unexpected: \['extra'\]"):
        w.append(6, {**snaps[1], "extra": np.zeros(1, np.float32)})
    with pytest.raises(TypeError):
        w.append(6, {**snaps[1], "scalar": 1.0})  # type: ignore[dict-item]
    w.append(6, snaps[1])  # the failed calls left nothing behind
    w.close()
    assert TapeReader(store, PREFIX).steps() == [5, 6]
    with pytest.raises(RuntimeError, match="closed"):
        w.append(7, snaps[2])


def test_writer_rejects_bad_tensor_lists(store: LocalStore) -> None:
    with pytest.raises(ValueError, match="duplicate"):
        TapeWriter(store, "a/", [TENSORS[0], TENSORS[0]])
    with pytest.raises(ValueError, match="dtype"):
        TapeWriter(store, "b/", [TensorInfo("x", (2,), "object")])
    with pytest.raises(ValueError, match="at least one"):
        TapeWriter(store, "c/", [])


def test_existing_tape_needs_resume_or_overwrite(store: LocalStore) -> None:
    snaps = snapshots(list(range(6)))
    w = TapeWriter(store, PREFIX, TENSORS)
    for step in range(3):
        w.append(step, snaps[step])
    w.close(complete=False)
    with pytest.raises(FileExistsError, match="resume=True"):
        TapeWriter(store, PREFIX, TENSORS)
    with pytest.raises(ValueError, match="tensors differ"):
        TapeWriter(store, PREFIX, TENSORS[:2], resume=True)
    w2 = TapeWriter(store, PREFIX, TENSORS, resume=True)
    with pytest.raises(ValueError, match="after step 2"):
        w2.append(2, snaps[2])
    for step in range(3, 6):
        w2.append(step, snaps[step])
    w2.close()
    r = TapeReader(store, PREFIX)
    assert r.steps() == list(range(6)) and r.complete
    for step in range(6):
        assert np.array_equal(bits(r.read("fc.weight", step)), bits(snaps[step]["fc.weight"]))
    TapeWriter(store, PREFIX, TENSORS, overwrite=True).close()
    r.refresh()
    assert r.steps() == [] and store.list(PREFIX + "segments/") == []


def test_multithreaded_zstd_round_trip(store: LocalStore) -> None:
    rng = np.random.default_rng(7)
    info = [TensorInfo("big", (700_000,), "float32"), TensorInfo("small", (3,), "float32")]
    w = TapeWriter(store, "mt/", info, zstd_threads=2)
    history = []
    big = rng.standard_normal(700_000).astype(np.float32)
    for step in range(4):
        snap = {"big": big, "small": np.full(3, step, np.float32)}
        w.append(step, snap)
        history.append({k: v.copy() for k, v in snap.items()})
        big = (big + 1e-3 * rng.standard_normal(big.shape)).astype(np.float32)
    w.close()
    r = TapeReader(store, "mt/")
    assert r.manifest["writer"]["zstd_threads"] == 2
    for step, snap in enumerate(history):
        for name, want in snap.items():
            assert np.array_equal(bits(r.read(name, step)), bits(want))
