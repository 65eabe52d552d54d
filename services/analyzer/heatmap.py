"""Heatmap tiles: a tensor's 2-D view (or a window of it) pooled into at most 2048 x 2048 cells, so the explorer
shows a 25 M-element layer from a few hundred kB instead of the whole tensor; and the exact values of a small
window of that view (what a tooltip shows), for ``/tensors`` and ``/diff`` alike.

Each cell is the signed value of largest magnitude in its block (an isolated large change is never averaged
away) and the block's mean; the view and the pooling are ``netlapse.core.tensorview``. Values at a step come
from the tape (time-major after compaction); a difference from the cached ``diff`` result, whose rows a window
of a matrix reads by byte range instead of loading the whole array.
"""

from __future__ import annotations

import io
import json
import logging
import time
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import numpy as np
from pydantic import Field

from netlapse.analyzer.registry import (
    Analysis,
    AnalysisRequest,
    Answer,
    Context,
    Result,
    Stored,
    artifact_key,
    complete,
    invalid,
    require_captured,
    require_tensor,
    write,
)
from netlapse.core.store import Store
from netlapse.core.tape import TapeReader
from netlapse.core.tensorview import (
    MAX_GRID,
    MAX_WINDOW_ELEMENTS,
    TensorView,
    parse_window,
    pool_maxabs,
    read_window,
    view_of,
)

Window = tuple[int, int, int, int]
log = logging.getLogger(__name__)
_WRITER: ThreadPoolExecutor | None = None


def _writer() -> ThreadPoolExecutor:
    """One thread that stores a difference computed for tiles while they are pooled."""
    global _WRITER
    if _WRITER is None:
        _WRITER = ThreadPoolExecutor(max_workers=1, thread_name_prefix="netlapse-heatmap-write")
    return _WRITER


def checked_window(raw: str | None, view: TensorView, max_cells: int | None = None) -> Window:
    """``window=r0,c0,r1,c1`` checked against the view (None: all of it), at most ``max_cells`` cells; a 422 on
    the ``window`` field that says what is allowed otherwise."""
    try:
        win = parse_window(raw, view)
    except ValueError as exc:
        raise invalid(["query", "window"], str(exc), rows=view.rows, cols=view.cols) from None
    r0, c0, r1, c1 = win
    cells = (r1 - r0) * (c1 - c0)
    if max_cells is not None and cells > max_cells:
        raise invalid(
            ["query", "window"],
            f"window {r0},{c0},{r1},{c1} has {cells} cells; at most {max_cells} are sent exactly "
            "(ask /heatmap for a pooled picture of a larger region)",
            max=max_cells,
        )
    return win


def exact_window(
    tape: TapeReader, name: str, raw: str, step: int | None, steps: tuple[int, int] | None
) -> Answer:
    """Exact values of a window of the tensor's 2-D view (``netlapse.core.tensorview``), read from the tape:
    JSON ``{name, window, shape: [h, w], dtype, view, indices (flat, -1 = gap), values}`` at ``step``; with
    ``steps = (from, to)`` instead ``from_values``, ``to_values`` and ``data`` = to − from (in the tensor's dtype,
    bit-exact with the diff). Gaps are NaN (null in JSON). ``.npy``: the values, or [3, h, w] = (from, to,
    difference). At most ``MAX_WINDOW_ELEMENTS`` cells. The step(s) must be checked (captured) already."""
    view = view_of(tape.tensor(name).shape)
    r0, c0, r1, c1 = checked_window(raw, view, MAX_WINDOW_ELEMENTS)
    values, idx = read_window(tape, name, [step] if step is not None else list(steps or ()), (r0, c0, r1, c1))
    out: dict[str, Any] = {
        "name": name,
        "window": [r0, c0, r1, c1],
        "shape": [r1 - r0, c1 - c0],
        "dtype": str(values.dtype),
        "view": view.to_json(),
        "indices": idx.reshape(-1),
    }
    if step is not None:
        out.update(step=step, values=values[0].reshape(-1))
        npy = values[0]
    else:
        assert steps is not None
        d = values[1] - values[0]
        out.update({"from": steps[0], "to": steps[1]})
        out.update(from_values=values[0].reshape(-1), to_values=values[1].reshape(-1), data=d.reshape(-1))
        npy = np.stack([values[0], values[1], d])
    headers = {"X-Netlapse-Name": name, "X-Netlapse-Window": f"{r0},{c0},{r1},{c1}"}
    return Answer(out, npy, headers)


class HeatmapRequest(AnalysisRequest):
    run_id: str
    name: str = Field(..., description="a captured tensor (state_dict name)")
    step: int | None = Field(None, ge=0, description="values at this captured step (or give from and to)")
    from_step: int | None = Field(None, alias="from", ge=0, description="difference: value(to) − value(from)")
    to_step: int | None = Field(None, alias="to", ge=0, description="difference: value(to) − value(from)")
    rows: int = Field(512, ge=1, le=MAX_GRID, description=f"output rows (at most {MAX_GRID})")
    cols: int = Field(512, ge=1, le=MAX_GRID, description=f"output columns (at most {MAX_GRID})")
    window: str | None = Field(
        None,
        description="r0,c0,r1,c1: the region [r0, r1) x [c0, c1) of the tensor's 2-D view (default: all of it)",
    )
    mean: bool = Field(True, description="also the mean of every block (the .npy is then [2, rows, cols])")


def _mode(r: HeatmapRequest) -> str:
    """``values`` or ``diff``; a 422 unless exactly one of step / (from, to) is given."""
    if r.step is not None and r.from_step is None and r.to_step is None:
        return "values"
    if r.step is None and r.from_step is not None and r.to_step is not None:
        if r.from_step > r.to_step:
            raise invalid(
                ["query", "from"], f"from ({r.from_step}) must not be greater than to ({r.to_step})"
            )
        return "diff"
    raise invalid(["query", "step"], "give either step (values) or both from and to (difference), not both")


def _check(ctx: Context, r: HeatmapRequest) -> tuple[str, TensorView, Window]:
    mode = _mode(r)
    tape = ctx.tape(r.run_id)
    require_tensor(tape, r.name)
    if mode == "values":
        assert r.step is not None
        require_captured(tape, r.step, "step")
    else:
        assert r.from_step is not None and r.to_step is not None
        require_captured(tape, r.from_step, "from")
        require_captured(tape, r.to_step, "to")
    view = view_of(tape.tensor(r.name).shape)
    return mode, view, checked_window(r.window, view)


def _validate(ctx: Context, r: HeatmapRequest) -> None:
    _check(ctx, r)


def npy_rows(store: Store, key: str, r0: int, r1: int) -> np.ndarray:
    """Rows [r0, r1) of a stored 2-D C-order .npy, read by byte range (not the whole object)."""
    head = store.get_range(key, 0, min(store.size(key), 4096))
    f = io.BytesIO(head)
    major, _ = np.lib.format.read_magic(f)
    read_header = np.lib.format.read_array_header_1_0 if major == 1 else np.lib.format.read_array_header_2_0
    shape, fortran, dtype = read_header(f)
    if fortran or len(shape) != 2:
        raise ValueError(f"{key}: expected a C-order 2-D array, got shape {shape}")
    row = shape[1] * dtype.itemsize
    raw = store.get_range(key, f.tell() + r0 * row, (r1 - r0) * row)
    return np.frombuffer(raw, dtype=dtype).reshape(r1 - r0, shape[1])


def _diff_window(
    ctx: Context, r: HeatmapRequest, view: TensorView, win: Window
) -> tuple[np.ndarray, dict[str, Any], Future[None] | None]:
    """The window of value(to) − value(from) and the diff's stats, through the cached ``diff`` analysis.

    A difference not cached yet is computed here and stored by a second thread while the caller pools its
    tiles (``.npy`` bytes and the write of a wide layer's 100 MB overlap the pooling); the caller waits for
    that future before its own result is stored, so a zoom that follows finds the difference."""
    from netlapse.analyzer.analyses import DIFF, DiffRequest  # one analysis builds on another's result

    dreq = DiffRequest(run_id=r.run_id, name=r.name, **{"from": r.from_step, "to": r.to_step})
    r0, c0, r1, c1 = win
    key = DIFF.key(dreq)
    if ctx.dispatch is None and not complete(ctx.store, key):  # on the worker: compute it here
        res = DIFF.compute(ctx, dreq)
        pending = _writer().submit(write, ctx.store, key, res)
        return view.window(res.arrays[""], r0, c0, r1, c1), res.meta["stats"], pending
    stored = ctx.ensure(DIFF, dreq)
    meta = stored.meta or ctx.store.get_json(stored.key + ".json")
    if "" in stored.arrays:  # computed just now: already in memory
        d = stored.arrays[""]
    elif view.kind == "matrix" and not view.has_gaps and len(view.shape) >= 2:
        return npy_rows(ctx.store, artifact_key(stored.key, ""), r0, r1)[:, c0:c1], meta["stats"], None
    else:
        d = stored.array("")
    return view.window(d, r0, c0, r1, c1), meta["stats"], None


def _short_stats(stats: dict[str, Any]) -> dict[str, Any]:
    """The diff's stats without the per-filter list (it can be thousands long); the top filters keep their L2."""
    out = {k: v for k, v in stats.items() if k != "per_filter_l2"}
    per = stats.get("per_filter_l2")
    if per is not None and "top_filters" in stats:
        out["top_filters_l2"] = [per[i] for i in stats["top_filters"]]
    return out


def _heatmap(ctx: Context, r: HeatmapRequest) -> Result:
    mode, view, win = _check(ctx, r)
    r0, c0, r1, c1 = win
    tape = ctx.tape(r.run_id)
    info = tape.tensor(r.name)
    meta: dict[str, Any] = {"name": r.name, "mode": mode}
    pending: Future[None] | None = None
    t0 = time.perf_counter()
    if mode == "values":
        assert r.step is not None
        w = view.window(tape.read(r.name, r.step), r0, c0, r1, c1)
        meta["step"] = r.step
    else:
        w, stats, pending = _diff_window(ctx, r, view, win)
        meta.update({"from": r.from_step, "to": r.to_step, "stats": _short_stats(stats)})
    t1 = time.perf_counter()
    p = pool_maxabs(w, r.rows, r.cols, means=r.mean)
    t2 = time.perf_counter()
    if pending is not None:
        pending.result()  # the difference is stored before these tiles are (a zoom reads it next)
    log.info(
        "heatmap %s %s %s: %s %.2f s, pooled %d x %d cells into %s x %s in %.2f s, then waited %.2f s for the "
        "difference to be stored",
        r.run_id,
        r.name,
        f"step {r.step}" if mode == "values" else f"{r.from_step}..{r.to_step}",
        "read" if mode == "values" else ("computed" if pending is not None else "cached, read"),
        t1 - t0,
        w.shape[0],
        w.shape[1],
        r.rows,
        r.cols,
        t2 - t1,
        time.perf_counter() - t2,
    )
    meta.update(
        {
            "shape": list(info.shape),
            "dtype": info.dtype,
            "view": view.to_json(),
            "window": [r0, c0, r1, c1],
            "rows": int(p.values.shape[0]),
            "cols": int(p.values.shape[1]),
            "row_edges": [int(v) + r0 for v in p.row_edges],
            "col_edges": [int(v) + c0 for v in p.col_edges],
            "min": p.min,
            "max": p.max,
            "scale": p.scale,
        }
    )
    arrays = {"": np.ascontiguousarray(p.values)}
    if r.mean:
        arrays["mean"] = p.means.astype(p.values.dtype)
    return Result(meta, arrays)


_EDGES = ("row_edges", "col_edges")


def heatmap_answer(stored: Stored, r: HeatmapRequest) -> Answer:
    """JSON with ``values`` (and ``means``) flat row-major; ``.npy`` = values [rows, cols] or [2, rows, cols]
    with the means, the rest of the metadata as JSON in the ``X-Netlapse-Meta`` header."""
    values = stored.array("")
    content: dict[str, Any] = {**stored.meta, "values": values.reshape(-1)}
    npy = values
    if r.mean:
        means = stored.array("mean")
        content["means"] = means.reshape(-1)
        npy = np.stack([values, means])
    small = {k: v for k, v in stored.meta.items() if k not in _EDGES}
    headers = {"X-Netlapse-Meta": json.dumps({**small, "cached": stored.cached}, separators=(",", ":"))}
    return Answer(content, npy, headers)


HEATMAP = Analysis(
    name="heatmap",
    request=HeatmapRequest,
    compute=_heatmap,
    summary="Heatmap tiles of one tensor at a step (step=k) or of a difference (from=a&to=b): its 2-D view (conv "
    "weights as filter tiles, as the explorer draws them), or a window r0,c0,r1,c1 of it, pooled into rows x "
    "cols blocks (each at most 2048). Each cell is the signed value of largest magnitude in its block (on a tie "
    "the positive one; NaN ignored) and, with mean=true, the block's mean; min, max and scale (max |value|) of "
    "the window. JSON or, with Accept: application/x-npy, .npy with the metadata in X-Netlapse-Meta.",
    path="/runs/{run_id}/heatmap/{name}",
    check=_validate,
    respond=heatmap_answer,
    artifacts=("", "mean"),
    tags=("tensors",),
)

ANALYSES = (HEATMAP,)
