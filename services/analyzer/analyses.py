"""The method's analyses, computed from the tape; pure functions of (store, request) so they are testable."""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from netlapse.core.results import npy_bytes, open_tape, request_key
from netlapse.core.store import Store


def diff_stats(d: np.ndarray, kind: str | None = None) -> dict[str, Any]:
    """Summary of a difference: range, mean, mean |Δ|, sign counts, per-filter L2 for conv weights."""
    f = d.astype(np.float64, copy=False)
    stats: dict[str, Any] = {
        "min": float(f.min()) if f.size else 0.0,
        "max": float(f.max()) if f.size else 0.0,
        "mean": float(f.mean()) if f.size else 0.0,
        "mean_abs": float(np.abs(f).mean()) if f.size else 0.0,
        "l2": float(np.sqrt((f * f).sum())),
        "increased": int((d > 0).sum()),
        "decreased": int((d < 0).sum()),
        "unchanged": int((d == 0).sum()),
        "count": int(d.size),
    }
    if d.ndim == 4:  # conv weight [out, in, kh, kw]: which filters moved most
        per = np.sqrt((f.reshape(d.shape[0], -1) ** 2).sum(axis=1))
        stats["per_filter_l2"] = [float(v) for v in per]
    return stats


def compute_diff(store: Store, run_id: str, name: str, a: int, b: int) -> tuple[str, dict[str, Any]]:
    """value(b) − value(a) in the tensor's dtype (bit-exact with any client's own subtraction), cached."""
    key = request_key(run_id, "diff", {"name": name, "from": a, "to": b})
    if store.exists(key + ".json"):
        return key, {"cached": True}
    t0 = time.perf_counter()
    reader = open_tape(store, run_id)
    va, vb = reader.read(name, a), reader.read(name, b)
    d = vb - va
    meta = {
        "name": name,
        "from": a,
        "to": b,
        "shape": list(d.shape),
        "dtype": str(d.dtype),
        "stats": diff_stats(d),
    }
    store.put(key + ".npy", npy_bytes(d))
    store.put_json(key + ".json", meta)  # written last: its presence marks the result complete
    return key, {"cached": False, "seconds": time.perf_counter() - t0}
