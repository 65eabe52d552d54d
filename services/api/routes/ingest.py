"""SDK ingest: runs recorded in the user's own training process (``netlapse.init / watch / log / finish``).

The SDK encodes the tape itself and uploads it here with the user's token (never with store credentials).
Every path is under ``/api/ingest/runs`` (docs/sdk.md lists them with their bodies):

    POST /ingest/runs                                 create an SDK run (or return it: ``id`` makes it idempotent)
    GET  /ingest/runs/{id}/state                      what the server holds (a resumed push skips it)
    POST /ingest/runs/{id}/watch                      the watched model: module kinds, buffers, every
    PUT  /ingest/runs/{id}/tape/segments/{name}       one segment, ``X-Netlapse-SHA256`` = its SHA-256
    POST /ingest/runs/{id}/tape/commit                list uploaded segments in the manifest (verified first)
    POST /ingest/runs/{id}/metrics                    a numbered batch of metric rows
    POST /ingest/runs/{id}/heartbeat                  the training process is alive
    PUT  /ingest/runs/{id}/program                    the torch.export program (netlapse.core.program)
    PUT  /ingest/runs/{id}/eval/{inputs|labels}       held-out data as .npy (no pickle)
    POST /ingest/runs/{id}/finish                     succeeded / failed / cancelled

Every upload is idempotent: a segment is PUT by name (the same bytes again are a no-op), a commit names the
number of segments it builds on, a metrics batch carries a sequence number. A segment is listed in the
manifest only after the server has read it back and checked its size and SHA-256, so readers never see an
unverified or partial segment.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import json
import logging
import re
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from datetime import datetime
from typing import Annotated, Any, Literal

import numpy as np
from fastapi import APIRouter, FastAPI, Header, HTTPException, Request, Response
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel, ConfigDict, Field, field_validator
from starlette.types import ASGIApp, Receive, Scope, Send

from netlapse.api.deps import (
    CeleryDep,
    CurrentUser,
    EventsDep,
    RepoDep,
    RunDep,
    SettingsDep,
    StoreDep,
    get_events,
    get_redis,
    get_store,
)
from netlapse.api.errors import invalid
from netlapse.api.limits import BodySizeLimit
from netlapse.api.routes.runs import public
from netlapse.core.events import EventStream, EventType
from netlapse.core.metrics import metrics_parts_prefix, read_metrics
from netlapse.core.program import eval_inputs_key, eval_labels_key, program_key
from netlapse.core.queue import COMPACT_QUEUE, TASK_COMPACT
from netlapse.core.runs import RunExists, RunNotFound, RunRepository, new_run_id
from netlapse.core.schemas import (
    RUN_ID_RE,
    TERMINAL_STATUSES,
    CaptureConfig,
    CompactTask,
    Progress,
    RunPublic,
    RunRecord,
    RunSummary,
    SdkInfo,
    metrics_key,
    tape_prefix,
    utcnow,
)
from netlapse.core.sdkruns import finalize_metrics, put_metrics_part, tape_summary
from netlapse.core.settings import Settings, get_settings
from netlapse.core.store import ObjectNotFound, Store
from netlapse.core.tape import MANIFEST_NAME, SEGMENTS_DIR

log = logging.getLogger(__name__)
router = APIRouter(prefix="/ingest", tags=["ingest"])

SEGMENT_NAME_RE = re.compile(r"^(\d{12})-(\d{12})\.seg$")
TAPE_KEY_RE = re.compile(r"^[a-z0-9_-]+(/[a-z0-9_-][a-z0-9_.-]*)*\.(seg|json)$")
SERVER_OWNED = ("compact/", "compaction.json")  # written by the server's compactor, never uploaded
SHA256_RE = re.compile(r"^[0-9a-f]{64}$")
METRICS_PART_RE = re.compile(r"/sdk-(\d{8})\.jsonl$")
MAX_CONFIG_BYTES = 64 * 1024
MAX_METRIC_ROWS = 10_000
MAX_METRIC_KEYS = 64
EVAL_KEYS = {"inputs": eval_inputs_key, "labels": eval_labels_key}
EVAL_PARTS = tuple(EVAL_KEYS)
LOST_ERROR = "training process lost: no heartbeat for {s:.0f} s; the steps committed before stay readable"


def active_key(run_id: str) -> str:
    """Marker of a running SDK run, so the heartbeat check lists a few keys instead of every run. Pushed offline
    runs get none: a push has no process to lose, and an interrupted one resumes when pushed again."""
    return f"sdk/active/{run_id}"


# --- bodies ------------------------------------------------------------------------------------------------


class IngestRunCreate(BaseModel):
    """Body of POST /api/ingest/runs."""

    model_config = ConfigDict(extra="forbid")

    id: str | None = Field(None, description="the run id to use (offline runs keep theirs); idempotent")
    name: str = Field("run", min_length=1, max_length=120)
    config: dict[str, Any] = Field(default_factory=dict, description="JSON, at most 64 KiB")
    offline: bool = Field(False, description="recorded to a local directory, pushed now")
    created_at: datetime | None = None

    @field_validator("id")
    @classmethod
    def _id(cls, v: str | None) -> str | None:
        if v is not None and not RUN_ID_RE.match(v):
            raise ValueError("run id must be 8-32 lowercase letters or digits")
        return v

    @field_validator("config")
    @classmethod
    def _config(cls, v: dict[str, Any]) -> dict[str, Any]:
        try:
            size = len(json.dumps(v, allow_nan=False))
        except ValueError as e:
            raise ValueError(f"config must be plain JSON (no NaN/inf): {e}") from None
        if size > MAX_CONFIG_BYTES:
            raise ValueError(f"config is {size} bytes as JSON; at most {MAX_CONFIG_BYTES} are kept")
        return v


class IngestRun(BaseModel):
    """Answer of POST /api/ingest/runs: the run and how the SDK should talk to this server."""

    run: RunPublic
    created: bool
    heartbeat_s: float = Field(description="send a heartbeat at least this often")
    max_object_bytes: int


class IngestWatch(BaseModel):
    """Body of POST /api/ingest/runs/{id}/watch."""

    model_config = ConfigDict(extra="forbid")

    modules: dict[str, str] = Field(default_factory=dict, max_length=100_000)
    buffers: bool = False
    every: int = Field(1, ge=1, le=100_000)
    torch_version: str = Field("", max_length=64)
    host: str = Field("", max_length=255)


class MetricsBatch(BaseModel):
    """Body of POST /api/ingest/runs/{id}/metrics: rows ``{"step": k, "loss": ..., ...}``."""

    model_config = ConfigDict(extra="forbid")

    seq: int = Field(ge=0, le=99_999_999, description="batch number; a batch sent twice is stored once")
    rows: list[dict[str, float | int | bool | None]] = Field(min_length=1, max_length=MAX_METRIC_ROWS)

    @field_validator("rows")
    @classmethod
    def _rows(cls, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        for r in rows:
            step = r.get("step")
            if not isinstance(step, int) or isinstance(step, bool) or step < 0:
                raise ValueError("every row needs an integer step >= 0")
            if len(r) > MAX_METRIC_KEYS:
                raise ValueError(f"a row has {len(r)} keys; at most {MAX_METRIC_KEYS}")
            bad = [k for k in r if not k or len(k) > 64 or k == "kind"]
            if bad:
                raise ValueError(f"invalid metric names {bad}: 1-64 characters, not 'kind'")
        return rows


class IngestFinish(BaseModel):
    """Body of POST /api/ingest/runs/{id}/finish."""

    model_config = ConfigDict(extra="forbid")

    status: Literal["succeeded", "failed", "cancelled"]
    error: str | None = Field(None, max_length=4000)
    summary: RunSummary = RunSummary()


# --- helpers -----------------------------------------------------------------------------------------------


def sdk_run(rec: RunRecord, *, writable: bool = True) -> RunRecord:
    """409 unless ``rec`` is an SDK run (and, with ``writable``, still running)."""
    if rec.source != "sdk":
        raise HTTPException(409, detail=f"run {rec.id} is trained by the server; only SDK runs take uploads")
    if writable and rec.status in TERMINAL_STATUSES:
        why = f": {rec.error}" if rec.error else ""
        raise HTTPException(409, detail=f"run {rec.id} is already {rec.status}{why}")
    return rec


def check_sha(header: str | None) -> str:
    sha = (header or "").strip().lower()
    if not SHA256_RE.match(sha):
        raise invalid(["header", "x-netlapse-sha256"], "send the body's SHA-256 as 64 hex digits")
    return sha


async def read_body(request: Request, settings: Settings) -> bytes:
    """The raw body, at most ``ingest_max_object_bytes`` (the middleware refuses more before reading)."""
    body = await request.body()
    if len(body) > settings.ingest_max_object_bytes:
        raise HTTPException(413, detail=f"at most {settings.ingest_max_object_bytes} bytes per upload")
    if not body:
        raise invalid(["body"], "empty upload")
    return body


def read_manifest(store: Store, run_id: str) -> dict[str, Any] | None:
    try:
        m = store.get_json(tape_prefix(run_id) + MANIFEST_NAME)
    except ObjectNotFound:
        return None
    return m if isinstance(m, dict) else None


def heartbeat(repo: RunRepository, run_id: str) -> RunRecord:
    """Note that the run's training process is alive (only while it runs)."""

    def change(r: RunRecord) -> bool:
        if r.status in TERMINAL_STATUSES:
            return False
        r.sdk = (r.sdk or SdkInfo()).model_copy(update={"heartbeat_at": utcnow()})
        return True

    return repo.update(run_id, change)


# --- routes ------------------------------------------------------------------------------------------------


@router.post("/runs", status_code=201)
def create_sdk_run(
    body: IngestRunCreate,
    response: Response,
    repo: RepoDep,
    store: StoreDep,
    events: EventsDep,
    settings: SettingsDep,
    user: CurrentUser,
) -> IngestRun:
    """Create a running SDK run owned by the caller (201); with ``id``, that run if it exists already (200)."""
    now = utcnow()
    rec = RunRecord(
        id=body.id or new_run_id(),
        name=body.name,
        owner=user,
        status="running",
        source="sdk",
        capture=CaptureConfig(),
        sdk=SdkInfo(config=body.config, offline=body.offline, heartbeat_at=now),
        created_at=body.created_at or now,
        started_at=now,
        attempts=1,
    )
    if not body.offline:  # first: a crash after the record is created still leaves the run to the checks
        store.put_json(active_key(rec.id), {"run_id": rec.id, "at": time.time()})
    try:
        repo.create(rec)
    except RunExists:
        old = repo.get(rec.id)
        if old.owner != user or old.source != "sdk":
            raise HTTPException(409, detail=f"run id {rec.id} is taken by another run") from None
        response.status_code = 200
        return answer(old, False, settings, events)
    publish(events, rec.id, "status", {"status": "running", "error": None})
    return answer(rec, True, settings, events)


def answer(rec: RunRecord, created: bool, settings: Settings, events: EventStream) -> IngestRun:
    return IngestRun(
        run=public(rec, events),
        created=created,
        heartbeat_s=max(0.2, min(10.0, settings.sdk_heartbeat_timeout_s / 6)),
        max_object_bytes=settings.ingest_max_object_bytes,
    )


def publish(events: EventStream, run_id: str, type_: EventType, data: dict[str, Any]) -> None:
    """Publish an event; Redis is a cache and a transport, so its failure never fails an upload."""
    try:
        events.publish(run_id, type_, data)
    except Exception:
        log.warning("could not publish a %s event for run %s", type_, run_id, exc_info=True)


@router.get("/runs/{run_id}/state")
def state(run_id: str, rec: RunDep, store: StoreDep) -> dict[str, Any]:
    """What the server holds of an SDK run: verified segments, metric batches, program, eval data."""
    sdk_run(rec, writable=False)
    seqs = []
    for k in store.list(metrics_parts_prefix(run_id)):
        hit = METRICS_PART_RE.search(k)
        if hit:
            seqs.append(int(hit.group(1)))
    return {
        "status": rec.status,
        "error": rec.error,
        "segments": verified_segments(store, run_id),
        "complete": bool((read_manifest(store, run_id) or {}).get("complete", False)),
        "metrics_seqs": sorted(seqs),
        "metrics_final": store.exists(metrics_key(run_id)),
        "program": store.exists(program_key(run_id)),
        "eval": {p: store.exists(EVAL_KEYS[p](run_id)) for p in EVAL_PARTS},
    }


@router.post("/runs/{run_id}/watch")
def watch(run_id: str, body: IngestWatch, rec: RunDep, repo: RepoDep) -> RunPublic:
    """Describe the watched model: module paths and kinds (the explorer names layers by them), every, buffers."""
    sdk_run(rec)

    def change(r: RunRecord) -> None:
        r.capture = CaptureConfig(every=body.every)
        r.sdk = (r.sdk or SdkInfo()).model_copy(
            update={
                "modules": body.modules,
                "buffers": body.buffers,
                "torch_version": body.torch_version,
                "host": body.host,
                "heartbeat_at": utcnow(),
            }
        )

    return RunPublic.model_validate(repo.update(run_id, change).model_dump())


@router.put("/runs/{run_id}/tape/{key:path}")
async def put_tape_object(
    run_id: str,
    key: str,
    request: Request,
    rec: RunDep,
    store: StoreDep,
    events: EventsDep,
    settings: SettingsDep,
    sha256: Annotated[str | None, Header(alias="x-netlapse-sha256")] = None,
) -> dict[str, Any]:
    """One object of the run's tape, exactly as the SDK's TapeWriter wrote it, its SHA-256 in the header.

    A segment (``segments/NAME.seg``) is stored as it comes; the same bytes again are a no-op, other bytes
    for a segment already committed are a conflict. Any other object is an index object (the manifest, an
    index part): JSON, stored only after every segment it lists (``{"key": "segments/…", "size", "sha256"}``)
    has been read back from the store and matched — so a reader never sees an unverified segment."""
    sdk_run(rec)
    if not TAPE_KEY_RE.match(key) or key.startswith(SERVER_OWNED):
        raise invalid(["path", "key"], f"{key!r} is not an object the SDK may write into a tape")
    want = check_sha(sha256)
    body = await read_body(request, settings)
    if hashlib.sha256(body).hexdigest() != want:
        got = hashlib.sha256(body).hexdigest()
        raise invalid(
            ["body"], f"the body's SHA-256 is {got}, the header says {want}: damaged upload, send it again"
        )
    if key.startswith(SEGMENTS_DIR):
        return await run_in_threadpool(
            _store_segment, store, run_id, key.removeprefix(SEGMENTS_DIR), want, body
        )
    out = await run_in_threadpool(_store_index_object, store, run_id, key, body)
    if out["last_step"] is not None:
        publish(events, run_id, "snapshot", {"step": out["last_step"]})
    return out


def verified_segments(store: Store, run_id: str) -> dict[str, str]:
    """Segment name -> SHA-256 of every segment an index object of this run has listed (checked then)."""
    prefix = verified_prefix(run_id)
    return {k.removeprefix(prefix): store.get(k).decode() for k in store.list(prefix)}


def verified_prefix(run_id: str) -> str:
    return f"runs/{run_id}/sdk/verified/"


def _store_segment(store: Store, run_id: str, name: str, sha: str, body: bytes) -> dict[str, Any]:
    if not SEGMENT_NAME_RE.match(name):
        raise invalid(["path", "key"], "segment names look like segments/000000000000-000000000015.seg")
    try:
        listed = store.get(verified_prefix(run_id) + name).decode()
    except ObjectNotFound:
        listed = None
    if listed is not None:
        if listed != sha:
            raise HTTPException(409, detail=f"segment {name} is already committed with other content")
        return {"key": SEGMENTS_DIR + name, "stored": False, "size": len(body)}
    store.put(tape_prefix(run_id) + SEGMENTS_DIR + name, body)
    return {"key": SEGMENTS_DIR + name, "stored": True, "size": len(body)}


def _segment_refs(obj: Any, out: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Every ``{"key": "segments/…", ...}`` entry anywhere in an index object (whatever its layout)."""
    if isinstance(obj, dict):
        k = obj.get("key")
        if isinstance(k, str) and k.startswith(SEGMENTS_DIR):
            out.append(obj)
        for v in obj.values():
            _segment_refs(v, out)
    elif isinstance(obj, list):
        for v in obj:
            _segment_refs(v, out)
    return out


def _store_index_object(store: Store, run_id: str, key: str, body: bytes) -> dict[str, Any]:
    try:
        obj = json.loads(body)
    except ValueError as exc:
        raise invalid(["body"], f"tape index objects are JSON: {exc}") from None
    refs = _segment_refs(obj, [])
    known = verified_segments(store, run_id)
    prefix = tape_prefix(run_id)
    last: int | None = None
    for e in refs:
        name = str(e["key"]).removeprefix(SEGMENTS_DIR)
        size, sha = e.get("size"), e.get("sha256")
        if not SEGMENT_NAME_RE.match(name) or not isinstance(size, int) or not isinstance(sha, str):
            raise invalid(["body"], f"segment entry {e.get('key')!r} needs a valid name, size and sha256")
        if isinstance(e.get("last_step"), int):
            last = max(last or 0, int(e["last_step"]))
        if known.get(name) == sha:
            continue
        if name in known:
            raise HTTPException(409, detail=f"segment {name} is already committed with other content")
        try:
            data = store.get(prefix + SEGMENTS_DIR + name)
        except ObjectNotFound:
            raise HTTPException(
                409, detail=f"segment {name} was not uploaded; PUT it before the index that lists it"
            ) from None
        if len(data) != size or hashlib.sha256(data).hexdigest() != sha:
            raise HTTPException(
                409,
                detail=f"segment {name} as stored does not match its entry (size or SHA-256); upload it again",
            )
        store.put(verified_prefix(run_id) + name, sha.encode())
        known[name] = sha
    store.put(prefix + key, body)  # last: only now do readers see the segments it lists
    return {"key": key, "stored": True, "segments": len(refs), "last_step": last}


@router.post("/runs/{run_id}/metrics")
def metrics(
    run_id: str, body: MetricsBatch, rec: RunDep, store: StoreDep, events: EventsDep
) -> dict[str, Any]:
    """Append one batch of metric rows (stored once per ``seq``) and send them to live viewers."""
    sdk_run(rec)
    if not put_metrics_part(store, run_id, body.seq, body.rows):
        return {"seq": body.seq, "stored": False}
    publish(events, run_id, "metrics", {"steps": body.rows})
    publish(events, run_id, "progress", dict(body.rows[-1]))
    return {"seq": body.seq, "stored": True}


@router.post("/runs/{run_id}/heartbeat")
def post_heartbeat(run_id: str, rec: RunDep, repo: RepoDep) -> dict[str, Any]:
    """The training process is alive; the answer says the run's status (``failed`` if it was given up on) and
    whether someone asked to cancel it (the SDK shows it as ``run.cancel_requested``; the loop decides)."""
    sdk_run(rec, writable=False)
    r = heartbeat(repo, run_id)
    return {"status": r.status, "error": r.error, "cancel_requested": r.cancel_requested}


@router.put("/runs/{run_id}/program")
async def put_program(
    run_id: str,
    request: Request,
    rec: RunDep,
    store: StoreDep,
    repo: RepoDep,
    settings: SettingsDep,
    sha256: Annotated[str | None, Header(alias="x-netlapse-sha256")] = None,
) -> dict[str, Any]:
    """The model's torch.export program (bytes of netlapse.core.program.export_program; no pickle)."""
    sdk_run(rec)
    want = check_sha(sha256)
    body = await read_body(request, settings)
    if hashlib.sha256(body).hexdigest() != want:
        raise invalid(["body"], "the body's SHA-256 differs from the header's: the upload was damaged")
    await run_in_threadpool(store.put, program_key(run_id), body)
    await run_in_threadpool(repo.update, run_id, lambda r: _set_sdk(r, program=True))
    return {"stored": True, "size": len(body)}


@router.put("/runs/{run_id}/eval/{part}")
async def put_eval(
    run_id: str,
    part: str,
    request: Request,
    rec: RunDep,
    store: StoreDep,
    repo: RepoDep,
    settings: SettingsDep,
    sha256: Annotated[str | None, Header(alias="x-netlapse-sha256")] = None,
) -> dict[str, Any]:
    """Held-out inputs (``[N, ...]`` floats) or labels (``[N]`` ints) as ``.npy`` bytes, read without pickle."""
    sdk_run(rec)
    if part not in EVAL_PARTS:
        raise invalid(["path", "part"], "part must be inputs or labels")
    want = check_sha(sha256)
    body = await read_body(request, settings)
    if hashlib.sha256(body).hexdigest() != want:
        raise invalid(["body"], "the body's SHA-256 differs from the header's: the upload was damaged")
    try:
        arr = np.load(io.BytesIO(body), allow_pickle=False)
    except ValueError as e:
        raise invalid(["body"], f"not a .npy array without objects: {e}") from None
    if part == "inputs" and (arr.ndim < 2 or arr.dtype.kind != "f"):
        raise invalid(["body"], f"eval inputs must be floats [N, ...], got {arr.dtype} {list(arr.shape)}")
    if part == "labels" and (arr.ndim != 1 or arr.dtype.kind not in "iu"):
        raise invalid(["body"], f"eval labels must be integers [N], got {arr.dtype} {list(arr.shape)}")
    await run_in_threadpool(store.put, EVAL_KEYS[part](run_id), body)
    both = all(store.exists(EVAL_KEYS[p](run_id)) for p in EVAL_PARTS)
    if both:
        await run_in_threadpool(repo.update, run_id, lambda r: _set_sdk(r, eval_data=True))
    return {"stored": True, "shape": list(arr.shape), "dtype": str(arr.dtype)}


def _set_sdk(r: RunRecord, **fields: Any) -> None:
    r.sdk = (r.sdk or SdkInfo()).model_copy(update=fields)


@router.post("/runs/{run_id}/finish")
def finish(
    run_id: str,
    body: IngestFinish,
    rec: RunDep,
    repo: RepoDep,
    store: StoreDep,
    events: EventsDep,
    celery: CeleryDep,
    settings: SettingsDep,
) -> RunPublic:
    """End the run: ``succeeded`` needs the tape committed complete. Finishing again the same way is a no-op."""
    sdk_run(rec, writable=False)
    tape = tape_summary(store, run_id)
    if body.status == "succeeded" and not tape["complete"]:
        raise HTTPException(
            409, detail="upload the tape's final manifest (complete) before finishing as succeeded"
        )
    merged = read_metrics(store, run_id)
    last = merged["steps"][-1] if merged["steps"] else {}

    def change(r: RunRecord) -> bool:
        if r.status in TERMINAL_STATUSES:
            return False
        r.status, r.error, r.finished_at = body.status, body.error, utcnow()
        r.tape_complete = tape["complete"]
        r.summary = body.summary.model_copy(
            update={k: tape[k] for k in ("steps_captured", "raw_bytes", "stored_bytes")}
        )
        if r.summary.final_loss is None and isinstance(last.get("loss"), int | float):
            r.summary.final_loss = float(last["loss"])
        r.progress = Progress(
            step=tape["last_step"] or 0,
            loss=last.get("loss") if isinstance(last.get("loss"), int | float) else None,
            accuracy=last.get("accuracy") if isinstance(last.get("accuracy"), int | float) else None,
            eta_seconds=0.0,
        )
        return True

    out = repo.update(run_id, change)
    if out.status != body.status:
        why = f": {out.error}" if out.error else ""
        raise HTTPException(409, detail=f"run {run_id} is already {out.status}{why}")
    finalize_metrics(store, run_id)
    _deactivate(store, run_id)
    publish(
        events,
        run_id,
        "status",
        {"status": out.status, "error": out.error, "summary": out.summary.model_dump()},
    )
    if out.tape_complete and settings.compact_after_run:
        try:
            celery.send_task(
                TASK_COMPACT, args=[CompactTask(run_id=run_id).model_dump()], queue=COMPACT_QUEUE
            )
        except Exception:  # compaction is an optimisation; the run is complete without it
            log.warning("could not send the compaction task for run %s", run_id, exc_info=True)
    return public(out, events)


def _deactivate(store: Store, run_id: str) -> None:
    try:
        store.delete_prefix(active_key(run_id))
    except ObjectNotFound:
        pass


# --- runs whose training process died ----------------------------------------------------------------------


def reap_lost_runs(store: Store, events: EventStream | None, settings: Settings) -> list[str]:
    """Mark ``failed`` every running SDK run whose last heartbeat is older than ``sdk_heartbeat_timeout_s``.

    Returns the ids marked. The committed tape and metrics stay as they are (readable)."""
    repo = RunRepository(store)
    timeout = settings.sdk_heartbeat_timeout_s
    lost: list[str] = []
    for key in store.list("sdk/active/"):
        run_id = key.rsplit("/", 1)[-1]
        try:
            rec = repo.get(run_id)
        except (RunNotFound, ValueError):
            try:
                young = time.time() - float(store.get_json(key).get("at", 0)) < 60
            except Exception:  # an unreadable marker of a run with no record: nothing left to protect
                log.warning("SDK run %s: its active marker is unreadable; removing it", run_id, exc_info=True)
                young = False
            if not young:  # else its record may be being created right now
                _deactivate(store, run_id)
            continue
        if rec.status in TERMINAL_STATUSES:
            _deactivate(store, run_id)
            continue

        def change(r: RunRecord) -> bool:
            seen = (r.sdk.heartbeat_at if r.sdk else None) or r.started_at or r.created_at
            if r.status in TERMINAL_STATUSES or (utcnow() - seen).total_seconds() < timeout:
                return False
            r.status, r.finished_at = "failed", utcnow()
            r.error = LOST_ERROR.format(s=timeout)
            return True

        try:
            out = repo.update(run_id, change)
        except RunNotFound:
            _deactivate(store, run_id)
            continue
        if out.status == "failed" and out.error == LOST_ERROR.format(s=timeout):
            lost.append(run_id)
            try:
                finalize_metrics(store, run_id)
            except Exception:
                log.warning("could not finalize the metrics of lost run %s", run_id, exc_info=True)
            _deactivate(store, run_id)
            if events is not None:
                publish(events, run_id, "status", {"status": "failed", "error": out.error})
    return lost


async def _reap_forever(settings: Settings) -> None:
    store = get_store(settings)
    events = get_events(settings, get_redis(settings))
    while True:
        await asyncio.sleep(settings.sdk_reaper_interval_s)
        try:
            lost = await run_in_threadpool(reap_lost_runs, store, events, settings)
        except Exception:  # a store hiccup must not end the checks
            log.warning("checking SDK heartbeats failed", exc_info=True)
            continue
        for run_id in lost:
            log.warning("SDK run %s: %s", run_id, LOST_ERROR.format(s=settings.sdk_heartbeat_timeout_s))


@asynccontextmanager
async def heartbeat_checks(app: FastAPI) -> AsyncIterator[None]:
    """The api's lifespan: every ``sdk_reaper_interval_s``, fail SDK runs whose heartbeats stopped."""
    task = asyncio.create_task(_reap_forever(get_settings()))
    try:
        yield
    finally:
        task.cancel()
        with suppress(asyncio.CancelledError):
            await task


class UploadBodyLimit:
    """ASGI middleware: SDK uploads (paths under ``prefix``) get their own, larger body limit; every other
    request keeps the api's. Both are enforced by :class:`BodySizeLimit` (413 before or while reading)."""

    def __init__(self, app: ASGIApp, *, limit: int, upload_limit: int, prefix: str = "/api/ingest/") -> None:
        self.prefix = prefix
        self.default = BodySizeLimit(app, limit=limit)
        self.uploads = BodySizeLimit(app, limit=upload_limit)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        chosen = self.uploads if str(scope.get("path", "")).startswith(self.prefix) else self.default
        await chosen(scope, receive, send)
