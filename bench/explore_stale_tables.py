"""Would a one-pass coder that codes each block with last step's code tables keep the ratio? (docs/performance.md,
"Capture slowdown (CPU), 2026-12-02 afternoon")

    NETLAPSE_DATA_DIR=.data .venv/bin/python -m bench.explore_stale_tables

Trains paper-cnn (SGD + momentum, batch 128, the first 49 snapshots: bench_codec.snapshots), forms the
native codec's delta symbols of fc1's blocks (predictor weight chosen per block on its bit lengths, the
codec's symbol = bit length, sign and next bit of the residual; context = bit length and sign of the previous
movement) and compares, from step 3 on, an ideal code per context built from the block's own counts (what the
two-pass coder approximates) with one built from the same block's counts at the previous step (+1/2 each,
every symbol up to ``MARGIN`` past the last one seen). A block whose symbols fall outside that support would
need the two-pass coder anyway: counted as a fallback. Writes bench/results/stale_tables.json.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from bench.bench_capture import SGD
from bench.bench_codec import snapshots
from netlapse.core.tape.lanes import _lanes_of, _lanes_view, _mono

OUT = Path(__file__).resolve().parent / "results" / "stale_tables.json"
TENSOR, STEPS, BLOCK, MARGIN = "fc1.weight", 48, 1 << 18, 12
NCTX, NSYM = 66, 132


def _lanes(a: np.ndarray) -> np.ndarray:
    """The codec's monotone lanes of a float32 tensor, as int64 (room for the wrapping arithmetic below)."""
    ln = _lanes_of(a.dtype)
    return _mono(_lanes_view(a, ln), ln).astype(np.int64)


def _wrap(x: np.ndarray) -> np.ndarray:
    return ((x + 2**31) % 2**32) - 2**31


def _bitlen(x: np.ndarray) -> np.ndarray:
    out, y = np.zeros(x.shape, np.int64), x.copy()
    for sh in (32, 16, 8, 4, 2, 1):
        m = y >= (1 << sh)
        out[m] += sh
        y[m] >>= sh
    return out + (y > 0)


def _counts(m: np.ndarray, m1: np.ndarray, m2: np.ndarray) -> tuple[np.ndarray, int]:
    """Per (context, symbol) counts of one block's delta symbols, and its raw bits."""
    d, p = _wrap(m - m1), _wrap(m1 - m2)
    alpha = min(range(0, 81, 4), key=lambda a: int(_bitlen(np.abs(_wrap(d - ((a * p) >> 6)))).sum()))
    r = _wrap(d - ((alpha * p) >> 6))
    mag = np.abs(r)
    s = _bitlen(mag)
    sh = np.maximum(s - 2, 0)
    sym = s * 4 + (r < 0) * 2 + np.where(s >= 2, (mag >> sh) & 1, 0)
    ctx = _bitlen(np.abs(p)) * 2 + (p < 0)
    return np.bincount(ctx * NSYM + sym, minlength=NCTX * NSYM).reshape(NCTX, NSYM), int(sh.sum())


def main() -> int:
    lanes = [_lanes(s[TENSOR]) for s in snapshots(SGD, STEPS, batch=128)]
    prev: dict[int, np.ndarray] = {}
    own = stale = raw_bits = 0.0
    blocks = fallbacks = 0
    for t in range(2, len(lanes)):
        for b0 in range(0, lanes[t].size, BLOCK):
            sl = slice(b0, b0 + BLOCK)
            h, raw = _counts(lanes[t][sl], lanes[t - 1][sl], lanes[t - 2][sl])
            last, prev[b0] = prev.get(b0), h
            if last is None:
                continue
            blocks += 1
            q = np.zeros(h.shape)
            seen = [c for c in range(NCTX) if last[c].sum()]
            ok = bool(seen)
            for c in range(NCTX):
                if not h[c].sum() or not ok:
                    continue
                src = c if last[c].sum() else min(seen, key=lambda x: (abs(x // 2 - c // 2), x % 2 != c % 2))
                hi = min(int(np.flatnonzero(last[src])[-1]) + 1 + MARGIN, NSYM)
                if h[c, hi:].sum():
                    ok = False
                    break
                q[c, :hi] = last[src, :hi] + 0.5
                q[c] /= q[c].sum()
            if not ok:
                fallbacks += 1
                continue
            n_c = h.sum(1, keepdims=True)
            nz = h > 0
            own += float(-(h[nz] * np.log2((h / np.maximum(n_c, 1))[nz])).sum())
            stale += float(-(h[nz] * np.log2(q[nz])).sum())
            raw_bits += raw
    res = {
        "tensor": TENSOR,
        "snapshots": len(lanes),
        "blocks_compared": blocks,
        "fallbacks": fallbacks,
        "margin_symbols": MARGIN,
        "symbol_bits_own": own,
        "symbol_bits_last_step": stale,
        "raw_bits": raw_bits,
        "symbol_bits_increase": stale / own - 1 if own else None,
        "chunk_bits_increase": (stale - own) / (own + raw_bits) if own else None,
    }
    OUT.write_text(json.dumps(res, indent=1))
    print(json.dumps(res, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
