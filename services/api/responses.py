"""Tensors over HTTP keep dtype and shape: JSON ``{shape, dtype, data}`` or ``.npy`` bytes on request."""

from __future__ import annotations

from typing import Any

import numpy as np
import orjson
from fastapi import Request, Response

from netlapse.core.results import npy_bytes

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


def tensor_response(request: Request, meta: dict[str, Any], a: np.ndarray) -> Response:
    """JSON with ``data`` flat, or ``.npy`` bytes (metadata in ``X-Netlapse-*`` headers) when Accept asks for it."""
    if wants_npy(request):
        headers = {
            f"X-Netlapse-{k.capitalize()}": str(v) for k, v in meta.items() if isinstance(v, int | str)
        }
        return Response(npy_bytes(a), media_type=NPY, headers=headers)
    return FastJSONResponse({**meta, **array_json(a)})
