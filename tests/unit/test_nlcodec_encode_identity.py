"""The native encoder writes the same bytes wherever its arrays lie in memory.

nlcodec.c's 512-bit pass 1 writes the monotone lanes (m_out) with non-temporal stores from the first 64-byte
boundary of m_out on (a masked first step before it), and its 256-bit one only when m_out is 16-byte aligned;
the bit writer takes 16 elements at a time where it can. None of that may change a byte: every offset of the
arrays within their cache lines must give the chunk, CRC and lanes of an aligned call, and those of a build
forced onto the scalar path.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from netlapse.core.tape import native
from tests.unit.test_tape_native import same_digest_from_both_builds

pytestmark = pytest.mark.skipif(not native.available(), reason="native codec not built")

_DIGEST = r"""
import hashlib, numpy as np
from netlapse.core.tape import native

def at(a, off):  # a copy of a whose data starts off lanes into a 64-byte aligned buffer
    buf = np.zeros(a.size + 64, a.dtype)
    start = (-buf.ctypes.data % 64) // a.itemsize + off
    b = buf[start : start + a.size]
    b[:] = a
    return b

h = hashlib.sha256()
rng = np.random.default_rng(11)
for n in (15, 16, 17, 31, 100, 16400, 65552, 262147):
    s2 = rng.standard_normal(n).astype(np.float32)
    s1 = (s2 + rng.standard_normal(n).astype(np.float32) * np.float32(1e-3)).astype(np.float32)
    s0 = (s1 + (s1 - s2) * np.float32(0.9) + rng.standard_normal(n).astype(np.float32) * np.float32(1e-4))
    s0 = s0.astype(np.float32)
    s0[::37] = rng.standard_normal(s0[::37].size).astype(np.float32) * np.float32(1e6)
    b0, b1, b2 = (s.view(np.int32) for s in (s0, s1, s2))
    b0[:2] = [np.int32(-2**31), np.int32(2**31 - 1)]
    m1, m2 = np.empty_like(b1), np.empty_like(b2)
    assert native.mono_into(b1, m1) and native.mono_into(b2, m2)
    for values, p1, p2 in ((True, None, None), (False, m1, None), (False, m1, m2)):
        want = None
        for off in (0, 1, 3, 4, 7, 8, 13, 15):
            bits, m_out = at(b0, off), at(np.zeros_like(b0), (off * 5) % 16)
            q1 = None if p1 is None else at(p1, (off * 3) % 16)
            q2 = None if p2 is None else at(p2, (off * 7) % 16)
            got = native.encode_bits(bits, m_out, q1, q2, values=values) + (m_out.tobytes(),)
            if want is None:
                want = got
                h.update(got[0]); h.update(got[1].to_bytes(4, "little")); h.update(got[2])
            assert got == want, (n, values, off)
print(h.hexdigest())
"""


def test_every_alignment_and_both_builds_write_the_same_chunks_crcs_and_lanes(tmp_path: Path) -> None:
    assert len(same_digest_from_both_builds(tmp_path, _DIGEST)) == 64
