"""Tensors over HTTP keep dtype and shape: JSON ``{shape, dtype, data}`` or ``.npy`` bytes on request."""

from __future__ import annotations

from typing import Any

import numpy as np
import orjson
from fastapi import HTTPException, Request, Response

from netlapse.core.results import npy_bytes
from netlapse.core.settings import get_settings

NPY = "application/x-npy"


class FastJSONResponse(Response):
    """orjson: fast on big numeric arrays; non-finite floats become null (JSON has no NaN)."""

    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content, option=orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_NON_STR_KEYS)


def array_json(a: np.ndarray) -> dict[str, Any]:
    """Row-major flat data with shape and dtype; float32 stays float32 (orjson writes the shortest exact repr)."""
    a = np.ascontiguousarray(a)
    return {"shape": list(a.shape), "dtype": str(a.dtype), "data": a.reshape(-1)}


def wants_npy(request: Request) -> bool:
    return NPY in request.headers.get("accept", "")


def bound_values(n: int, npy: bool, what: str = "this response") -> None:
    """422 naming the limit when a response would carry more numbers than this server sends in its format."""
    s = get_settings()
    if npy and n > s.max_response_values:
        raise HTTPException(
            422,
            detail=f"{what} would carry {n:,} values; at most {s.max_response_values:,} are sent "
            "(NETLAPSE_MAX_RESPONSE_VALUES): ask for fewer elements or steps",
        )
    if not npy and n > s.max_json_values:
        raise HTTPException(
            422,
            detail=f"{what} would carry {n:,} values; JSON answers carry at most {s.max_json_values:,} "
            f"(NETLAPSE_MAX_JSON_VALUES): send `Accept: {NPY}` for .npy bytes, or ask for a window",
        )


def tensor_response(request: Request, meta: dict[str, Any], a: np.ndarray) -> Response:
    """JSON with ``data`` flat, or ``.npy`` bytes (metadata in ``X-Netlapse-*`` headers) when Accept asks for it."""
    bound_values(int(a.size), wants_npy(request), f"tensor {meta.get('name', '')!s}".strip())
    if wants_npy(request):
        headers = {
            f"X-Netlapse-{k.capitalize()}": str(v) for k, v in meta.items() if isinstance(v, int | str)
        }
        return Response(npy_bytes(a), media_type=NPY, headers=headers)
    return FastJSONResponse({**meta, **array_json(a)})
