"""The native lane codec (services/core/tape/nlcodec.c through native.py) and the tapes it writes.

Bit-exact round trips for every lane width and chunk kind, malformed chunks refused (never a crash), tapes
written with it decoding exactly like zstd-plane tapes of the same snapshots, and the fallback when it is not
built."""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import sys
import sysconfig
import zlib
from pathlib import Path

import numpy as np
import pytest

from netlapse.core.store import LocalStore
from netlapse.core.tape import TapeReader, TapeWriter, TensorInfo, native
from netlapse.core.tape import writer as tape_writer
from tests.unit.test_tape import TENSORS, bits, snapshots

pytestmark = pytest.mark.skipif(not native.available(), reason="the native codec is not built")

DTYPES = (np.int16, np.int32, np.int64)


def _lanes(rng: np.random.Generator, dt: type, n: int, scale: int | None) -> tuple[np.ndarray, ...]:
    info = np.iinfo(dt)
    m2 = rng.integers(info.min, info.max, n, dtype=dt, endpoint=True)
    if scale is None:  # unrelated steps: nothing to predict
        return tuple(rng.integers(info.min, info.max, n, dtype=dt, endpoint=True) for _ in range(2)) + (m2,)
    step = rng.integers(-scale, scale, n, dtype=np.int64, endpoint=True).astype(dt)
    m1 = m2 + step
    m = m1 + step + rng.integers(-scale // 4, scale // 4 + 1, n, dtype=np.int64).astype(dt)
    return m, m1, m2


@pytest.mark.parametrize("dt", DTYPES)
@pytest.mark.parametrize("n", [0, 1, 2, 7, 1000, 65_537])
def test_every_kind_of_chunk_round_trips_bit_exactly(dt: type, n: int) -> None:
    rng = np.random.default_rng(n + np.dtype(dt).itemsize)
    info = np.iinfo(dt)
    for scale in (1, 40, 5000, None):
        m, m1, m2 = _lanes(rng, dt, n, scale)
        if n > 3:  # the extremes, where wrapping arithmetic and the sign-magnitude split meet
            m[:3] = [info.min, info.max, 0]
            m1[:3] = [info.max, info.min, info.min]
        for prev2 in (m2, None):
            out = np.empty_like(m)
            native.decode_into(native.encode(m, m1, prev2, values=False), m1, prev2, out)
            assert np.array_equal(out, m)
        out = np.empty_like(m)
        native.decode_into(native.encode(m, None, None, values=True), None, None, out)
        assert np.array_equal(out, m)


@pytest.mark.parametrize("dt", DTYPES)
def test_no_chunk_is_larger_than_its_lanes_plus_the_header(dt: type) -> None:
    rng = np.random.default_rng(3)
    n = 50_000
    m, m1, m2 = _lanes(rng, dt, n, None)
    w = np.dtype(dt).itemsize
    assert len(native.encode(m, m1, m2, values=False)) <= 8 + w * n
    assert len(native.encode(m, None, None, values=True)) <= 8 + w * n
    # Unchanged lanes: the header alone, whatever the block's size.
    assert len(native.encode(m1, m1, m1, values=False)) == 8


def test_float_bits_of_every_kind_round_trip_as_lanes() -> None:
    """NaN payloads, -0.0, infinities, subnormals: lanes are bits, so values come back bit for bit."""
    special = np.array(
        [0.0, -0.0, np.inf, -np.inf, np.nan, 1e-45, -1e-45, 3.4e38, -3.4e38], dtype=np.float32
    ).view(np.int32)
    payload = np.array([0x7FC00001, 0xFFC12345, 0x7F800001], dtype=np.uint32).view(np.int32)
    m = np.concatenate([special, payload, np.arange(1000, dtype=np.int32)])
    m1 = np.roll(m, 1)
    for values in (True, False):
        out = np.empty_like(m)
        native.decode_into(
            native.encode(m, None if values else m1, None, values=values), None if values else m1, None, out
        )
        assert np.array_equal(out, m)


def test_malformed_chunks_are_refused_never_crash() -> None:
    rng = np.random.default_rng(7)
    m, m1, m2 = _lanes(rng, np.int32, 20_000, 300)
    out = np.empty_like(m)
    for chunk in (native.encode(m, m1, m2, values=False), native.encode(m, None, None, values=True)):
        refused = 0
        for _ in range(300):
            bad = bytearray(chunk)
            if rng.random() < 0.5:
                i = int(rng.integers(0, len(bad)))
                bad[i] ^= 1 << int(rng.integers(0, 8))
            else:
                bad = bad[: int(rng.integers(0, len(bad)))]
            try:
                native.decode_into(bytes(bad), m1, m2, out)
            except native.NativeCodecError:
                refused += 1
        assert refused > 100  # most damage is detected; the rest decodes to some lanes, never out of bounds
    with pytest.raises(native.NativeCodecError, match="header"):
        native.decode_into(native.encode(m, m1, m2, values=False), m1[1:], m2[1:], np.empty(19_999, np.int32))
    with pytest.raises(native.NativeCodecError, match="previous step"):
        native.decode_into(native.encode(m, m1, m2, values=False), None, None, out)


def _write(store: LocalStore, prefix: str, snaps: dict, entropy: str, **kw: object) -> TapeWriter:
    w = TapeWriter(store, prefix, TENSORS, segment_max_steps=4, block_lanes=1024, entropy=entropy, **kw)
    for s, snap in snaps.items():
        w.append(s, snap)
    w.close()
    return w


@pytest.mark.parametrize("lossy", [None, 1e-3])
def test_native_and_zstd_tapes_decode_identically(tmp_path: Path, lossy: float | None) -> None:
    """The same snapshots through both entropy stages: every tensor at every step and every trajectory agree
    bit for bit (and, lossless, with the snapshots themselves); verify() passes on both."""
    store = LocalStore(tmp_path / "s")
    snaps = snapshots(list(range(0, 40, 1)), seed=4)
    a = _write(store, "z/", snaps, "zstd", lossy_rel_error=lossy)
    b = _write(store, "n/", snaps, "native", lossy_rel_error=lossy)
    rz, rn = TapeReader(store, "z/"), TapeReader(store, "n/")
    assert rz.manifest["format"] == 2 and rn.manifest["format"] == 3
    # Tiny tensors (these are tens of elements) pay for code tables; real models: bench/results/codec.json.
    assert b.stored_bytes < 1.1 * a.stored_bytes
    for s, snap in snaps.items():
        for t in TENSORS:
            got = rn.read(t.name, s)
            assert np.array_equal(bits(got), bits(rz.read(t.name, s)))
            if lossy is None:
                assert np.array_equal(bits(got), bits(snap[t.name]))
    for t in TENSORS:
        idx = sorted({0, t.numel // 2, t.numel - 1})
        sz, vz = rz.trajectory(t.name, idx)
        rn2 = TapeReader(store, "n/")  # cold: the trajectory path alone, no cached states
        sn, vn = rn2.trajectory(t.name, idx)
        assert sz == sn and np.array_equal(bits(vz), bits(vn))
    rz.verify()
    rn.verify()


def test_a_zstd_tape_resumed_by_the_native_writer_reads_across_both(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "s")
    snaps = snapshots(list(range(20)), seed=6)
    first = dict(list(snaps.items())[:9])
    _write(store, "t/", first, "zstd")
    w = TapeWriter(store, "t/", TENSORS, resume=True, segment_max_steps=4, block_lanes=1024, entropy="native")
    for s in range(9, 20):
        w.append(s, snaps[s])
    w.close()
    r = TapeReader(store, "t/")
    assert r.manifest["format"] == 3
    assert {s["format"] for s in r.manifest["segments"]} == {2, 3}
    for s in (0, 8, 9, 13, 19):
        for t in TENSORS:
            assert np.array_equal(bits(r.read(t.name, s)), bits(snaps[s][t.name]))
    steps, vals = TapeReader(store, "t/").trajectory(TENSORS[0].name, [0, 3])
    assert steps == list(range(20))
    assert np.array_equal(
        bits(vals), bits(np.stack([snaps[s][TENSORS[0].name].reshape(-1)[[0, 3]] for s in steps]))
    )


def test_without_the_built_codec_the_writer_falls_back_and_says_so(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    store = LocalStore(tmp_path / "s")
    snaps = snapshots(list(range(6)), seed=2)
    _write(store, "native/", snaps, "native")
    monkeypatch.setattr(native, "_lib", None)
    monkeypatch.setattr(native, "_loaded", True)
    monkeypatch.setattr(native, "_warned", False)
    with caplog.at_level(logging.WARNING, logger=native.__name__):
        w = _write(store, "fallback/", snaps, "auto")
        _write(store, "fallback2/", snaps, "auto")
    assert not w._native and w._format == 2
    assert [r.message for r in caplog.records].count(caplog.records[0].message) == 1
    assert "native codec is not built" in caplog.records[0].message
    r = TapeReader(store, "fallback/")
    assert np.array_equal(bits(r.read(TENSORS[0].name, 5)), bits(snaps[5][TENSORS[0].name]))
    with pytest.raises(native.NativeCodecMissing, match="not built"):
        _write(store, "must/", snaps, "native")
    with pytest.raises(native.NativeCodecMissing, match="native chunks"):
        TapeReader(store, "native/").read(TENSORS[0].name, 5)
    assert tape_writer  # the module under test


def scalar_build(tmp_path: Path) -> Path:
    """The codec compiled with NL_FORCE_SCALAR (the path CPUs without AVX2 run) into tmp_path; skips the
    test where there is no C compiler."""
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        pytest.skip("no C compiler")
    src = Path(native.__file__).with_name("nlcodec.c")
    lib = tmp_path / "nlcodec_scalar.so"
    inc = sysconfig.get_paths()["include"]
    flags = ["-O2", "-std=gnu11", "-fno-strict-aliasing", "-shared", "-fPIC", "-DNL_FORCE_SCALAR", f"-I{inc}"]
    subprocess.run([cc, *flags, str(src), "-o", str(lib)], check=True)
    return lib


def same_digest_from_both_builds(tmp_path: Path, code: str) -> str:
    """Run ``code`` (a script printing a digest of what it encoded) with the built codec and with the scalar
    build; both must print the same, which is returned."""
    lib = scalar_build(tmp_path)
    digests = []
    for env_lib in ("", str(lib)):  # "": the extension built in place (its vector paths on this CPU)
        env = {**os.environ, "NETLAPSE_NATIVE_LIB": env_lib}
        r = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
        assert r.returncode == 0, r.stderr
        digests.append(r.stdout.strip())
    assert digests[0] and digests[0] == digests[1], digests
    return digests[0]


def test_the_scalar_build_writes_the_same_bytes_as_the_simd_one(tmp_path: Path) -> None:
    """Where the CPU has AVX2 the 32-bit delta path runs 8 lanes at a time; a build forced onto the scalar
    path (what any other CPU runs) must write byte-identical chunks and read them back."""
    code = (
        "import hashlib, numpy as np\n"
        "from netlapse.core.tape import native\n"
        "rng = np.random.default_rng(1)\n"
        "h = hashlib.sha256()\n"
        "for n in (5, 1000, 70001):\n"
        "    m2 = rng.integers(-2**31, 2**31, n, dtype=np.int64).astype(np.int32)\n"
        "    m1 = (m2 + rng.integers(-900, 900, n)).astype(np.int32)\n"
        "    m = (m1 + rng.integers(-700, 700, n)).astype(np.int32)\n"
        "    m[:3] = [-2**31, 2**31 - 1, 0]\n"
        "    for c in (native.encode(m, m1, m2, values=False), native.encode(m, m1, None, values=False)):\n"
        "        h.update(c)\n"
        "import zlib\n"
        "ok = all(native.crc32(c[:k]) == zlib.crc32(c[:k]) for k in range(300))\n"
        "c, crc = native.encode_crc(m, m1, m2, values=False)\n"
        "print(h.hexdigest(), ok and crc == zlib.crc32(c))\n"
    )
    out = same_digest_from_both_builds(tmp_path, code)
    assert len(out) == 64 + 5 and out.endswith(" True")


def test_the_codec_crc_is_zlibs_for_every_length_and_every_chunk() -> None:
    """The CRC-32 the codec computes (carry-less multiplication, a table for the tail) is zlib.crc32: at every
    length around the 16- and 64-byte folding steps, on large buffers, and for each chunk it encodes."""
    rng = np.random.default_rng(5)
    data = rng.integers(0, 256, (1 << 20) + 77, dtype=np.uint8).tobytes()
    for k in [*range(0, 300), 4095, 4096, 65_537, len(data)]:
        assert native.crc32(data[:k]) == zlib.crc32(data[:k]), k
    assert native.crc32(memoryview(data)[3:1000]) == zlib.crc32(data[3:1000])
    m2 = rng.integers(-(2**31), 2**31, 70_001, dtype=np.int64).astype(np.int32)
    m1 = (m2 + rng.integers(-900, 900, m2.size)).astype(np.int32)
    m = (m1 + rng.integers(-700, 700, m2.size)).astype(np.int32)
    for c, crc in (
        native.encode_crc(m, m1, m2, values=False),
        native.encode_crc(m, None, None, values=True),
        native.encode_bits(m.view(np.uint32), np.empty_like(m), None, None, values=True),
        native.encode_crc(m1, m1, m1, values=False),  # a frozen block: the 8-byte header alone
    ):
        assert crc == zlib.crc32(c)


def test_native_tapes_written_with_weights_in_16ths_still_read_bit_exact(tmp_path: Path) -> None:
    """tests/fixtures/tape-native-a16 was written by the native codec before its predictor weight moved to
    64ths (chunks without the 0x20 kind bit, weights 12, 14, 16 of 16): every step of every tensor (16-, 32-
    and 64-bit floats, keyframes, deltas, raw-stored deltas) still reads back bit for bit."""
    from tests.fixtures.make_tape_native_a16 import OUT, snapshots

    shutil.copytree(OUT, tmp_path / "a16")
    r = TapeReader(LocalStore(tmp_path / "a16"), "t/")
    kinds: set[tuple[int, int]] = set()
    decode = native.decode_into

    def spy(chunk: bytes | memoryview, m1: np.ndarray | None, m2: np.ndarray | None, out: np.ndarray) -> None:
        kinds.add(native.kind_of(chunk))
        decode(chunk, m1, m2, out)

    snaps = snapshots()
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(native, "decode_into", spy)
        for step in reversed(r.steps()):
            for name, want in snaps[step].items():
                got = r.read(name, step)
                assert np.array_equal(got.view(np.uint8), want.view(np.uint8)), (name, step)
    old_deltas = {a for k, a in kinds if k & 0x0F == 1 and not k & 0x20}
    assert {12, 14, 16} <= old_deltas  # the old weights were exercised, not only keyframes
    r.verify()


def test_delta_chunks_pick_the_predictor_weight_in_64ths() -> None:
    """A walk with momentum 0.9: the weight the encoder picks is ~0.9 (57-59 of 64), which 16ths cannot say."""
    rng = np.random.default_rng(9)
    n = 1 << 16
    m2 = rng.integers(-(2**28), 2**28, n).astype(np.int32)
    v = rng.integers(-4000, 4000, n)
    m1 = (m2 + v).astype(np.int32)
    m = (m1 + (v * 9) // 10 + rng.integers(-60, 60, n)).astype(np.int32)
    chunk = native.encode(m, m1, m2, values=False)
    kind, alpha = native.kind_of(chunk)
    assert kind & 0x20 and 56 <= alpha <= 60
    out = np.empty_like(m)
    native.decode_into(chunk, m1, m2, out)
    assert np.array_equal(out, m)


def _walk_tape(store: LocalStore, steps: int, seed: int, **kw: object) -> list[np.ndarray]:
    """A 5000-element float32 random walk written to "t/" in blocks of 2048 lanes; returns the snapshots."""
    rng = np.random.default_rng(seed)
    cur = rng.standard_normal(5000).astype(np.float32)
    snaps = []
    for _ in range(steps):
        cur = (cur + rng.standard_normal(5000).astype(np.float32) * 1e-3).astype(np.float32)
        snaps.append(cur.copy())
    w = TapeWriter(store, "t/", [TensorInfo("w", (5000,), "float32")], block_lanes=2048, **kw)  # type: ignore[arg-type]
    for s, a in enumerate(snaps):
        w.append(s, {"w": a})
    w.close()
    return snaps


def test_a_trajectory_across_blocks_and_keyframes_reads_the_written_values(tmp_path: Path) -> None:
    """Elements in three blocks of a wide tensor, over keyframes and deltas: native chunks decode each
    touched block against that block's previous steps, carried from one segment to the next."""
    store = LocalStore(tmp_path / "s")
    snaps = _walk_tape(store, 23, 12, keyframe_interval=7, segment_max_steps=3, entropy="native")
    idx = [0, 2047, 2048, 4999]
    steps, vals = TapeReader(store, "t/").trajectory("w", idx)
    assert steps == list(range(23))
    assert np.array_equal(bits(vals), bits(np.stack([a[idx] for a in snaps])))


def test_read_many_decodes_a_wide_time_major_group_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A diff of a tensor too wide to cache its time-major group reads both steps from one decode of the group
    (read_many), with the same values as two reads."""
    from netlapse.analyzer.compaction import compact_tape

    store = LocalStore(tmp_path / "s")
    snaps = snapshots(list(range(12)), seed=3)
    w = TapeWriter(store, "t/", TENSORS, segment_max_steps=3, block_lanes=1024)
    for s, snap in snaps.items():
        w.append(s, snap)
    w.close()
    compact_tape(store, "t/", group_steps=8, block_lanes=1024, part_bytes=2_000, unit_steps=10)
    r = TapeReader(store, "t/", cache_bytes=1024)  # every group counts as too wide to cache
    assert r.fully_compacted
    calls: list[object] = []
    real = r._tm_group
    monkeypatch.setattr(r, "_tm_group", lambda *a, **k: calls.append(k.get("rows")) or real(*a, **k))
    a, b, c = r.read_many("fc.weight", [1, 6, 1])
    assert calls == [[1, 6]]
    for got, s in ((a, 1), (b, 6), (c, 1)):
        assert np.array_equal(bits(got), bits(snaps[s]["fc.weight"]))
    # Steps in different groups, or a single step: plain reads, same values.
    x, y = r.read_many("conv.weight", [2, 10])
    assert np.array_equal(bits(x), bits(snaps[2]["conv.weight"]))
    assert np.array_equal(bits(y), bits(snaps[10]["conv.weight"]))


def test_long_chains_through_a_small_cache_read_every_step_exactly(tmp_path: Path) -> None:
    """A chain longer than the cache holds reuses the lanes of positions nobody keeps; cached states (and the
    values handed out) are never overwritten by that."""
    store = LocalStore(tmp_path / "s")
    snaps = _walk_tape(store, 14, 21, keyframe_interval=100, segment_max_steps=5)
    r = TapeReader(store, "t/", cache_bytes=60_000)  # a quarter holds fewer than 13 states of 20 kB
    first = r.read("w", 13)
    got = {s: r.read("w", s) for s in (12, 3, 7, 13, 0, 11)}
    assert np.array_equal(bits(first), bits(snaps[13]))
    for s, a in got.items():
        assert np.array_equal(bits(a), bits(snaps[s])), s
    assert np.array_equal(bits(r.read("w", 12)), bits(snaps[12]))
    # A chain that fits the cache keeps every state it decodes: none of them may be reused.
    big = TapeReader(store, "t/")
    assert np.array_equal(bits(big.read("w", 13)), bits(snaps[13]))
    for s in range(14):
        assert np.array_equal(bits(big.read("w", s)), bits(snaps[s])), s


def test_address_is_where_numpy_says_the_array_starts() -> None:
    """native.address (the writer asks it for every tensor of every snapshot, through ctypes' buffer view)
    agrees with numpy for views at an offset, read-only arrays and empty ones."""
    a = np.arange(64, dtype=np.float32)
    for arr in (a, a.view(np.uint8)[4:], a[8:].view(np.int32), np.frombuffer(b"abcdefgh", np.uint8), a[:0]):
        assert native.address(arr) == arr.__array_interface__["data"][0]
    with pytest.raises(ValueError, match="contiguous"):
        native.address(a[::2])
