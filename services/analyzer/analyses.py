"""The method's parameter analyses, computed from the tape; pure functions of (store, request) so they are testable.

Every result is cached in the store under ``request_key(run_id, kind, params)``: array payloads first
(``.npy``), the JSON metadata last, so the JSON's presence marks a complete result.
"""

from __future__ import annotations

import math
import time
from typing import Any

import numpy as np

from netlapse.core.results import npy_bytes, open_tape, request_key
from netlapse.core.schemas import ScatterTask
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
        stats["top_filters"] = [int(i) for i in np.argsort(-per, kind="stable")[:8]]
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


# --- initial value vs change --------------------------------------------------------------------------------


def _finite_or_none(v: float) -> float | None:
    return float(v) if math.isfinite(v) else None


def _edges(v: np.ndarray, bins: int) -> np.ndarray:
    """``bins`` equal-width bin edges spanning ``v`` exactly (a degenerate range is widened so it has width)."""
    lo, hi = (float(v.min()), float(v.max())) if v.size else (0.0, 0.0)
    if not hi > lo:
        pad = max(abs(lo) * 1e-6, 1e-12)
        lo, hi = lo - pad, hi + pad
    return np.linspace(lo, hi, bins + 1)


def scatter_data(x: np.ndarray, y: np.ndarray, max_points: int, bins: int, seed: int = 0) -> dict[str, Any]:
    """Initial value (x) vs change (y) of every element of a tensor.

    Returns a deterministic seeded sample of at most ``max_points`` elements (all of them, in order, when the
    tensor is small enough), an exact 2-D histogram over *all* elements (``counts[xi][yi]``), Pearson r, and
    the paper's observation as numbers: among elements with x > 0 the fraction with y > 0, among x < 0 the
    fraction with y < 0. ``x``/``y`` are flat arrays of one shape; the sample arrays keep their dtype.
    """
    x, y = x.reshape(-1), y.reshape(-1)
    n = int(x.size)
    if n <= max_points:
        idx = np.arange(n, dtype=np.int64)
    else:
        idx = np.sort(np.random.default_rng(seed).choice(n, size=max_points, replace=False)).astype(np.int64)
    x64, y64 = x.astype(np.float64), y.astype(np.float64)
    xe, ye = _edges(x64, bins), _edges(y64, bins)
    counts, _, _ = np.histogram2d(x64, y64, bins=(xe, ye))
    pos, neg = x > 0, x < 0
    pos_count, neg_count = int(pos.sum()), int(neg.sum())
    pos_inc, neg_dec = int((pos & (y > 0)).sum()), int((neg & (y < 0)).sum())
    if n > 1 and x64.std() > 0 and y64.std() > 0:
        r: float | None = _finite_or_none(float(np.corrcoef(x64, y64)[0, 1]))
    else:
        r = None  # undefined when either variable is constant
    return {
        "n": n,
        "sampled": bool(idx.size < n),
        "sample_indices": idx,
        "x": x[idx],
        "y": y[idx],
        "histogram": {
            "x_edges": [float(v) for v in xe],
            "y_edges": [float(v) for v in ye],
            "counts": counts.astype(np.int64).tolist(),
            "orientation": "counts[x_bin][y_bin]",
        },
        "pearson_r": r,
        "pos_count": pos_count,
        "neg_count": neg_count,
        "zero_count": n - pos_count - neg_count,
        "pos_increased": pos_inc,
        "neg_decreased": neg_dec,
        "pos_increased_fraction": pos_inc / pos_count if pos_count else None,
        "neg_decreased_fraction": neg_dec / neg_count if neg_count else None,
        "x_mean": float(x64.mean()) if n else None,
        "y_mean": float(y64.mean()) if n else None,
    }


def compute_scatter(store: Store, t: ScatterTask) -> tuple[str, dict[str, Any]]:
    """Scatter data of one tensor between two steps, cached: ``{key}.npy`` = [2, m] (x; y), ``{key}.json`` the rest."""
    key = request_key(t.run_id, "scatter", t.cache_params())
    if store.exists(key + ".json"):
        return key, {"cached": True}
    t0 = time.perf_counter()
    reader = open_tape(store, t.run_id)
    va, vb = reader.read(t.name, t.from_step), reader.read(t.name, t.to_step)
    data = scatter_data(va, vb - va, t.max_points, t.bins, t.seed)
    xy = np.stack([data.pop("x"), data.pop("y")])
    idx = data.pop("sample_indices")
    meta = {
        "name": t.name,
        "from": t.from_step,
        "to": t.to_step,
        "shape": list(va.shape),
        "dtype": str(va.dtype),
        "max_points": t.max_points,
        "bins": t.bins,
        "seed": t.seed,
        "sample_indices": [int(i) for i in idx],
        **data,
    }
    store.put(key + ".npy", npy_bytes(xy))
    store.put_json(key + ".json", meta)  # written last: its presence marks the result complete
    return key, {"cached": False, "seconds": time.perf_counter() - t0}
