"""The analysis registry: every analysis is one :class:`Analysis` descriptor, registered here by its module.

From a descriptor follow, with nothing else to write:

- the Celery task ``netlapse.analyzer.<name>`` on queue ``analyze`` (``netlapse.analyzer.worker``),
- the HTTP route with its OpenAPI entry (``netlapse.api.routes.analyses``),
- the Python client's ``Client.analysis(name, ...)`` call (through ``GET /api/analyses``, the catalog).

The cache-key / result protocol lives only here (docs/architecture.md, "Analyses"): a result is stored under
``runs/{run}/analysis/{name}/{sha256(request without run ids)[:24]}``; its arrays first as
``{key}.npy`` / ``{key}.{artifact}.npy``, its JSON ``{key}.json`` last, so the JSON's presence marks a
complete result. Every failure, in the api or on the worker, goes through :func:`failure_of`, the one
mapping from exceptions to HTTP statuses.

Analysis modules are the modules of ``netlapse.analyzer`` that define ``ANALYSES``; :func:`registry` imports
them all, so adding an analysis is adding its module (and its view in the UI).
"""

from __future__ import annotations

import importlib
import pkgutil
import re
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Literal, cast

import numpy as np
from pydantic import BaseModel, ConfigDict, ValidationError

from netlapse.core.datasets import DatasetUnavailable, UnknownDataset
from netlapse.core.queue import TASK_COMPACT
from netlapse.core.results import npy_bytes, npy_load, open_tape, request_key
from netlapse.core.runs import RunNotFound, RunRepository
from netlapse.core.schemas import AnalysisResult, RunRecord
from netlapse.core.settings import Settings
from netlapse.core.store import ObjectNotFound, Store
from netlapse.core.tape import StepNotCaptured, TapeReader, UnknownTensor

TASK_PREFIX = "netlapse.analyzer."
"""Task names are ``TASK_PREFIX + name``; ``netlapse.core.queue`` routes that prefix to queue ``analyze``."""


# --- one error type, one mapping ------------------------------------------------------------------------------


class AnalysisFailure(Exception):
    """A request an analysis cannot answer, with the HTTP status it deserves and the field it concerns."""

    status = 422

    def __init__(
        self, message: str, status: int | None = None, loc: list[str | int] | None = None, **ctx: Any
    ) -> None:
        super().__init__(message)
        self.message = message
        if status is not None:
            self.status = status
        self.loc = loc
        self.ctx = ctx

    def __str__(self) -> str:
        return self.message

    def detail(self) -> Any:
        """The HTTP ``detail``: FastAPI's field-error list when a field is named, else the message."""
        if self.loc is None:
            return self.message
        item: dict[str, Any] = {"loc": self.loc, "msg": self.message, "type": "value_error"}
        if self.ctx:
            item["ctx"] = self.ctx
        return [item]

    def to_meta(self) -> dict[str, Any]:
        return {"error": self.message, "status": self.status, "loc": self.loc, "ctx": self.ctx or None}

    @classmethod
    def from_meta(cls, meta: dict[str, Any]) -> AnalysisFailure:
        return cls(
            str(meta["error"]), int(meta.get("status", 422)), meta.get("loc"), **(meta.get("ctx") or {})
        )


class AnalysisError(AnalysisFailure, ValueError):
    """Bad input found while computing (unknown layer, step not on the tape, …): a 422 saying why."""


def invalid(loc: list[str | int], message: str, **ctx: Any) -> AnalysisFailure:
    """422 naming the field (``loc``) and what is allowed."""
    return AnalysisFailure(message, 422, loc, **ctx)


def not_found(message: str) -> AnalysisFailure:
    return AnalysisFailure(message, 404)


def failure_of(exc: BaseException) -> AnalysisFailure | None:
    """The one mapping from what an analysis raises to an HTTP answer; None for a bug (a 500)."""
    if isinstance(exc, AnalysisFailure):
        return exc
    if isinstance(exc, RunNotFound):
        return not_found(str(exc))
    if isinstance(exc, ObjectNotFound):  # the run (or its tape) was deleted while the analysis ran
        return not_found(f"the run's data is gone (was the run deleted?): {exc}")
    if isinstance(exc, UnknownTensor | StepNotCaptured):
        return not_found(str(exc.args[0]) if exc.args else str(exc))
    if isinstance(exc, UnknownDataset):
        return AnalysisFailure(str(exc.args[0]) if exc.args else str(exc), 422)
    if isinstance(exc, DatasetUnavailable):  # the analyzer's data dir lacks the files: a deployment problem
        return AnalysisFailure(str(exc), 503)
    if isinstance(exc, ValidationError):  # a payload that does not fit the request schema
        return AnalysisFailure(f"invalid analysis request: {exc}", 422)
    return None


# --- validation helpers shared by the analyses' checks -----------------------------------------------------------


def describe_steps(steps: list[int]) -> str:
    """A short description of the captured steps, for messages: ``0..63 (every step, 64 steps)``."""
    if not steps:
        return "no steps are captured yet"
    if len(steps) == 1:
        return f"the only captured step is {steps[0]}"
    gaps = {b - a for a, b in zip(steps, steps[1:], strict=False)}
    if gaps == {1}:
        return f"captured steps are {steps[0]}..{steps[-1]} (every step)"
    if len(gaps) == 1:
        return f"captured steps are {steps[0]}..{steps[-1]} every {gaps.pop()}"
    inner = {b - a for a, b in zip(steps[:-1], steps[1:-1], strict=False)}
    if len(inner) == 1:  # capture.every = N: the last step is always kept, so only the last gap differs
        return f"captured steps are {steps[0]}..{steps[-1]} every {inner.pop()} (and the last)"
    return f"{len(steps)} captured steps between {steps[0]} and {steps[-1]}"


def require_tensor(tape: TapeReader, name: str) -> None:
    """404 listing the captured tensors when ``name`` is not one of them."""
    names = [t.name for t in tape.tensors()]
    if name not in names:
        raise not_found(f"unknown tensor {name!r}; this run captured: {', '.join(names)}")


def require_captured(tape: TapeReader, step: int, field: str) -> None:
    """404 naming the captured steps (as for every tensor read) when ``step`` is not one of them."""
    steps = tape.steps()
    if step not in set(steps):
        raise not_found(f"{field}={step} was not captured; {describe_steps(steps)}")


def require_step(tape: TapeReader, step: int, loc: list[str | int]) -> None:
    """422 naming the captured steps when a step given in a request body or option is not one of them."""
    steps = tape.steps()
    if step not in set(steps):
        raise invalid(
            loc,
            f"step {step} was not captured; {describe_steps(steps)}",
            first=steps[0] if steps else None,
            last=steps[-1] if steps else None,
        )


# --- what an analysis computes and how it is stored ----------------------------------------------------------


class AnalysisRequest(BaseModel):
    """Base of request schemas: unknown fields are errors; fields may be given by name or by their alias."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)


@dataclass
class Result:
    """What ``compute`` returns: JSON metadata and named arrays (``""`` = ``{key}.npy``).

    ``siblings`` are results of *other* requests of the same analysis computed on the way (activations: one
    forward pass gives every layer), stored under their own keys.
    """

    meta: dict[str, Any]
    arrays: dict[str, np.ndarray] = field(default_factory=dict)
    siblings: list[tuple[BaseModel, Result]] = field(default_factory=list)


@dataclass
class Stored:
    """A result in the store (or, for an uncached analysis, in memory)."""

    key: str
    meta: dict[str, Any]
    cached: bool
    store: Store | None = None
    seconds: float = 0.0
    arrays: dict[str, np.ndarray] = field(default_factory=dict)

    def array(self, name: str = "") -> np.ndarray:
        if name not in self.arrays:
            assert self.store is not None
            self.arrays[name] = npy_load(self.store.get(artifact_key(self.key, name)))
        return self.arrays[name]


@dataclass
class Answer:
    """How a result goes out over HTTP: JSON ``content`` (numpy arrays allowed), or ``npy`` when the client asks
    for ``application/x-npy``; ``headers`` default to ``X-Netlapse-<Field>`` of the scalar JSON fields."""

    content: dict[str, Any]
    npy: np.ndarray | None = None
    headers: dict[str, str] | None = None


def artifact_key(key: str, name: str) -> str:
    return f"{key}.npy" if name == "" else f"{key}.{name}.npy"


Publish = Callable[[str, dict[str, Any]], None]
Dispatch = Callable[["Analysis", list[BaseModel]], list["Stored"]]


def array_json(a: np.ndarray) -> dict[str, Any]:
    """A tensor as JSON: row-major flat ``data`` (numpy, serialized by the api) with its shape and dtype."""
    a = np.ascontiguousarray(a)
    return {"shape": list(a.shape), "dtype": str(a.dtype), "data": a.reshape(-1)}


@dataclass
class Context:
    """What an analysis sees: the store, the settings, (on the worker) a way to publish events, and (in the
    api) ``dispatch``, which sends the analyses a composition needs to the worker instead of computing them."""

    store: Store
    settings: Settings
    publish: Publish | None = None
    dispatch: Dispatch | None = None

    def run(self, run_id: str) -> RunRecord:
        return RunRepository(self.store).get(run_id)

    def tape(self, run_id: str) -> TapeReader:
        """The run's tape; 404 when nothing has been committed yet."""
        try:
            return open_tape(self.store, run_id)
        except ObjectNotFound:
            raise not_found(f"run {run_id} has no committed snapshots yet") from None

    def ensure(self, analysis: Analysis | str, req: BaseModel) -> Stored:
        """Another analysis' result with its JSON (compositions: compare = two activations)."""
        return self.ensure_all(analysis, [req])[0]

    def ensure_all(self, analysis: Analysis | str, reqs: list[BaseModel]) -> list[Stored]:
        """Several results of one analysis: cached ones read, the others computed here or, with ``dispatch``,
        all sent to the worker at once and awaited. Each comes with its JSON loaded."""
        a = get(analysis) if isinstance(analysis, str) else analysis
        out: list[Stored | None] = [None] * len(reqs)
        todo: list[int] = []
        dispatch = self.dispatch
        for i, req in enumerate(reqs):
            if a.cache and complete(self.store, a.key(req)):
                out[i] = load(self, a.key(req), True)
            elif dispatch is None or a.inline or not a.cache:
                out[i] = ensure(a, self, req)
            else:
                todo.append(i)
        if todo and dispatch is not None:
            for i, s in zip(todo, dispatch(a, [reqs[i] for i in todo]), strict=True):
                out[i] = s
        return [s if s.meta or not s.cached else load(self, s.key, True) for s in out if s is not None]

    def emit(self, run_id: str, data: dict[str, Any]) -> None:
        if self.publish is not None:
            self.publish(run_id, data)


Method = Literal["GET", "POST"]


@dataclass(frozen=True)
class Analysis:
    """One analysis: everything the worker, the api, the client and the UI need to know about it.

    - ``name``: the task (``netlapse.analyzer.<name>``), the cache folder and the catalog entry.
    - ``request``: the pydantic schema of what determines the result, run ids included; the cache key is a
      hash of the request (by alias) without ``run_id``, under the folder of the first run it reads.
    - ``compute(ctx, request) -> Result``: runs on the analyzer (or in the api when ``inline``).
    - ``path`` / ``method`` / ``body``: the route under ``/api``. Path parameters and, for GET, the query
      parameters are the request's fields; a POST's JSON body is ``body`` (default: the request minus path
      fields). ``None`` = no route of its own.
    - ``check(ctx, request)``: fast validation in the api before anything is queued (422 / 404).
    - ``respond(stored, request) -> Answer``: the HTTP answer from a stored result (default: its JSON).
    - ``artifacts``: names of the arrays a result stores.
    - ``runs(request)``: the runs it reads (default ``[request.run_id]``); each must be visible to the caller.
    - ``inline``: computed in the api process (a cheap read), not on the worker; ``cache``: stored or not.
    - ``direct(ctx, request) -> Answer | None``: after ``check``, an answer the api gives at once, read from the
      tape without the worker or the cache (a diff's exact window); None = the request takes the usual path.
    """

    name: str
    request: type[BaseModel]
    compute: Callable[[Context, Any], Result]
    summary: str
    path: str | None = None
    method: Method = "GET"
    body: type[BaseModel] | None = None
    check: Callable[[Context, Any], object] | None = None
    respond: Callable[[Stored, Any], Answer] | None = None
    artifacts: tuple[str, ...] = ()
    runs: Callable[[Any], list[str]] | None = None
    inline: bool = False
    cache: bool = True
    direct: Callable[[Context, Any], Answer | None] | None = None
    tags: tuple[str, ...] = ("analyses",)
    title: str = ""

    @property
    def short(self) -> str:
        """A one-line title (the OpenAPI summary): ``title``, else the summary's first sentence."""
        first = re.split(r"(?<=[a-z)])\.\s+(?=[A-Z])|\n", self.summary, maxsplit=1)[0]
        return self.title or first.rstrip(".")

    @property
    def task_name(self) -> str:
        return TASK_PREFIX + self.name

    def run_ids(self, req: BaseModel) -> list[str]:
        return self.runs(req) if self.runs is not None else [str(cast(Any, req).run_id)]

    def cache_params(self, req: BaseModel) -> dict[str, Any]:
        """The fields that determine the result (what the cache key is a hash of)."""
        return req.model_dump(mode="json", by_alias=True, exclude={"run_id"})

    def key(self, req: BaseModel) -> str:
        """Store key (without extension) of the result of ``req``, in the folder of the first run it reads."""
        return request_key(self.run_ids(req)[0], self.name, self.cache_params(req))

    def answer(self, stored: Stored, req: BaseModel) -> Answer:
        if self.respond is not None:
            return self.respond(stored, req)
        return Answer({**stored.meta})


# --- the protocol: compute once, store arrays first and the JSON last ----------------------------------------


def complete(store: Store, key: str) -> bool:
    """Whether the result under ``key`` is complete (its JSON, written last, is there)."""
    return store.exists(key + ".json")


def write(store: Store, key: str, result: Result) -> None:
    """Store a result: arrays first, the JSON last (its presence marks the result complete)."""
    for name, arr in result.arrays.items():
        store.put(artifact_key(key, name), npy_bytes(arr))
    store.put_json(key + ".json", result.meta)


def ensure(a: Analysis, ctx: Context, req: BaseModel) -> Stored:
    """The result of ``req``: from the store when it is there, else computed and stored (siblings too)."""
    if not a.cache:
        t0 = time.perf_counter()
        res = a.compute(ctx, req)
        return Stored("", res.meta, False, None, time.perf_counter() - t0, dict(res.arrays))
    key = a.key(req)
    if complete(ctx.store, key):
        return Stored(key, {}, True, ctx.store)
    t0 = time.perf_counter()
    res = a.compute(ctx, req)
    for sub_req, sub in res.siblings:
        sub_key = a.key(sub_req)
        if sub_key != key:
            write(ctx.store, sub_key, sub)
    write(ctx.store, key, res)
    return Stored(key, res.meta, False, ctx.store, time.perf_counter() - t0, dict(res.arrays))


def execute(a: Analysis, ctx: Context, payload: dict[str, Any]) -> dict[str, Any]:
    """The body of every analyzer task: validate, compute or find in the cache, and say where the result lies.

    A request the analysis cannot answer comes back as ``meta.error`` with its HTTP status, never as a raised
    exception, so the api passes the message on; anything else is a bug and raises.
    """
    try:
        req = a.request.model_validate(payload)
        stored = ensure(a, ctx, req)
    except Exception as exc:
        f = failure_of(exc)
        if f is None:
            raise
        return AnalysisResult(key="", meta=f.to_meta()).model_dump()
    return AnalysisResult(
        key=stored.key, cached=stored.cached, seconds=stored.seconds, meta={"cached": stored.cached}
    ).model_dump()


def load(ctx: Context, key: str, cached: bool) -> Stored:
    """A stored result's JSON; 404 when it vanished (its run was deleted while the answer was on its way)."""
    try:
        meta = ctx.store.get_json(key + ".json")
    except ObjectNotFound:
        raise not_found("the result is gone: its run was deleted while the analysis ran") from None
    return Stored(key, meta, cached, ctx.store)


# --- the registry itself ------------------------------------------------------------------------------------------

_REGISTRY: dict[str, Analysis] = {}
_LOADED = False
_LOAD_LOCK = threading.Lock()
_NOT_ANALYSES = {"registry", "worker", "compaction"}


def register(*analyses: Analysis) -> None:
    """Add analyses (their module calls this through ``ANALYSES``); a name is registered once."""
    for a in analyses:
        if a.task_name == TASK_COMPACT:
            raise ValueError(f"analysis name {a.name!r} is taken by the compaction task")
        old = _REGISTRY.get(a.name)
        if old is not None and old is not a:
            raise ValueError(f"analysis {a.name!r} is registered twice")
        _REGISTRY[a.name] = a


def _load() -> None:
    global _LOADED
    with _LOAD_LOCK:
        if _LOADED:
            return
        import netlapse.analyzer as pkg

        for info in sorted(pkgutil.iter_modules(pkg.__path__), key=lambda m: m.name):
            if info.name in _NOT_ANALYSES or info.name.startswith("_"):
                continue
            module = importlib.import_module(f"{pkg.__name__}.{info.name}")
            register(*getattr(module, "ANALYSES", ()))
        _LOADED = True


def registry() -> dict[str, Analysis]:
    """Every analysis by name (importing the analysis modules on first use)."""
    _load()
    return dict(_REGISTRY)


def get(name: str) -> Analysis:
    _load()
    return _REGISTRY[name]


def catalog(analyses: Iterable[Analysis] | None = None) -> list[dict[str, Any]]:
    """What ``GET /api/analyses`` lists: name, route and request schema of every analysis with a route."""
    out = []
    for a in analyses if analyses is not None else registry().values():
        if a.path is None:
            continue
        out.append(
            {
                "name": a.name,
                "method": a.method,
                "path": a.path,
                "summary": a.short,
                "body": a.method == "POST",
                "request": a.request.model_json_schema(by_alias=True),
                "aliases": {n: f.alias for n, f in a.request.model_fields.items() if f.alias},
                "artifacts": list(a.artifacts),
                "cached": a.cache,
            }
        )
    return out
