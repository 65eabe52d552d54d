"""HTTP errors shaped like FastAPI's own validation errors, so clients map them onto fields the same way."""

from __future__ import annotations

from typing import Any

from fastapi import HTTPException


def invalid(loc: list[str | int], msg: str, **ctx: Any) -> HTTPException:
    """422 naming the field (``loc``) and what is allowed."""
    item: dict[str, Any] = {"loc": loc, "msg": msg, "type": "value_error"}
    if ctx:
        item["ctx"] = ctx
    return HTTPException(status_code=422, detail=[item])


def not_found(msg: str) -> HTTPException:
    return HTTPException(status_code=404, detail=msg)
