"""The run overview: every captured tensor with its shape, parameter count and how much it changed between two
steps, so a model of hundreds of tensors can be sorted by what moved before opening one in the explorer."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from pydantic import Field

from netlapse.analyzer.registry import (
    Analysis,
    AnalysisRequest,
    Context,
    Result,
    invalid,
    require_captured,
)


class ChangesRequest(AnalysisRequest):
    run_id: str
    from_step: int = Field(..., alias="from", ge=0, description="a captured step")
    to_step: int = Field(..., alias="to", ge=0, description="a captured step")


def _check(ctx: Context, r: ChangesRequest) -> None:
    if r.from_step > r.to_step:
        raise invalid(["query", "from"], f"from ({r.from_step}) must not be greater than to ({r.to_step})")
    tape = ctx.tape(r.run_id)
    require_captured(tape, r.from_step, "from")
    require_captured(tape, r.to_step, "to")


def tensor_change(a: np.ndarray, b: np.ndarray) -> dict[str, Any]:
    """How much ``b`` differs from ``a``: L2 and max |Δ| of the difference, the L2 of ``a``, their ratio, the
    fraction of elements that changed at all."""
    d = (b - a).astype(np.float64, copy=False).reshape(-1)
    a64 = a.astype(np.float64, copy=False).reshape(-1)
    l2 = float(np.sqrt(np.dot(d, d))) if d.size else 0.0
    norm = float(np.sqrt(np.dot(a64, a64))) if a64.size else 0.0
    rel = l2 / norm if norm > 0 else None
    return {
        "l2": l2 if math.isfinite(l2) else None,
        "max_abs": float(np.abs(d).max()) if d.size else 0.0,
        "norm_from": norm if math.isfinite(norm) else None,
        "rel": rel if rel is None or math.isfinite(rel) else None,
        "changed_fraction": float(np.count_nonzero(b != a)) / max(1, a.size),
    }


def _changes(ctx: Context, r: ChangesRequest) -> Result:
    _check(ctx, r)
    tape = ctx.tape(r.run_id)
    rows = []
    for t in tape.tensors():
        a, b = tape.read(t.name, r.from_step), tape.read(t.name, r.to_step)
        rows.append(
            {
                "name": t.name,
                "shape": list(t.shape),
                "dtype": t.dtype,
                "numel": t.numel,
                **tensor_change(a, b),
            }
        )
    meta = {
        "from": r.from_step,
        "to": r.to_step,
        "count": len(rows),
        "parameters": sum(x["numel"] for x in rows),
    }
    return Result({**meta, "tensors": rows})


CHANGES = Analysis(
    name="changes",
    request=ChangesRequest,
    compute=_changes,
    summary="Every captured tensor with its shape, element count and how much it changed from `from` to `to`: "
    "L2 and max |Δ| of the difference, the L2 at `from`, their ratio (rel) and the fraction of elements that "
    "changed. For the run overview.",
    path="/runs/{run_id}/changes",
    check=_check,
    tags=("tensors",),
)

ANALYSES = (CHANGES,)
