"""The native encoder's fast paths write the bytes of its plain ones.

nlcodec.c codes 32-bit blocks with AVX2 / AVX-512 passes (the monotone map fused into pass 1, the bit writer
fed by a vector pass over tiles, four streams written straight into the chunk when the four per-stream
histograms give their sizes) and falls back to scalar loops on other CPUs. Every case here runs through the
build in use and through one compiled with NL_FORCE_SCALAR; both must write the same chunks, CRCs and lanes.
"""

from __future__ import annotations

import ctypes
import zlib
from pathlib import Path

import numpy as np
import pytest

from netlapse.core.tape import native
from tests.unit.test_tape_native import same_digest_from_both_builds

pytestmark = pytest.mark.skipif(not native.available(), reason="native codec not built")

# Sizes around the 8-lane vector steps, the 4-stream threshold (16384), the four histograms (65536), the
# writer's block (262144) and not a multiple of 8 above it.
SIZES = (1, 7, 8, 9, 100, 1025, 16383, 16384, 16385, 65535, 65536, 65539, 262144, 262147)

_DIGEST = r"""
import hashlib, sys, numpy as np
from netlapse.core.tape import native
h = hashlib.sha256()
rng = np.random.default_rng(7)
for wb, ft, it in ((4, np.float32, np.int32), (2, np.float16, np.int16), (8, np.float64, np.int64)):
    for n in SIZES:
        if wb != 4 and n > 70000:
            continue
        for kind in ("smooth", "random"):
            if kind == "smooth":  # small residuals: pairs of codes fit one write
                s2 = rng.standard_normal(n).astype(ft)
                s1 = (s2 + rng.standard_normal(n).astype(ft) * ft(1e-3)).astype(ft)
                s0 = (s1 + (s1 - s2) * ft(0.9) + rng.standard_normal(n).astype(ft) * ft(1e-4)).astype(ft)
                b0, b1, b2 = s0.view(it), s1.view(it), s2.view(it)
            else:  # full-width residuals: pairs longer than 56 bits go one by one
                b0, b1, b2 = (rng.integers(np.iinfo(it).min, np.iinfo(it).max, n, dtype=it, endpoint=True) for _ in range(3))
            m1, m2 = np.empty_like(b1), np.empty_like(b2)
            assert native.mono_into(b1, m1) and native.mono_into(b2, m2)
            m0 = np.empty_like(b0)
            for values, p1, p2 in ((True, None, None), (False, m1, None), (False, m1, m2)):
                c, crc = native.encode_bits(b0, m0, p1, p2, values=values)
                h.update(c); h.update(crc.to_bytes(4, "little")); h.update(m0.tobytes())
                c2, crc2 = native.encode_crc(m0, p1, p2, values=values)
                assert (c2, crc2) == (c, crc)
print(h.hexdigest())
"""


def test_vector_and_scalar_builds_write_the_same_chunks_crcs_and_lanes(tmp_path: Path) -> None:
    """Values and delta chunks (with and without the second previous step) of 16-, 32- and 64-bit lanes, from
    float bits (encode_bits) and from lanes (encode_crc), at every size class: one digest from each build."""
    assert len(same_digest_from_both_builds(tmp_path, f"SIZES = {SIZES!r}\n" + _DIGEST)) == 64


@pytest.mark.parametrize("n", SIZES)
def test_fast_path_chunks_round_trip_and_their_lanes_are_the_monotone_map(n: int) -> None:
    """encode_bits writes the monotone lanes it codes into m_out, and each chunk decodes to them."""
    rng = np.random.default_rng(n)
    s2 = rng.standard_normal(n).astype(np.float32)
    s1 = (s2 + rng.standard_normal(n).astype(np.float32) * np.float32(1e-3)).astype(np.float32)
    s0 = (s1 * np.float32(1.001)).astype(np.float32)
    s0[::97] = rng.standard_normal(s0[::97].size).astype(np.float32) * np.float32(1e6)  # some long residuals
    bits = [s.view(np.int32) for s in (s0, s1, s2)]
    lanes = [np.empty_like(b) for b in bits]
    for b, m in zip(bits, lanes, strict=True):
        assert native.mono_into(b, m)
    want = bits[0] ^ ((bits[0] >> 31) & np.int32(0x7FFFFFFF))
    assert np.array_equal(lanes[0], want)
    for values, p1, p2 in ((True, None, None), (False, lanes[1], None), (False, lanes[1], lanes[2])):
        m_out = np.zeros_like(bits[0])
        chunk, crc = native.encode_bits(bits[0], m_out, p1, p2, values=values)
        assert np.array_equal(m_out, want) and crc == zlib.crc32(chunk)
        out = np.empty_like(m_out)
        native.decode_into(chunk, p1, p2, out)
        assert np.array_equal(out, want)


@pytest.mark.parametrize("n", (16384, 65536, 65539, 262144))
def test_a_tight_capacity_gives_the_same_chunk_or_the_same_error_and_no_write_past_it(n: int) -> None:
    """Streams written in place need 8 bytes of room past the chunk; with less the encoder copies them as
    before: a capacity of exactly the chunk's size still works, one byte less is refused, nothing past it is
    touched."""
    lib = native._load()
    rng = np.random.default_rng(3)
    m2 = rng.integers(-(2**20), 2**20, n).astype(np.int32)
    m1 = (m2 + rng.integers(-900, 900, n)).astype(np.int32)
    m = (m1 + rng.integers(-700, 700, n)).astype(np.int32)
    ptr = lambda a: ctypes.c_void_p(a.ctypes.data) if a is not None else None  # noqa: E731
    for values, p1, p2 in ((True, None, None), (False, m1, m2)):
        chunk = native.encode(m, p1, p2, values=values)
        for cap, ok in (
            (len(chunk) - 1, False),
            (len(chunk), True),
            (len(chunk) + 7, True),
            (len(chunk) + 9, True),
        ):
            out = np.full(cap + 64, 0xAB, dtype=np.uint8)
            size = lib.nl_encode(4, n, ptr(m), ptr(p1), ptr(p2), int(values), ptr(out), cap, None)
            assert (out[cap:] == 0xAB).all()
            if ok:
                assert size == len(chunk) and out[:size].tobytes() == chunk
            else:
                assert size < 0
