"""Tapes written by netlapse 0.1.0 (committed under tests/fixtures/tape-v1/) stay readable, bit-exact."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from netlapse.core.store import LocalStore
from netlapse.core.tape import TapeReader

FIXTURE = Path(__file__).parent.parent / "fixtures" / "tape-v1"
PREFIXES = ("lossless/", "lossy/", "compacted/")
STEPS = [0, 1, 2, 3, 5, 8, 9, 10, 11, 12]
NAMES = ["conv.weight", "conv.bias", "fc.weight", "half"]


@pytest.fixture(scope="module")
def expected() -> dict[str, np.ndarray]:
    with np.load(FIXTURE / "expected.npz") as z:
        return {k: z[k] for k in z.files}


@pytest.fixture
def store(tmp_path: Path) -> LocalStore:
    shutil.copytree(FIXTURE, tmp_path / "tape-v1")
    return LocalStore(tmp_path / "tape-v1")


def bits(a: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(a).reshape(-1).view(np.uint8)


@pytest.mark.parametrize("prefix", PREFIXES)
def test_release_0_1_tapes_read_back_bit_exact(
    store: LocalStore, expected: dict[str, np.ndarray], prefix: str
) -> None:
    r = TapeReader(store, prefix)
    assert r.steps() == STEPS
    assert [t.name for t in r.tensors()] == NAMES
    assert r.complete
    r.verify()
    for name in NAMES:
        for s in reversed(STEPS):  # cold chains from the end first, then cached ones
            want = expected[f"{prefix}{name}@{s}"]
            got = r.read(name, s)
            assert got.dtype == want.dtype and got.shape == want.shape
            assert np.array_equal(bits(got), bits(want)), (prefix, name, s)


@pytest.mark.parametrize("prefix", PREFIXES)
def test_release_0_1_trajectories(store: LocalStore, expected: dict[str, np.ndarray], prefix: str) -> None:
    r = TapeReader(store, prefix)
    idx = [0, 1, 2, 3, 7, 71]  # the special bit patterns sit at 0..3
    steps, values = r.trajectory("conv.weight", idx)
    assert steps == STEPS
    want = np.stack([expected[f"{prefix}conv.weight@{s}"].reshape(-1)[idx] for s in STEPS])
    assert np.array_equal(bits(values), bits(want))


def test_release_0_1_special_bit_patterns_survive(expected: dict[str, np.ndarray]) -> None:
    """The fixture itself holds the patterns a value-based codec would mangle (so the tests above can fail)."""
    for prefix in ("lossless/", "compacted/"):
        w = expected[f"{prefix}conv.weight@5"].reshape(-1).view("<u4")
        assert list(w[:4]) == [0x7FC00001, 0x80000000, 0x00000001, 0xFF800000]


def test_legacy_tensor_major_segments_still_read(tmp_path: Path) -> None:
    """The oldest layout (format 1, kind "tensor-major": per tensor and step one zstd frame of byte planes
    XORed with the previous step's, restarting at each segment), built here byte for byte as it was written."""
    import json
    import zlib

    import zstandard

    from netlapse.core.tape import CODEC_V1, pack_object, shuffle_bytes

    store = LocalStore(tmp_path / "legacy")
    rng = np.random.default_rng(5)
    names, shapes = ["w", "b"], [(6, 7), (5,)]
    steps = [0, 2, 4, 6, 8]
    snaps = {
        s: {n: rng.standard_normal(sh).astype(np.float32) for n, sh in zip(names, shapes, strict=True)}
        for s in steps
    }
    snaps[4]["w"].reshape(-1).view("<u4")[:2] = [0x7FC00001, 0x80000000]
    cctx = zstandard.ZstdCompressor(level=3)
    entries = []
    for seg_steps in (steps[:3], steps[3:]):
        chunks, rows = [], []
        for n in names:
            prev = None
            for s in seg_steps:
                cur = shuffle_bytes(snaps[s][n])
                chunks.append(cctx.compress((cur if prev is None else cur ^ prev).tobytes()))
                rows.append([0, 0, 0])
                prev = cur
        table = np.array(rows, dtype=np.int64)
        data, info = pack_object(
            chunks, table, {"kind": "tensor-major", "steps": seg_steps, "tensors": names}
        )
        key = f"segments/{seg_steps[0]:012d}-{seg_steps[-1]:012d}.seg"
        store.put("t/" + key, data)
        entries.append(
            {"key": key, "kind": "tensor-major", "codec": CODEC_V1, "steps": seg_steps, **info}
            | {"first_step": seg_steps[0], "last_step": seg_steps[-1]}
        )
        assert zlib.crc32(chunks[0]) == table[0, 2]
    manifest = {
        "format": 1,
        "tensors": [
            {"name": n, "shape": list(sh), "dtype": "float32"} for n, sh in zip(names, shapes, strict=True)
        ],
        "segments": entries,
        "complete": True,
    }
    store.put("t/manifest.json", json.dumps(manifest).encode())
    r = TapeReader(store, "t/")
    assert r.steps() == steps
    for s in reversed(steps):
        for n in names:
            assert np.array_equal(bits(r.read(n, s)), bits(snaps[s][n])), (n, s)
    got_steps, vals = r.trajectory("w", [0, 1, 41])
    want = np.stack([snaps[s]["w"].reshape(-1)[[0, 1, 41]] for s in steps])
    assert got_steps == steps and np.array_equal(bits(vals), bits(want))
    r.verify()
