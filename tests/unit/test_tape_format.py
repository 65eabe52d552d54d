"""Format 2 of the tape: index parts instead of manifest rewrites, incompressible steps bounded, the torch
(device-path) transform writing the same bytes as numpy, and old tapes resumed by the new writer."""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from netlapse.core.store import LocalStore
from netlapse.core.tape import (
    FORMAT,
    MANIFEST_NAME,
    TapeCorrupt,
    TapeOptions,
    TapeReader,
    TapeWriter,
    TensorInfo,
    native,
)
from netlapse.core.tape import transform as tape_transform
from netlapse.core.tape import writer as tape_writer
from tests.unit.test_tape import TENSORS, bits, snapshots

PREFIX = "runs/f2/tape/"
# What a default writer writes here: format 3 (native chunks) where the native codec is built, else 2.
WRITTEN = 3 if native.available() else FORMAT
FIXTURE = Path(__file__).parent.parent / "fixtures" / "tape-v1"


class CountingStore(LocalStore):
    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.puts: list[str] = []

    def put(self, key: str, data: bytes) -> None:
        self.puts.append(key)
        super().put(key, data)


def test_segments_are_listed_by_index_parts_and_the_manifest_is_written_twice(tmp_path: Path) -> None:
    store = CountingStore(tmp_path / "s")
    steps = list(range(12))
    snaps = snapshots(steps, seed=3)
    w = TapeWriter(store, PREFIX, TENSORS, segment_max_steps=3)
    live: list[list[int]] = []
    for s in steps:
        w.append(s, snaps[s])
        if s % 3 == 2:  # a segment was just committed: a reader sees it without a manifest rewrite
            live.append(TapeReader(store, PREFIX).steps())
    assert live == [steps[: 3 * (i + 1)] for i in range(4)]
    assert [k for k in store.puts if k.endswith(MANIFEST_NAME)] == [PREFIX + MANIFEST_NAME]
    parts = [k for k in store.puts if "/index/" in k]
    assert parts == [f"{PREFIX}index/{i:08d}.json" for i in range(4)]
    w.close()
    assert [k for k in store.puts if k.endswith(MANIFEST_NAME)] == [PREFIX + MANIFEST_NAME] * 2
    assert store.list(PREFIX + "index/") == [], "the closing manifest replaces the parts"
    m = store.get_json(PREFIX + MANIFEST_NAME)
    assert FORMAT == 2 and m["format"] == WRITTEN and m["complete"] and len(m["segments"]) == 4
    r = TapeReader(store, PREFIX)
    assert r.steps() == steps and r.complete
    for s in steps:
        for t in TENSORS:
            assert np.array_equal(bits(r.read(t.name, s)), bits(snaps[s][t.name])), (t.name, s)
    r.verify()


def test_an_index_part_that_fails_its_digest_is_tape_corrupt(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "s")
    snaps = snapshots(list(range(6)), seed=4)
    w = TapeWriter(store, PREFIX, TENSORS, segment_max_steps=2)
    for s, snap in snaps.items():
        w.append(s, snap)
    key = PREFIX + "index/00000001.json"
    part = store.get_json(key)
    part["segment"]["last_step"] = 99  # not what the digest covers
    store.put(key, json.dumps(part).encode())
    with pytest.raises(TapeCorrupt, match="index/00000001.json"):
        TapeReader(store, PREFIX)


def test_a_missing_index_part_hides_the_parts_after_it(tmp_path: Path) -> None:
    """Parts are read in order up to the first gap: what a reader lists is always a prefix of the tape."""
    store = LocalStore(tmp_path / "s")
    snaps = snapshots(list(range(6)), seed=5)
    w = TapeWriter(store, PREFIX, TENSORS, segment_max_steps=2)
    for s, snap in snaps.items():
        w.append(s, snap)
    (tmp_path / "s" / PREFIX / "index" / "00000001.json").unlink()
    assert TapeReader(store, PREFIX).steps() == [0, 1]


def test_random_weights_at_every_step_never_store_more_than_raw(tmp_path: Path) -> None:
    """Nothing to predict (fresh random weights each step): every chunk is bounded by its raw bytes plus a
    few header bytes, and the values' exponent bytes still compress a little."""
    store = LocalStore(tmp_path / "s")
    infos = [TensorInfo("w", (256, 300), "float32"), TensorInfo("v", (5000,), "float64")]
    rng = np.random.default_rng(7)
    snaps = {
        s: {
            "w": (rng.standard_normal((256, 300)) * 10.0 ** rng.uniform(-3, 1)).astype(np.float32),
            "v": rng.standard_normal(5000) * 1e3,
        }
        for s in range(10)
    }
    w = TapeWriter(store, PREFIX, infos, block_lanes=16384, keyframe_interval=5)
    for s, snap in snaps.items():
        w.append(s, snap)
        assert w.stored_bytes <= w.raw_bytes, s
    w.close()
    r = TapeReader(store, PREFIX)
    ratio = r.stored_bytes / r.raw_bytes
    assert ratio <= 1.0
    modes = {int(m) for seg in r._segments for m in r._seg_table(seg)[:, 3]}
    assert 3 in modes, "dense blocks (values with their exponents grouped) were chosen"
    for s, snap in snaps.items():
        for name, a in snap.items():
            assert np.array_equal(bits(r.read(name, s)), bits(a)), (name, s)
    steps, vals = r.trajectory("w", [0, 77, 76799])
    assert np.array_equal(
        bits(vals), bits(np.stack([snaps[s]["w"].reshape(-1)[[0, 77, 76799]] for s in steps]))
    )


def test_all_zero_planes_cost_nothing(tmp_path: Path) -> None:
    """A tensor that does not change: its deltas are all-zero planes, a few header bytes per block (zstd
    planes: 1 + 4 x 5 bytes; native: its 8-byte header marked "zero everywhere")."""
    store = LocalStore(tmp_path / "s")
    a = np.random.default_rng(2).standard_normal(100_000).astype(np.float32)
    w = TapeWriter(store, PREFIX, [TensorInfo("a", a.shape, "float32")], block_lanes=1 << 16, entropy="zstd")
    w.append(0, {"a": a})
    after_key = w.stored_bytes
    for s in range(1, 9):
        w.append(s, {"a": a})
    assert w.stored_bytes - after_key == 8 * 2 * (1 + 4 * 5)  # 2 blocks per step, header only
    w.close()
    assert np.array_equal(bits(TapeReader(store, PREFIX).read("a", 8)), bits(a))
    if not native.available():
        return
    p2 = "runs/native/tape/"
    w = TapeWriter(store, p2, [TensorInfo("a", a.shape, "float32")], block_lanes=1 << 16, entropy="native")
    w.append(0, {"a": a})
    after_key = w.stored_bytes
    for s in range(1, 9):
        w.append(s, {"a": a})
    assert w.stored_bytes - after_key == 8 * 2 * 8
    w.close()
    assert np.array_equal(bits(TapeReader(store, p2).read("a", 8)), bits(a))
    assert np.array_equal(
        bits(TapeReader(store, p2).trajectory("a", [7, 99_999])[1][-1]), bits(a[[7, 99_999]])
    )
    return
    w.close()
    assert np.array_equal(bits(TapeReader(store, PREFIX).read("a", 8)), bits(a))


def _segment_digests(store: LocalStore, prefix: str) -> list[str]:
    m = store.get_json(prefix + MANIFEST_NAME)
    return [hashlib.sha256(store.get(prefix + s["key"])).hexdigest() for s in m["segments"]]


def _write(store: LocalStore, prefix: str, snaps: dict[int, dict[str, Any]], **kw: Any) -> TapeWriter:
    w = TapeWriter(store, prefix, TENSORS, TapeOptions(segment_max_steps=5, block_lanes=1024, **kw))
    for s, snap in snaps.items():
        w.append(s, snap)
    w.close()
    return w


def test_torch_transform_writes_the_same_bytes_as_numpy(tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    store = LocalStore(tmp_path / "s")
    snaps = snapshots(list(range(14)), seed=8)
    a = _write(store, "np/", snaps, encoder="numpy", entropy="zstd")
    b = _write(store, "torch/", snaps, encoder="torch")
    assert a.encoder == "numpy" and b.encoder == "torch"
    assert _segment_digests(store, "np/") == _segment_digests(store, "torch/")
    # Torch tensors go in as they are (the capture buffer on the device, on a GPU).
    c = TapeWriter(store, "tt/", TENSORS, TapeOptions(segment_max_steps=5, block_lanes=1024, encoder="torch"))
    for s, snap in snaps.items():
        c.append(s, {k: torch.from_numpy(np.asarray(v)) for k, v in snap.items()})
    c.close()
    assert _segment_digests(store, "tt/") == _segment_digests(store, "np/")
    ra, rb = TapeReader(store, "np/"), TapeReader(store, "tt/")
    for s in snaps:
        for t in TENSORS:
            assert np.array_equal(bits(ra.read(t.name, s)), bits(rb.read(t.name, s)))
            assert np.array_equal(bits(rb.read(t.name, s)), bits(snaps[s][t.name]))


def test_torch_transform_matches_numpy_on_incompressible_and_unchanging_steps(tmp_path: Path) -> None:
    pytest.importorskip("torch")
    store = LocalStore(tmp_path / "s")
    rng = np.random.default_rng(9)
    base = snapshots([0], seed=9)[0]
    snaps = {}
    for s in range(8):  # random, unchanged, random again: dense blocks, zero planes, fresh deltas
        if s in (3, 4, 5):
            snaps[s] = {k: v.copy() for k, v in snaps[2].items()}
        else:
            snaps[s] = {k: (rng.standard_normal(v.shape) * 5).astype(v.dtype) for k, v in base.items()}
    _write(store, "np/", snaps, encoder="numpy", entropy="zstd")
    _write(store, "torch/", snaps, encoder="torch")
    assert _segment_digests(store, "np/") == _segment_digests(store, "torch/")


def test_torch_encoder_says_once_that_entropy_coding_stays_on_the_cpu(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytest.importorskip("torch")
    monkeypatch.setattr(tape_transform, "_FALLBACK_LOGGED", False)
    store = LocalStore(tmp_path / "s")
    with caplog.at_level(logging.INFO, logger="netlapse.core.tape.transform"):
        for p in ("a/", "b/"):
            TapeWriter(store, p, TENSORS, encoder="torch").close()
    lines = [r.getMessage() for r in caplog.records if "nvCOMP" in r.getMessage()]
    assert len(lines) == 1 and "zstd on the CPU" in lines[0]
    # "auto" without a CUDA device is the numpy transform, silently.
    assert TapeWriter(store, "c/", TENSORS, device="cpu").encoder == "numpy"


def test_a_release_0_1_tape_resumes_with_the_new_writer(tmp_path: Path) -> None:
    shutil.copytree(FIXTURE, tmp_path / "f")
    store = LocalStore(tmp_path / "f")
    with np.load(FIXTURE / "expected.npz") as z:
        expected = {k: z[k] for k in z.files}
    old = TapeReader(store, "lossless/")
    infos = old.tensors()
    rng = np.random.default_rng(11)
    more = {
        s: {t.name: rng.standard_normal(t.shape).astype(t.dtype) for t in infos} for s in (20, 21, 22, 30)
    }
    w = TapeWriter(store, "lossless/", infos, resume=True, segment_max_steps=3)
    for s, snap in more.items():
        w.append(s, snap)
    w.close()
    r = TapeReader(store, "lossless/")
    assert r.steps() == [0, 1, 2, 3, 5, 8, 9, 10, 11, 12, 20, 21, 22, 30]
    assert (
        r.manifest["format"] == WRITTEN
        and [s.get("format", 1) for s in r.manifest["segments"]] == [1] * 3 + [WRITTEN] * 2
    )
    for t in infos:
        for s in (0, 5, 12):
            assert np.array_equal(bits(r.read(t.name, s)), bits(expected[f"lossless/{t.name}@{s}"]))
        for s, snap in more.items():
            assert np.array_equal(bits(r.read(t.name, s)), bits(snap[t.name]))
    # One element's trajectory crosses from format-1 into format-2 segments.
    steps, vals = r.trajectory("conv.weight", [0, 5, 71])
    old_part = [expected[f"lossless/conv.weight@{s}"].reshape(-1)[[0, 5, 71]] for s in steps[:10]]
    new_part = [more[s]["conv.weight"].reshape(-1)[[0, 5, 71]] for s in steps[10:]]
    assert np.array_equal(bits(vals), bits(np.stack(old_part + new_part)))
    r.verify()


def test_options_state_each_default_once_and_name_bad_fields() -> None:
    from netlapse.core.settings import Settings

    s = Settings()
    o = TapeOptions.from_settings(s)
    assert (
        (o.segment_target_bytes, o.segment_max_steps, o.zstd_level, o.keyframe_interval)
        == (
            s.segment_target_bytes,
            s.segment_max_steps,
            s.zstd_level,
            s.keyframe_interval,
        )
        == (TapeOptions.segment_target_bytes, 256, 1, 64)
    )
    with pytest.raises(TypeError, match="segment_max_step.*valid: block_lanes"):
        TapeOptions().with_(segment_max_step=3)
    with pytest.raises(ValueError, match="encoder must be one of auto, numpy, torch"):
        TapeOptions(encoder="gpu")
    with pytest.raises(ValueError, match="entropy must be one of auto, native, zstd"):
        TapeOptions(entropy="rans")


def test_a_segment_is_on_disk_before_the_index_part_that_lists_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """LocalStore fsyncs everything written before a commit object; an index part is one."""
    import os

    from netlapse.core.store import is_commit_key

    assert is_commit_key("runs/a/tape/index/00000003.json") and is_commit_key("t/manifest.json")
    assert not is_commit_key("runs/a/tape/segments/000000000000-000000000002.seg")
    synced: list[str] = []
    real_fsync = os.fsync

    def fsync(fd: int) -> None:
        synced.append(os.readlink(f"/proc/self/fd/{fd}"))
        real_fsync(fd)

    store = LocalStore(tmp_path / "s")
    snaps = snapshots(list(range(3)), seed=12)
    w = TapeWriter(store, PREFIX, TENSORS, segment_max_steps=3)
    monkeypatch.setattr(os, "fsync", fsync)
    for s, snap in snaps.items():
        w.append(s, snap)  # the third append commits the segment and its index part
    files = [Path(p).name for p in synced]
    seg = "000000000000-000000000002.seg"
    assert seg in files and any(f.startswith(".tmp-00000000.json") for f in files)
    assert files.index(seg) < next(i for i, f in enumerate(files) if f.startswith(".tmp-00000000.json"))


def test_the_writer_drops_each_committed_segment_from_the_page_cache_only_once_it_is_durable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """After a segment's index part (a commit key: it fsyncs the segment first) the writer asks the store to
    drop the segment's page-cache copy; LocalStore then calls posix_fadvise(DONTNEED) on that file alone, never
    on a file not yet synced, and the tape still reads back bit for bit."""
    import os

    events: list[str] = []
    advised: list[str] = []
    real_fadvise = os.posix_fadvise

    def fadvise(fd: int, off: int, length: int, advice: int) -> None:
        advised.append(os.readlink(f"/proc/self/fd/{fd}"))
        real_fadvise(fd, off, length, advice)

    monkeypatch.setattr(os, "posix_fadvise", fadvise)

    class Spy(LocalStore):
        def put(self, key: str, data: bytes) -> None:
            events.append("put " + key.rsplit("/", 2)[-2] + "/" + key.rsplit("/", 1)[-1])
            super().put(key, data)

        def drop_cached(self, key: str) -> None:
            events.append("drop " + key.rsplit("/", 2)[-2] + "/" + key.rsplit("/", 1)[-1])
            super().drop_cached(key)

    store = Spy(tmp_path / "s")
    snaps = snapshots(list(range(7)))
    w = TapeWriter(store, "t/", TENSORS, segment_max_steps=3)
    for s, snap in snaps.items():
        w.append(s, snap)
    w.close()
    segs = [e for e in events if e.startswith("put segments/")]
    assert len(segs) == 3
    for put in segs:
        name = put.split(" ", 1)[1]
        i = events.index(put)
        assert events[i + 1].startswith("put index/") and events[i + 2] == f"drop {name}"
    assert sorted(Path(a).name for a in advised) == sorted(p.split("/")[-1] for p in segs)
    r = TapeReader(store, "t/")
    for s, snap in snaps.items():
        for name, want in snap.items():
            assert np.array_equal(bits(r.read(name, s)), bits(want))
    # an object written but not yet synced (no commit key after it) is left alone
    advised.clear()
    store.put("t/scratch.bin", b"x" * 10_000)
    store.drop_cached("t/scratch.bin")
    store.drop_cached("t/missing.bin")
    assert advised == []


def test_sealed_segments_wait_for_publish_in_their_own_buffers_and_a_failed_upload_is_retried(
    tmp_path: Path,
) -> None:
    """seal() packs a segment into a reused buffer; publish() uploads oldest first. Segments sealed while
    others wait never share a buffer, a failed upload stays pending and is published by the next call, and
    every step reads back bit for bit."""

    class FlakyStore(LocalStore):
        fail_next = False

        def put(self, key: str, data: bytes) -> None:
            if self.fail_next and "/segments/" in key:
                self.fail_next = False
                raise OSError("connection reset")
            super().put(key, data)

    store = FlakyStore(tmp_path / "s")
    steps = list(range(14))
    snaps = snapshots(steps, seed=11)
    w = TapeWriter(store, PREFIX, TENSORS, segment_max_steps=2)
    sealed = []
    for step in steps[:6]:
        w.append(step, snaps[step], commit=False)
        if w.segment_full:
            sealed.append(w.seal())
    assert w.pending_segments == 3 and w.last_committed_step is None
    buffers = [s.buffer for s in sealed]
    assert all(b is not None for b in buffers) and len({id(b) for b in buffers}) == 3
    assert w.stored_bytes == sum(len(s.data) for s in sealed) and w.raw_bytes > 0
    store.fail_next = True
    with pytest.raises(OSError, match="connection reset"):
        w.publish()
    assert w.pending_segments == 3 and w.last_committed_step is None
    w.publish()
    assert w.pending_segments == 0 and w.last_committed_step == 5
    for step in steps[6:]:  # later segments reuse the published ones' buffers
        w.append(step, snaps[step])
    w.close()
    r = TapeReader(store, PREFIX)
    assert r.steps() == steps and r.complete
    r.verify()
    for step in steps:
        for name, want in snaps[step].items():
            assert np.array_equal(bits(r.read(name, step)), bits(want)), (name, step)


def test_one_native_call_per_snapshot_writes_the_same_segments_as_one_per_block(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With one encoder thread every block of a snapshot goes through one native call into a reused chunk
    arena; with helper threads each block is its own call; on the appending thread's OpenMP team (torch's:
    capture's inline mode) the call's blocks are split over its threads. All must write the very same bytes —
    keyframes, deltas, blocks stored as values because their residual did not shrink (random weights), several
    lane widths, tensors of one block, of several and of a partial last block, tiny ones."""
    rng = np.random.default_rng(21)
    infos = [
        TensorInfo("big", (5000, 300), "float32"),  # 1.5 M lanes: six blocks of 256 Ki, the last partial
        TensorInfo("noise", (300, 300), "float32"),  # fresh random values every step: dense blocks
        TensorInfo("half", (64, 33), "float16"),
        TensorInfo("double", (7, 5), "float64"),
        TensorInfo("one", (1,), "float32"),
    ]
    state = {t.name: rng.standard_normal(t.shape).astype(t.dtype) for t in infos}
    v = {k: np.zeros_like(a) for k, a in state.items()}
    snaps = []
    for _ in range(11):
        for k, a in state.items():
            if k == "noise":
                state[k] = rng.standard_normal(a.shape).astype(a.dtype)
            else:
                v[k] = (0.9 * v[k] + 1e-3 * rng.standard_normal(a.shape)).astype(a.dtype)
                state[k] = (a - v[k]).astype(a.dtype)
        snaps.append({k: a.copy() for k, a in state.items()})
    import torch  # its OpenMP runtime: the team the codec borrows

    assert torch.get_num_threads() >= 1
    calls: list[int] = []
    real_encode = tape_writer.native.BlockBatch.encode

    def counting(self: Any, k: int, out_addr: int, cap: int, first: int = 0, team: int = 1) -> int:
        calls.append(k)
        return real_encode(self, k, out_addr, cap, first, team)

    monkeypatch.setattr(tape_writer.native.BlockBatch, "encode", counting)
    segments = {}
    for threads in (1, 2, "team"):
        store = LocalStore(tmp_path / f"t{threads}")
        w = TapeWriter(
            store,
            PREFIX,
            infos,
            threads=threads if threads != "team" else 1,
            keyframe_interval=4,
            segment_max_steps=3,
        )
        if threads == "team":  # one thread appends, the blocks are coded on a team of three (torch's OpenMP)
            assert w.team_capable
            w.team = 3
        for step, snap in enumerate(snaps):
            w.append(step, snap)
        w.close()
        keys = sorted(k for k in store.list(PREFIX) if "/segments/" in k)
        segments[threads] = [store.get(k) for k in keys]
        r = TapeReader(store, PREFIX)
        for step in (0, 5, 10):
            for name, want in snaps[step].items():
                assert np.array_equal(r.read(name, step).view(np.uint8), want.view(np.uint8)), (
                    threads,
                    name,
                    step,
                )
    # With one thread: per snapshot the largest tensor's six blocks in one call (into the segment buffer),
    # the other four in one; with two threads none; on a team the same calls as with one.
    assert calls == [6, 4] * len(snaps) * 2, calls
    assert len(segments[1]) >= 4 and segments[1] == segments[2] == segments["team"]
    assert w.team_cpu_seconds > 0, "the team's other threads did part of the coding"
    modes = {int(m) for m in _modes_of(tmp_path / "t1")}
    assert (
        tape_writer.MODE_DENSE in modes and tape_writer.MODE_NATIVE in modes and tape_writer.MODE_KEY in modes
    )


def _modes_of(root: Path) -> list[int]:
    r = TapeReader(LocalStore(root), PREFIX)
    out: list[int] = []
    for seg in r._segments:
        out.extend(int(x) for x in r._seg_table(seg)[:, 3])
    return out


def _tensor_runs(root: Path, name: str) -> list[tuple[int, int]]:
    """Per segment, the byte range of ``name``'s chunks, checked to be one ascending run without gaps."""
    r = TapeReader(LocalStore(root), PREFIX)
    t = [x.name for x in r.tensors()].index(name)
    runs = []
    for seg in r._segments:
        table = r._seg_table(seg)
        base, nb = r._seg_rows(seg, t)
        rows = table[base : base + len(seg.steps) * nb]
        ends = rows[:-1, 0] + rows[:-1, 1]
        assert (rows[1:, 0] == ends).all(), f"{name}'s chunks are not one run in {seg.key}"
        runs.append((int(rows[0, 0]), int(rows[-1, 0] + rows[-1, 1])))
    return runs


def test_the_largest_tensor_is_coded_in_place_and_opens_every_segment(tmp_path: Path) -> None:
    """The writer codes its largest tensor's blocks straight into the segment buffer. A block of it stored as
    values (its residual did not shrink) or coded while that buffer had no room still lands in one run with the
    others, at the segment's start; every step reads back bit for bit, and the helper-thread path (nothing in
    place) writes the same bytes."""
    rng = np.random.default_rng(5)
    infos = [
        TensorInfo("small", (40, 40), "float32"),
        TensorInfo("big", (3, 256 * 1024), "float32"),  # three blocks; the first is fresh noise every step
        TensorInfo("bias", (7,), "float32"),
    ]
    state = {t.name: rng.standard_normal(t.shape).astype(np.float32) for t in infos}
    snaps = []
    for _ in range(9):
        for k, a in state.items():
            a = (a - 1e-4 * rng.standard_normal(a.shape)).astype(np.float32)
            if k == "big":
                a[0] = rng.standard_normal(a.shape[1]).astype(np.float32)
            state[k] = a
        snaps.append({k: a.copy() for k, a in state.items()})
    got = {}
    for threads, commit in ((1, True), (2, True), (1, False)):
        root = tmp_path / f"t{threads}{commit}"
        # commit=False and no seal() until the end: the segment outgrows its buffer, later steps of "big" are
        # coded into the arena and copied behind the ones coded in place
        w = TapeWriter(
            LocalStore(root), PREFIX, infos, threads=threads, keyframe_interval=4, segment_max_steps=3
        )
        for step, snap in enumerate(snaps):
            w.append(step, snap, commit=commit)
        w.close()
        r = TapeReader(LocalStore(root), PREFIX)
        for step, snap in enumerate(snaps):
            for name, want in snap.items():
                assert np.array_equal(r.read(name, step).view(np.uint32), want.view(np.uint32)), (name, step)
        assert all(lo == 0 for lo, _ in _tensor_runs(root, "big"))
        _tensor_runs(root, "small")
        got[(threads, commit)] = [
            LocalStore(root).get(k) for k in sorted(LocalStore(root).list(PREFIX)) if "/segments/" in k
        ]
    assert got[(1, True)] == got[(2, True)]
    assert len(got[(1, False)]) == 1  # one segment of all nine steps
    modes = _modes_of(tmp_path / "t1True")
    assert tape_writer.MODE_DENSE in modes
