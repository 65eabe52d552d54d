"""Every registered analysis as an HTTP route, derived from its descriptor (netlapse.analyzer.registry).

Path parameters come from the descriptor's ``path``; a GET's query parameters are the other fields of its
request schema (names, aliases, defaults, bounds and descriptions, so the OpenAPI entry is complete); a
POST's JSON body is its ``body`` schema. The answer is the descriptor's JSON, or ``.npy`` when the client
sends ``Accept: application/x-npy`` and the analysis has an array to give. ``GET /api/analyses`` lists them.
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Callable
from typing import Any

from fastapi import APIRouter, Body, HTTPException, Path, Query, Request, Response
from pydantic import BaseModel, ValidationError
from pydantic.fields import FieldInfo

from netlapse.analyzer.registry import Analysis, Answer, Context, catalog, registry
from netlapse.api.analysis import answer_response, dispatcher, http_error, serve
from netlapse.api.deps import CeleryDep, CurrentUser, RepoDep, SettingsDep, StoreDep, load_run
from netlapse.api.errors import not_found
from netlapse.api.limits import analysis_slot
from netlapse.api.responses import FastJSONResponse
from netlapse.core.auth import may_access

router = APIRouter()

_PATH_PARAM = re.compile(r"\{(\w+)\}")
_BOUNDS = ("ge", "le", "gt", "lt", "min_length", "max_length")
_KW = inspect.Parameter.KEYWORD_ONLY


def _query(name: str, f: FieldInfo) -> inspect.Parameter:
    """A query parameter with the field's alias, default, bounds and description."""
    kw: dict[str, Any] = {"alias": f.alias, "description": f.description}
    for m in f.metadata:
        for attr in _BOUNDS:
            v = getattr(m, attr, None)
            if v is not None:
                kw[attr] = v
    default = ... if f.is_required() else f.default
    return inspect.Parameter(name, _KW, default=Query(default, **kw), annotation=f.annotation)


def _endpoint(a: Analysis) -> Callable[..., Response]:
    """The route function of one analysis, with a signature FastAPI reads (params, body, dependencies)."""
    assert a.path is not None
    path_fields = _PATH_PARAM.findall(a.path)
    fields = a.request.model_fields
    params = [
        inspect.Parameter("request", _KW, annotation=Request),
        inspect.Parameter("store", _KW, annotation=StoreDep),
        inspect.Parameter("celery", _KW, annotation=CeleryDep),
        inspect.Parameter("settings", _KW, annotation=SettingsDep),
        inspect.Parameter("repo", _KW, annotation=RepoDep),
        inspect.Parameter("user", _KW, annotation=CurrentUser),
    ]
    for p in path_fields:
        desc = fields[p].description if p in fields else None
        params.append(inspect.Parameter(p, _KW, default=Path(..., description=desc), annotation=str))
    if a.method == "POST":
        body = a.body or a.request
        params.append(inspect.Parameter("body", _KW, default=Body(...), annotation=body))
    else:
        params += [_query(n, f) for n, f in fields.items() if n not in path_fields]

    def endpoint(**kw: Any) -> Response:
        request: Request = kw["request"]
        values = {p: kw[p] for p in path_fields if p in fields}
        if a.method == "POST":
            values.update(kw["body"].model_dump())
        else:
            values.update({n: kw[n] for n in fields if n not in path_fields})
        try:
            req = a.request.model_validate(values)
        except ValidationError as exc:  # a rule of the schema beyond types and bounds (e.g. RUN:STEP)
            where = "body" if a.method == "POST" else "query"
            detail = [
                {"loc": [where, *e["loc"]], "msg": e["msg"], "type": e["type"]}
                for e in exc.errors(include_url=False, include_context=False, include_input=False)
            ]
            raise HTTPException(422, detail=detail) from None
        ctx = Context(kw["store"], kw["settings"])
        ctx.dispatch = dispatcher(kw["celery"], kw["settings"], ctx)
        try:
            for rid in a.run_ids(req):  # routes under /runs/{run_id} are guarded already; the others here
                if not may_access(kw["settings"].auth_required, kw["user"], load_run(kw["repo"], rid)):
                    raise not_found(f"run {rid!r} not found")
            ans = direct_answer(a, req, ctx)
            if ans is None:
                with analysis_slot(kw["user"], kw["settings"]):  # bounded per user: 429 beyond
                    stored = serve(a, req, ctx, kw["celery"])
                ans = a.answer(stored, req)
                ans.content = {**ans.content}
                ans.content.setdefault("cached", stored.cached)
        except HTTPException:
            raise
        except Exception as exc:
            err = http_error(exc)
            if err is None:
                raise
            raise err from None
        return answer_response(request, ans, f"the {a.name} answer")

    endpoint.__name__ = a.name
    endpoint.__doc__ = a.summary
    endpoint.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
    return endpoint


def direct_answer(a: Analysis, req: BaseModel, ctx: Context) -> Answer | None:
    """The descriptor's ``direct`` answer, read in the api after its ``check`` (None: serve it as usual)."""
    if a.direct is None:
        return None
    if a.check is not None:
        a.check(ctx, req)
    return a.direct(ctx, req)


def _add(r: APIRouter, a: Analysis) -> None:
    assert a.path is not None
    r.add_api_route(
        a.path,
        _endpoint(a),
        methods=[a.method],
        name=a.name,
        summary=a.short,
        description=a.summary,
        tags=list(a.tags),
        response_class=FastJSONResponse,
    )


for _a in registry().values():
    if _a.path is not None:
        _add(router, _a)


@router.get("/analyses", tags=["analyses"])
def analyses() -> dict[str, Any]:
    """Every analysis this server offers: name, method, path, request schema (what the client calls)."""
    return {"analyses": catalog()}


def request_model(name: str) -> type[BaseModel]:
    """The request schema of a registered analysis (tests, docs)."""
    return registry()[name].request
