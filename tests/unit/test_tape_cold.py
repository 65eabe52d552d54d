"""The reader's cold path for wide tensors: positions read in pieces by the decoding threads, keyframe states of
one array (so a wide keyframe is cached and decoded once per read_many), big buffers outside numpy's allocator.
Every read stays bit-exact."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

import netlapse.core.tape.reader as tape_reader
import netlapse.core.tape.readparts as tape_readparts
from netlapse.core.store import LocalStore
from netlapse.core.tape import TapeReader, TapeWriter, TensorInfo

PREFIX = "runs/r1/tape/"
TENSORS = [
    TensorInfo("wide", (64, 1000), "float32"),  # 64 000 lanes: 8 blocks of 8 Ki
    TensorInfo("d", (3, 2500), "float64"),
    TensorInfo("h", (5000,), "float16"),
    TensorInfo("i", (4000,), "int32"),
]
SPECIAL_F32 = np.array([0x7FC00001, 0x7F800001, 0xFFC12345, 0x7F800000, 0x80000000, 0x00000001], "<u4")


def bits(a: np.ndarray) -> np.ndarray:
    a = np.ascontiguousarray(a)
    return a.view(f"<u{a.dtype.itemsize}")


def snapshots(n: int, seed: int = 0, specials: bool = True) -> list[dict[str, np.ndarray]]:
    rng = np.random.default_rng(seed)
    cur: dict[str, np.ndarray] = {}
    for t in TENSORS:
        if t.dtype == "int32":
            cur[t.name] = rng.integers(-1000, 1000, t.shape).astype(np.int32)
        else:
            cur[t.name] = rng.standard_normal(t.shape).astype(t.dtype)
    out = []
    for _ in range(n):
        snap = {}
        for t in TENSORS:
            a = cur[t.name]
            if t.dtype == "int32":
                a = a + rng.integers(-3, 4, t.shape).astype(np.int32)
            else:
                step = rng.standard_normal(t.shape).astype(t.dtype) * np.asarray(0.01, t.dtype)
                a = (a + step).astype(t.dtype)
            cur[t.name] = a
            snap[t.name] = a.copy()
        if specials:
            flat = snap["wide"].reshape(-1).view("<u4")
            flat[rng.choice(flat.size, SPECIAL_F32.size, replace=False)] = SPECIAL_F32
        out.append(snap)
    return out


@pytest.fixture
def store(tmp_path: Path) -> LocalStore:
    return LocalStore(tmp_path / "store")


def write(store: LocalStore, snaps: list[dict[str, np.ndarray]], **kw: Any) -> None:
    w = TapeWriter(store, PREFIX, TENSORS, block_lanes=8192, **kw)
    for s, snap in enumerate(snaps):
        w.append(s, snap)
    w.close()


@pytest.mark.parametrize("kw", [{"keyframe_interval": 4}, {"keyframe_interval": 3, "entropy": "zstd"}])
def test_wide_positions_read_in_pieces_exactly(
    store: LocalStore, monkeypatch: pytest.MonkeyPatch, kw: dict[str, Any]
) -> None:
    """Pieces of a few chunks (read by the decoding threads) and buffers in their own mappings: every tensor
    at every step, in any order, through chains that continue from cached states and through small caches."""
    monkeypatch.setattr(tape_reader, "_PIECE_BYTES", 20_000)
    monkeypatch.setattr(tape_readparts, "_NO_HUGE_BYTES", 10_000)
    snaps = snapshots(11, seed=3)
    write(store, snaps, **kw)
    rng = np.random.default_rng(0)
    for cache in (384 << 20, 200_000):
        r = TapeReader(store, PREFIX, cache_bytes=cache)
        order = [(t.name, s) for t in TENSORS for s in range(len(snaps))]
        for i in rng.permutation(len(order)):
            name, s = order[i]
            got = r.read(name, s)
            assert got.flags.writeable and got.dtype == snaps[s][name].dtype
            assert np.array_equal(bits(got), bits(snaps[s][name])), (name, s, cache)
            got[...] = 0  # the caller's own array: later reads are not affected
        r = TapeReader(store, PREFIX, cache_bytes=cache)
        for a, b in [(0, 10), (2, 7), (5, 5), (9, 3)]:
            va, vb = r.read_many("wide", [a, b])
            assert np.array_equal(bits(va), bits(snaps[a]["wide"]))
            assert np.array_equal(bits(vb), bits(snaps[b]["wide"]))


def test_lossy_keyframes_keep_their_bits(store: LocalStore, monkeypatch: pytest.MonkeyPatch) -> None:
    """A lossy keyframe state still holds the stored bits (its lanes 0): keyframes read exactly, the steps
    after them within the bound, read whole and in pieces."""
    snaps = snapshots(9, seed=5, specials=False)
    write(store, snaps, keyframe_interval=2, lossy_rel_error=1e-3)
    t = TENSORS[0].name
    for piece in (8 << 20, 20_000):
        monkeypatch.setattr(tape_reader, "_PIECE_BYTES", piece)
        r = TapeReader(store, PREFIX)
        keys = []
        for s in range(len(snaps)):
            got = r.read(t, s)
            st = r._state(r._tensor_index[t], r._locate(s))
            if st.key_bits is not None:
                assert st.q > 0 and not st.m.any()
                assert np.array_equal(bits(got), bits(snaps[s][t])), s
                keys.append(s)
                continue
            key = snaps[keys[-1]][t]
            bound = 1e-3 * float(np.abs(key).max())
            assert np.all(np.abs(got.astype(np.float64) - snaps[s][t]) <= bound * 1.001), s
        assert keys and keys[0] == 0 and len(keys) < len(snaps)


def test_a_wide_keyframe_is_cached_and_decoded_once(
    store: LocalStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A lossless keyframe's state is its lanes alone (the stored bits are their inverse monotone map), so a
    keyframe that fills half the state cache is kept, and read_many(0, k) decodes it once, then the chain."""
    snaps = snapshots(6, seed=7)
    write(store, snaps, keyframe_interval=32)
    lane_bytes = 64 * 1000 * 4
    r = TapeReader(store, PREFIX, cache_bytes=3 * lane_bytes)  # states: 1.5 x the tensor
    chains: list[tuple[int, int]] = []
    decode = r._decode_chain

    def spy(t: int, first: int, last: int, start: Any) -> Any:
        if t == r._tensor_index["wide"]:
            chains.append((first, last))
        return decode(t, first, last, start)

    monkeypatch.setattr(r, "_decode_chain", spy)
    a, b = r.read_many("wide", [0, 5])
    assert np.array_equal(bits(a), bits(snaps[0]["wide"])) and np.array_equal(bits(b), bits(snaps[5]["wide"]))
    assert chains == [(0, 0), (1, 5)]
    st = r._state(r._tensor_index["wide"], 0)
    assert st.key_bits is None and st.prev is None


def test_lane_buffer_big_and_small(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tape_readparts, "_NO_HUGE_BYTES", 4096)
    for shape, dt in [(10, np.int32), (5000, np.int64), ((3, 2000), np.int16)]:
        a = tape_readparts._lane_buffer(shape, dt)
        assert a.shape == (shape if isinstance(shape, tuple) else (shape,)) and a.dtype == dt
        assert a.flags.writeable and a.flags.c_contiguous
        a[...] = 7
        a.setflags(write=False)
        a.setflags(write=True)  # the reader recycles states it no longer holds
        assert int(a.reshape(-1)[-1]) == 7


@pytest.mark.parametrize("piece", [8 << 20, 30_000])
def test_time_major_reads_of_wide_tensors_exactly(
    store: LocalStore, monkeypatch: pytest.MonkeyPatch, piece: int
) -> None:
    """Compacted: a wide tensor's group read in pieces by the decoding threads (or per part when small);
    read_many's rows of one group become values in place, each its own array, also a step asked twice."""
    from netlapse.analyzer.compaction import compact_tape

    monkeypatch.setattr(tape_reader, "_PIECE_BYTES", piece)
    monkeypatch.setattr(tape_readparts, "_NO_HUGE_BYTES", 10_000)
    snaps = snapshots(10, seed=11)
    write(store, snaps, keyframe_interval=4)
    compact_tape(store, PREFIX, group_steps=4, block_lanes=1024, part_bytes=50_000, unit_steps=10)
    for cache in (384 << 20, 600_000):  # the small cache makes "wide" too wide to cache its groups
        r = TapeReader(store, PREFIX, cache_bytes=cache)
        assert r.fully_compacted
        for s in range(len(snaps)):
            for t in TENSORS:
                assert np.array_equal(bits(r.read(t.name, s)), bits(snaps[s][t.name])), (t.name, s, cache)
        r = TapeReader(store, PREFIX, cache_bytes=cache)
        for steps in ([0, 3], [5, 6, 7], [7, 5, 7], [2, 9]):
            got = r.read_many("wide", steps)
            for s, a in zip(steps, got, strict=True):
                assert a.flags.writeable and np.array_equal(bits(a), bits(snaps[s]["wide"])), (steps, s)
            bases = {id(a) for a in got}
            assert len(bases) == len(steps)
            got[0][...] = 0  # each the caller's own: the others and later reads keep their values
            for s, a in zip(steps[1:], got[1:], strict=True):
                assert np.array_equal(bits(a), bits(snaps[s]["wide"])), (steps, s)
        assert np.array_equal(bits(r.read("wide", 7)), bits(snaps[7]["wide"]))


def test_a_flipped_byte_in_a_piece_raises_tape_corrupt(
    store: LocalStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A chunk read by a decoding thread (a wide position's piece) that fails its crc32 is TapeCorrupt naming
    the segment, as on the main thread; the other tensors still read."""
    import json

    from netlapse.core.tape import TapeCorrupt

    monkeypatch.setattr(tape_reader, "_PIECE_BYTES", 20_000)
    snaps = snapshots(3, seed=2)
    write(store, snaps)
    seg = json.loads(store.get(PREFIX + "manifest.json"))["segments"][0]
    key = PREFIX + seg["key"]
    data = bytearray(store.get(key))
    data[len(data) // 3] ^= 0xFF  # inside one of the wide tensor's chunks (it holds most of the bytes)
    store.put(key, bytes(data))
    r = TapeReader(store, PREFIX)
    with pytest.raises(TapeCorrupt, match=seg["key"]):
        r.read_many("wide", [0, len(snaps) - 1])
    assert np.array_equal(bits(r.read("i", 0)), bits(snaps[0]["i"]))
