"""Compaction and lossy mode: bit-exact time-major rewrite, crash safety of the index-last protocol, and the
lossy error bound."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from netlapse.analyzer.compaction import compact_tape, plan_units
from netlapse.core.store import LocalStore, Store
from netlapse.core.tape import (
    COMPACT_DIR,
    COMPACTION_NAME,
    TapeCorrupt,
    TapeReader,
    TapeWriter,
    TensorInfo,
)
from tests.unit.test_tape import TENSORS, bits, snapshots

PREFIX = "runs/c1/tape/"
SMALL = {"group_steps": 4, "block_lanes": 1024, "part_bytes": 2_000, "unit_steps": 10}


@pytest.fixture
def store(tmp_path: Path) -> LocalStore:
    return LocalStore(tmp_path / "store")


def write(
    store: Store, snaps: dict[int, dict[str, np.ndarray]], close: bool = True, **kw: object
) -> TapeWriter:
    kw = {"segment_target_bytes": 4_000, "segment_max_steps": 3, "keyframe_interval": 5, **kw}
    w = TapeWriter(store, PREFIX, TENSORS, block_lanes=1024, **kw)  # type: ignore[arg-type]
    for step, snap in snaps.items():
        w.append(step, snap)
    if close:
        w.close()
    return w


def everything(r: TapeReader) -> dict[tuple[str, int], np.ndarray]:
    return {(t.name, s): bits(r.read(t.name, s)).copy() for t in r.tensors() for s in r.steps()}


def assert_matches(r: TapeReader, snaps: dict[int, dict[str, np.ndarray]]) -> None:
    assert r.steps() == sorted(snaps)
    for s, snap in snaps.items():
        for name, want in snap.items():
            got = r.read(name, s)
            assert got.dtype == want.dtype and got.shape == want.shape
            assert np.array_equal(bits(got), bits(want)), (name, s)


def test_compaction_is_bit_exact_for_every_tensor_step_and_trajectory(store: LocalStore) -> None:
    steps = list(range(0, 70, 2))  # 35 steps: 3 full units of 10+ steps and a tail
    snaps = snapshots(steps, seed=11)
    write(store, snaps)
    before = TapeReader(store, PREFIX)
    want = everything(before)
    traj_idx = {"fc.weight": [0, 7, 639, 7, 320], "half": [0, 32], "scalar": [0], "conv.weight": [35, 1]}
    want_traj = {n: before.trajectory(n, i) for n, i in traj_idx.items()}
    seg_keys = [s["key"] for s in before.manifest["segments"]]

    rep = compact_tape(store, PREFIX, **SMALL)  # type: ignore[arg-type]
    assert rep.units >= 3 and rep.steps == len(steps) and rep.skipped is None
    assert rep.deleted == rep.segments_replaced == len(seg_keys)
    assert all(not store.exists(PREFIX + k) for k in seg_keys), "replaced segments are dropped"
    parts = store.list(PREFIX + COMPACT_DIR)
    assert len(parts) > rep.units, "small part_bytes splits units into several objects"

    after = TapeReader(store, PREFIX)
    assert after.fully_compacted and after.steps() == steps
    assert after.stored_bytes == sum(store.size(k) for k in parts)
    got = everything(after)
    assert got.keys() == want.keys()
    for k, v in want.items():
        assert np.array_equal(got[k], v), k
    assert_matches(after, snaps)
    for name, idx in traj_idx.items():
        s_before, v_before = want_traj[name]
        s_after, v_after = after.trajectory(name, idx)
        assert s_after == s_before and np.array_equal(bits(v_after), bits(v_before)), name
    after.verify()
    # A second pass finds nothing left to do.
    assert compact_tape(store, PREFIX, **SMALL).skipped == "nothing to compact yet"  # type: ignore[arg-type]


def test_reads_in_random_order_through_mixed_time_major_and_step_major_data(store: LocalStore) -> None:
    """A live tape compacted mid-run: later deltas chain across the compacted range (keyframes every 5)."""
    steps = list(range(40))
    snaps = snapshots(steps, seed=3)
    w = write(store, {s: snaps[s] for s in steps[:23]}, close=False)
    early = TapeReader(store, PREFIX)  # opened before compaction: must survive its segments being deleted
    rep = compact_tape(store, PREFIX, **SMALL)  # type: ignore[arg-type]
    assert rep.units >= 1 and not early.fully_compacted
    for s in steps[23:]:
        w.append(s, snaps[s])
    w.close()
    r = TapeReader(store, PREFIX)
    assert 0 < len(r._covered) < len(steps)  # part time-major, part step-major
    rng = np.random.default_rng(0)
    pairs = [(t.name, s) for t in TENSORS for s in steps]
    for i in rng.permutation(len(pairs)):
        name, s = pairs[i]
        assert np.array_equal(bits(r.read(name, s)), bits(snaps[s][name])), (name, s)
    early.refresh()
    assert_matches(early, snaps)
    s_, v = r.trajectory("fc.weight", [3, 600])
    assert np.array_equal(bits(v), bits(np.stack([snaps[s]["fc.weight"].reshape(-1)[[3, 600]] for s in s_])))
    compact_tape(store, PREFIX, **SMALL)  # type: ignore[arg-type]
    r2 = TapeReader(store, PREFIX)
    assert r2.fully_compacted
    assert_matches(r2, snaps)


def test_crash_before_the_index_write_leaves_a_readable_tape_and_the_next_pass_cleans_up(
    store: LocalStore,
) -> None:
    snaps = snapshots(list(range(24)), seed=5)
    write(store, snaps)
    rep = compact_tape(store, PREFIX, crash_after_parts=True, **SMALL)  # type: ignore[arg-type]
    assert rep.units >= 1 and store.list(PREFIX + COMPACT_DIR), "parts were uploaded"
    assert not store.exists(PREFIX + COMPACTION_NAME), "the index is the commit point; it was never written"
    r = TapeReader(store, PREFIX)
    assert not r._covered
    assert_matches(r, snaps)  # the unlisted parts are invisible; every step-major segment is still there
    rep2 = compact_tape(store, PREFIX, **SMALL)  # type: ignore[arg-type]
    assert rep2.orphans_removed > 0
    r2 = TapeReader(store, PREFIX)
    assert r2.fully_compacted
    listed = {p["key"] for u in r2.compaction["units"] for p in u["parts"]}
    assert {k[len(PREFIX) :] for k in store.list(PREFIX + COMPACT_DIR)} == listed, "orphans are gone"
    assert_matches(r2, snaps)


def test_crash_after_the_index_write_keeps_both_copies_until_the_next_pass(store: LocalStore) -> None:
    snaps = snapshots(list(range(15)), seed=6)
    write(store, snaps)
    compact_tape(store, PREFIX, delete_replaced=False, **SMALL)  # type: ignore[arg-type]
    r = TapeReader(store, PREFIX)
    assert r.fully_compacted
    segs = [s["key"] for s in r.manifest["segments"]]
    assert all(store.exists(PREFIX + k) for k in segs)
    assert r.stored_bytes == sum(store.size(k) for k in store.list(PREFIX + COMPACT_DIR))
    assert_matches(r, snaps)
    rep = compact_tape(store, PREFIX, **SMALL)  # type: ignore[arg-type]
    assert rep.deleted == len(segs) and not any(store.exists(PREFIX + k) for k in segs)
    assert_matches(TapeReader(store, PREFIX), snaps)


def test_a_corrupt_time_major_part_raises_tape_corrupt(store: LocalStore) -> None:
    write(store, snapshots(list(range(12)), seed=8))
    compact_tape(store, PREFIX, **SMALL)  # type: ignore[arg-type]
    key = store.list(PREFIX + COMPACT_DIR)[0]
    data = bytearray(store.get(key))
    data[5] ^= 0xFF
    store.put(key, bytes(data))
    r = TapeReader(store, PREFIX)
    with pytest.raises(TapeCorrupt):
        for t in r.tensors():
            r.read(t.name, 1)
            r.trajectory(t.name, [0])
    with pytest.raises(TapeCorrupt, match="sha256"):
        r.verify()


def test_plan_units_keeps_a_live_tapes_short_tail_for_later() -> None:
    def seg(first: int, n: int) -> dict[str, object]:
        return {
            "key": f"s{first}",
            "kind": "step-major",
            "steps": list(range(first, first + n)),
            "first_pos": first,
            "lossy": False,
            "block_lanes": 1024,
            "raw_bytes": 1,
            "size": 1,
        }

    segs = [seg(0, 4), seg(4, 4), seg(8, 4), seg(12, 2)]
    assert [[s["key"] for s in u] for u in plan_units(segs, unit_steps=8, complete=False)] == [["s0", "s4"]]
    assert [[s["key"] for s in u] for u in plan_units(segs, unit_steps=8, complete=True)] == [
        ["s0", "s4"],
        ["s8", "s12"],
    ]


# --- lossy mode ------------------------------------------------------------------------------------------------


def sgd_walk(n: int, steps: int, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    w = (rng.standard_normal(n) * 0.05).astype(np.float32)
    v = np.zeros_like(w)
    out = []
    for _ in range(steps):
        out.append(w.copy())
        v = (0.9 * v + rng.standard_normal(n).astype(np.float32) * 0.01).astype(np.float32)
        w = (w - 0.01 * v).astype(np.float32)
    return out


@pytest.mark.parametrize("rel", [1e-2, 1e-3, 1e-4])
def test_lossy_error_stays_within_the_bound_and_keyframes_are_exact(store: LocalStore, rel: float) -> None:
    walk = sgd_walk(50_000, 40)
    info = [TensorInfo("w", (50_000,), "float32"), TensorInfo("h", (7,), "float16")]
    halves = [np.linspace(-1, 1, 7).astype(np.float16) * np.float16(1 + i / 50) for i in range(40)]
    w = TapeWriter(store, "lossy/", info, keyframe_interval=4, lossy_rel_error=rel)
    assert w.keyframe_interval == 16  # lossy keyframes are LOSSY_KEYFRAME_FACTOR times sparser
    for s in range(40):
        w.append(s, {"w": walk[s], "h": halves[s]})
    w.close()
    r = TapeReader(store, "lossy/")
    assert r.lossy and r.manifest["writer"]["mode"] == "lossy"
    for name, series in (("w", walk), ("h", halves)):
        for s in range(40):
            key = series[s - s % 16]
            scale = float(np.abs(key.astype(np.float64)).max())
            got = r.read(name, s).astype(np.float64)
            err = np.abs(got - series[s].astype(np.float64))
            # The bound, plus half a spacing of the stored value's own dtype (the final rounding).
            assert (err <= rel * scale + np.spacing(np.abs(series[s])).astype(np.float64)).all(), (name, s)
            if s % 16 == 0:
                assert np.array_equal(bits(r.read(name, s)), bits(series[s])), "keyframes are lossless"
        steps, traj = r.trajectory(name, [0, 3])
        assert np.array_equal(
            bits(traj), bits(np.stack([r.read(name, s).reshape(-1)[[0, 3]] for s in steps]))
        )
    if rel >= 1e-3:
        assert w.raw_bytes / w.stored_bytes >= 5
    assert compact_tape(store, "lossy/").skipped is not None, "lossy tapes are not rewritten"


def test_lossy_mode_stores_non_finite_values_exactly_via_keyframes(store: LocalStore) -> None:
    info = [TensorInfo("w", (100,), "float32")]
    w = TapeWriter(store, "nf/", info, keyframe_interval=20, lossy_rel_error=1e-3)
    series = []
    for s in range(6):
        a = np.linspace(-1, 1, 100).astype(np.float32) * (1 + s / 100)
        if s == 3:
            a[5], a[6] = np.nan, np.inf
        series.append(a)
        w.append(s, {"w": a})
    w.close()
    r = TapeReader(store, "nf/")
    assert np.array_equal(bits(r.read("w", 3)), bits(series[3]))
    for s in (1, 2, 4, 5):
        assert np.allclose(r.read("w", s), series[s], atol=1e-3 * 1.05, rtol=0)


def test_capture_config_validates_the_lossy_fields() -> None:
    from pydantic import ValidationError

    from netlapse.core.schemas import CaptureConfig

    assert CaptureConfig().mode == "lossless"
    c = CaptureConfig(mode="lossy", lossy_rel_error=1e-2)
    assert c.lossy_rel_error == 1e-2
    for bad in ({"mode": "zip"}, {"lossy_rel_error": 0.0}, {"lossy_rel_error": 0.5}):
        with pytest.raises(ValidationError):
            CaptureConfig(**bad)  # type: ignore[arg-type]


def test_tensors_too_wide_for_the_cache_read_back_exactly(
    store: LocalStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With a tiny cache every tensor counts as 'wide': chains keep only their last states, compressed chunks
    come in small batches, time-major reads decode just the rows asked for."""
    import netlapse.core.tape.reader as tape_reader

    monkeypatch.setattr(tape_reader, "_FETCH_BYTES", 3_000)
    steps = list(range(30))
    snaps = snapshots(steps, seed=21)
    write(store, snaps)
    small = TapeReader(store, PREFIX, cache_bytes=4_000)
    rng = np.random.default_rng(1)
    order = [(t.name, s) for t in TENSORS for s in steps]
    for i in rng.permutation(len(order)):
        name, s = order[i]
        assert np.array_equal(bits(small.read(name, s)), bits(snaps[s][name])), (name, s)
    assert small._states.bytes <= 4_000
    compact_tape(store, PREFIX, **SMALL)  # type: ignore[arg-type]
    small = TapeReader(store, PREFIX, cache_bytes=4_000)
    assert small.fully_compacted
    for i in rng.permutation(len(order)):
        name, s = order[i]
        assert np.array_equal(bits(small.read(name, s)), bits(snaps[s][name])), (name, s)
