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
