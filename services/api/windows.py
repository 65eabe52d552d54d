"""Exact values of a small window of a tensor's 2-D view (the view the explorer draws, ``netlapse.core.tensorview``):
at one step, or at two steps with their difference. What the explorer's tooltip shows under the pointer of a
pooled heatmap, read straight from the tape in the api (no analyzer round trip)."""

from __future__ import annotations

from typing import Any

import numpy as np
from fastapi import Request, Response

from netlapse.api.errors import invalid
from netlapse.api.responses import NPY, FastJSONResponse, wants_npy
from netlapse.core.results import npy_bytes
from netlapse.core.tape import TapeReader
from netlapse.core.tensorview import MAX_WINDOW_ELEMENTS, parse_window, read_window, view_of


def window_response(
    request: Request,
    tape: TapeReader,
    name: str,
    raw_window: str,
    step: int | None,
    steps: tuple[int, int] | None,
) -> Response:
    """JSON ``{name, window, shape: [h, w], dtype, indices (flat, -1 = gap), values}`` at ``step``; with
    ``steps = (from, to)`` instead ``from_values``, ``to_values`` and ``data`` = to − from (in the tensor's
    dtype, bit-exact with the diff). Gaps are null. ``.npy`` on request: the values, or [3, h, w] = (from, to,
    difference). At most ``MAX_WINDOW_ELEMENTS`` cells."""
    view = view_of(tape.tensor(name).shape)
    try:
        win = parse_window(raw_window, view)
    except ValueError as exc:
        raise invalid(["query", "window"], str(exc), rows=view.rows, cols=view.cols) from None
    r0, c0, r1, c1 = win
    cells = (r1 - r0) * (c1 - c0)
    if cells > MAX_WINDOW_ELEMENTS:
        raise invalid(
            ["query", "window"],
            f"window {r0},{c0},{r1},{c1} has {cells} cells; at most {MAX_WINDOW_ELEMENTS} are sent exactly "
            "(ask /heatmap for a pooled picture of a larger region)",
            max=MAX_WINDOW_ELEMENTS,
        )
    wanted = [step] if step is not None else list(steps or ())
    values, idx = read_window(tape, name, wanted, win)
    out: dict[str, Any] = {
        "name": name,
        "window": [r0, c0, r1, c1],
        "shape": [r1 - r0, c1 - c0],
        "dtype": str(values.dtype),
        "view": view.to_json(),
        "indices": idx.reshape(-1),
    }
    if step is not None:
        out["step"] = step
        arr = values[0]
        out["values"] = arr.reshape(-1)
    else:
        assert steps is not None
        d = values[1] - values[0]
        out.update({"from": steps[0], "to": steps[1]})
        out.update(from_values=values[0].reshape(-1), to_values=values[1].reshape(-1), data=d.reshape(-1))
        arr = np.stack([values[0], values[1], d])
    if wants_npy(request):
        headers = {"X-Netlapse-Name": name, "X-Netlapse-Window": f"{r0},{c0},{r1},{c1}"}
        return Response(npy_bytes(arr), media_type=NPY, headers=headers)
    return FastJSONResponse(out)
