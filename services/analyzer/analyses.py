"""The method's parameter analyses, read from the tape: diff, initial value vs change, trajectories.

Each is one descriptor in ``ANALYSES`` (see :mod:`netlapse.analyzer.registry`); the functions are pure
functions of arrays so they are testable alone.
"""

from __future__ import annotations

import logging
import math
import os
import time
from typing import Any

import numpy as np
from pydantic import Field

from netlapse.analyzer.heatmap import exact_window
from netlapse.analyzer.registry import (
    Analysis,
    AnalysisRequest,
    Answer,
    Context,
    Result,
    Stored,
    ensure,
    invalid,
    require_captured,
    require_tensor,
)
from netlapse.core.schemas import ScatterTask
from netlapse.core.settings import Settings
from netlapse.core.store import Store
from netlapse.core.tape import TapeReader
from netlapse.core.tensorview import MAX_WINDOW_ELEMENTS

log = logging.getLogger(__name__)

MAX_TRAJECTORY_INDICES = 1000
MAX_SCATTER_POINTS = 200_000


# Elements per pass: temporaries of 1 MB that stay in the cache, not of the whole (possibly 25 M-element) tensor.
_STATS_CHUNK = 1 << 17


def diff_stats(d: np.ndarray, kind: str | None = None) -> dict[str, Any]:
    """Summary of a difference: range, mean, mean |Δ|, sign counts, per-filter L2 for conv weights.

    One pass over the tensor, chunk by chunk (a wide layer is read from memory once and needs no float64 copy
    of itself); sums are float64, without BLAS."""
    flat = d.reshape(-1)
    total = abs_total = sq_total = 0.0
    pos = neg = zero = 0
    mins, maxs = [], []
    c = np.empty(min(flat.size, _STATS_CHUNK), dtype=np.float64)
    for i in range(0, flat.size, _STATS_CHUNK):
        part = flat[i : i + _STATS_CHUNK]
        c64 = c[: part.size]
        c64[...] = part
        pos += int(np.count_nonzero(part > 0))
        neg += int(np.count_nonzero(part < 0))
        zero += int(np.count_nonzero(part == 0))
        mins.append(part.min())
        maxs.append(part.max())
        total += float(c64.sum())
        np.abs(c64, out=c64)
        abs_total += float(c64.sum())
        np.square(c64, out=c64)  # not np.dot: a BLAS call per chunk wakes its threads, slow on a busy machine
        sq_total += float(c64.sum())
    n = int(d.size)
    stats: dict[str, Any] = {
        "min": float(np.min(mins)) if n else 0.0,  # NaN when any element is (as d.min() is)
        "max": float(np.max(maxs)) if n else 0.0,
        "mean": total / n if n else 0.0,
        "mean_abs": abs_total / n if n else 0.0,
        "l2": float(np.sqrt(sq_total)),
        "increased": pos,
        "decreased": neg,
        "unchanged": zero,
        "count": n,
    }
    if d.ndim == 4:  # conv weight [out, in, kh, kw]: which filters moved most
        rows = d.reshape(d.shape[0], -1)
        per = np.sqrt(np.array([float(np.dot(r64, r64)) for r64 in (r.astype(np.float64) for r in rows)]))
        stats["per_filter_l2"] = [float(v) for v in per]
        stats["top_filters"] = [int(i) for i in np.argsort(-per, kind="stable")[:8]]
    return stats


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


# --- descriptors -----------------------------------------------------------------------------------------------


def check_step_pair(ctx: Context, run_id: str, name: str, from_: int, to: int) -> None:
    """``from <= to`` (422), the tensor and both steps captured (404, as for every tensor read)."""
    if from_ > to:
        raise invalid(["query", "from"], f"from ({from_}) must not be greater than to ({to})")
    tape = ctx.tape(run_id)
    require_tensor(tape, name)
    require_captured(tape, from_, "from")
    require_captured(tape, to, "to")


class DiffRequest(AnalysisRequest):
    run_id: str
    name: str = Field(..., description="a captured tensor (state_dict name)")
    from_step: int = Field(..., alias="from", ge=0, description="a captured step")
    to_step: int = Field(..., alias="to", ge=0, description="a captured step")
    # Not part of the result (the cache key and the worker's payload leave it out): a window is read from the
    # tape in the api at once (``DIFF.direct``), the whole difference never computed for it.
    window: str | None = Field(
        None,
        exclude=True,
        description=f"r0,c0,r1,c1: only the region [r0, r1) x [c0, c1) of the tensor's 2-D view (at most "
        f"{MAX_WINDOW_ELEMENTS} cells), exact, with the values at from and to",
    )


def read_pair(tape: TapeReader, name: str, from_step: int, to_step: int) -> tuple[np.ndarray, np.ndarray]:
    """value(from), value(to) (fresh arrays) from one ``read_many``: on a step-major tape the delta chain to
    ``to`` goes on from the ``from`` state (a wide tensor's keyframe is not decoded twice); in one time-major
    group of a wide tensor both rows come from one pass over the group."""
    a, b = tape.read_many(name, [from_step, to_step])
    return a, b


def _diff(ctx: Context, r: DiffRequest) -> Result:
    t0, c0 = time.perf_counter(), time.process_time()
    tape = ctx.tape(r.run_id)
    a, b = read_pair(tape, r.name, r.from_step, r.to_step)
    t1, c1 = time.perf_counter(), time.process_time()
    d = np.subtract(b, a, out=b)  # b is a fresh array of its own
    del a
    meta = {
        "name": r.name,
        "from": r.from_step,
        "to": r.to_step,
        "shape": list(d.shape),
        "dtype": str(d.dtype),
        "stats": diff_stats(d),
    }
    log.info(
        "diff %s %s %d..%d: read both steps (%s) in %.2f s (process CPU %.2f s, load %.1f), subtracted and "
        "summarized %d elements in %.2f s",
        r.run_id,
        r.name,
        r.from_step,
        r.to_step,
        "time-major" if tape.fully_compacted else "step-major or mixed",
        t1 - t0,
        c1 - c0,
        os.getloadavg()[0] if hasattr(os, "getloadavg") else -1.0,
        d.size,
        time.perf_counter() - t1,
    )
    return Result(meta, {"": d})


def _diff_window(ctx: Context, r: DiffRequest) -> Answer | None:
    """A window of the difference, read from the tape (the tensors route's exact window); ``.npy`` = the
    difference only, [h, w] (gaps NaN), as the whole diff's ``.npy`` is the difference."""
    if r.window is None:
        return None
    ans = exact_window(ctx.tape(r.run_id), r.name, r.window, None, (r.from_step, r.to_step))
    assert ans.npy is not None
    ans.npy = ans.npy[2]
    return ans


def tensor_answer(stored: Stored, _: Any) -> Answer:
    """``{**meta, shape, dtype, data}`` or the array as ``.npy``: how a tensor-valued result goes out."""
    a = np.ascontiguousarray(stored.array(""))
    return Answer({**stored.meta, "shape": list(a.shape), "dtype": str(a.dtype), "data": a.reshape(-1)}, a)


DIFF = Analysis(
    name="diff",
    title="Difference of one tensor between two steps",
    request=DiffRequest,
    compute=_diff,
    summary="value(to) − value(from) of one tensor, in its dtype (bit-exact with a client's own subtraction), "
    "with summary stats (min, max, mean, mean |Δ|, L2, sign counts; per-filter L2 and top filters for conv "
    "weights). JSON or, with Accept: application/x-npy, .npy. With window=r0,c0,r1,c1: only that region of "
    "the tensor's 2-D view, exact, read from the tape at once (no stats).",
    path="/runs/{run_id}/diff/{name}",
    check=lambda ctx, r: check_step_pair(ctx, r.run_id, r.name, r.from_step, r.to_step),
    respond=tensor_answer,
    direct=_diff_window,
    artifacts=("",),
    tags=("tensors",),
)


class ScatterRequest(AnalysisRequest):
    run_id: str
    name: str = Field(..., description="a captured tensor")
    from_step: int = Field(0, alias="from", ge=0, description="step of the initial value (x)")
    to_step: int = Field(..., alias="to", ge=0, description="step the change (y) is measured to")
    max_points: int = Field(
        20_000, ge=1, le=MAX_SCATTER_POINTS, description="at most this many sampled points"
    )
    bins: int = Field(64, ge=2, le=512, description="bins per axis of the exact 2-D histogram")
    seed: int = Field(0, ge=0, le=2**31 - 1, description="seed of the point sample")


def scatter_result(va: np.ndarray, vb: np.ndarray, r: ScatterRequest) -> Result:
    """Scatter of x = ``va``, y = ``vb − va``: ``""`` = [2, m] (x; y) of the sample, the JSON the rest."""
    data = scatter_data(va, vb - va, r.max_points, r.bins, r.seed)
    xy = np.stack([data.pop("x"), data.pop("y")])
    idx = data.pop("sample_indices")
    meta = {
        "name": r.name,
        "from": r.from_step,
        "to": r.to_step,
        "shape": list(va.shape),
        "dtype": str(va.dtype),
        "max_points": r.max_points,
        "bins": r.bins,
        "seed": r.seed,
        "sample_indices": [int(i) for i in idx],
        **data,
    }
    return Result(meta, {"": xy})


def _scatter(ctx: Context, r: ScatterRequest) -> Result:
    tape = ctx.tape(r.run_id)
    return scatter_result(*read_pair(tape, r.name, r.from_step, r.to_step), r)


def scatter_answer(stored: Stored, _: Any) -> Answer:
    xy = stored.array("")
    return Answer({**stored.meta, "x": xy[0], "y": xy[1]})


SCATTER = Analysis(
    name="scatter",
    title="Initial value vs change of one tensor",
    request=ScatterRequest,
    compute=_scatter,
    summary="Initial value vs change: x = value at `from`, y = value(to) − value(from). A seeded sample of "
    "points, an exact 2-D histogram of all elements (counts[x_bin][y_bin]), Pearson r, and the fractions of "
    "positive values that grew and negative values that shrank.",
    path="/runs/{run_id}/scatter/{name}",
    check=lambda ctx, r: check_step_pair(ctx, r.run_id, r.name, r.from_step, r.to_step),
    respond=scatter_answer,
    artifacts=("",),
)


def compute_scatter(store: Store, t: ScatterTask) -> tuple[str, dict[str, Any]]:
    """The scatter of a task payload through the registry's cache (``{key}.npy`` = [2, m], ``{key}.json``)."""
    s = ensure(SCATTER, Context(store, Settings()), ScatterRequest.model_validate(t.model_dump()))
    return s.key, {"cached": s.cached, "seconds": s.seconds}


def parse_indices(raw: str, field: str, limit: int) -> list[int]:
    """Comma-separated non-negative ints, 1..limit of them, or a 422 naming ``field``."""
    try:
        idx = [int(s) for s in raw.split(",") if s.strip()]
    except ValueError:
        raise invalid(["query", field], f"{field} must be comma-separated integers, e.g. 0,1,2") from None
    if not idx or len(idx) > limit:
        raise invalid(["query", field], f"give between 1 and {limit} indices (got {len(idx)})")
    return idx


class TrajectoryRequest(AnalysisRequest):
    run_id: str
    name: str = Field(..., description="a captured tensor")
    index: str = Field(
        ...,
        description=f"flat row-major element indices, comma-separated, at most {MAX_TRAJECTORY_INDICES}",
    )


def _trajectory_indices(ctx: Context, r: TrajectoryRequest) -> list[int]:
    tape = ctx.tape(r.run_id)
    require_tensor(tape, r.name)
    idx = parse_indices(r.index, "index", MAX_TRAJECTORY_INDICES)
    info = tape.tensor(r.name)
    n_steps = len(tape.steps())
    if n_steps * len(idx) > ctx.settings.max_response_values:  # refused before anything is decoded
        raise invalid(
            ["query", "index"],
            f"{len(idx)} elements over {n_steps:,} captured steps are {n_steps * len(idx):,} values; at most "
            f"{ctx.settings.max_response_values:,} are sent (NETLAPSE_MAX_RESPONSE_VALUES): ask for at most "
            f"{max(1, ctx.settings.max_response_values // max(n_steps, 1))} elements",
        )
    bad = [i for i in idx if not 0 <= i < info.numel]
    if bad:
        raise invalid(
            ["query", "index"],
            f"index {bad[0]} is out of range for {r.name} with shape {list(info.shape)}: "
            f"valid flat indices are 0..{info.numel - 1}",
            min=0,
            max=info.numel - 1,
        )
    return idx


def _trajectory(ctx: Context, r: TrajectoryRequest) -> Result:
    idx = _trajectory_indices(ctx, r)
    steps, values = ctx.tape(r.run_id).trajectory(r.name, idx)
    meta = {"name": r.name, "shape": [len(steps), len(idx)], "dtype": str(values.dtype)}
    return Result({**meta, "steps": steps, "indices": idx}, {"values": values})


def trajectory_answer(stored: Stored, _: Any) -> Answer:
    values, steps = stored.array("values"), stored.meta["steps"]
    # Steps and indices stay out of the headers (they can be long); the JSON form carries them.
    headers = {
        "X-Netlapse-Name": stored.meta["name"],
        "X-Netlapse-First-Step": str(steps[0]) if steps else "",
        "X-Netlapse-Last-Step": str(steps[-1]) if steps else "",
        "X-Netlapse-Steps-Count": str(len(steps)),
    }
    return Answer({**stored.meta, "values": values}, values, headers)


TRAJECTORY = Analysis(
    name="trajectory",
    title="Values of chosen elements over every captured step",
    request=TrajectoryRequest,
    compute=_trajectory,
    summary="Values of chosen elements of one tensor at every captured step: values[step_i][index_j]. Read "
    "by the api straight from the tape (time-major after compaction), not cached.",
    path="/runs/{run_id}/trajectory/{name}",
    check=_trajectory_indices,
    respond=trajectory_answer,
    artifacts=("values",),
    inline=True,
    cache=False,
)

ANALYSES = (DIFF, SCATTER, TRAJECTORY)
