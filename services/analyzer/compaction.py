"""Compaction: rewrite closed step-major tape segments time-major, verified bit-exact, then drop them.

A pass reads the tape's indexes, groups consecutive not-yet-compacted step-major segments into *units*
(about ``unit_steps`` steps each; a live tape keeps its newest, still-short run for a later pass, a
complete tape compacts everything), and for each unit:

1. decodes every tensor block by block over the unit's steps from the step-major data (memory: one block
   over the unit's steps, whatever the model's width);
2. encodes each (lane block, group of ``group_steps`` steps) as one time-major frame, decodes the frame
   again and compares it with the step-major lanes (bit-exact, or the pass fails before anything is listed);
3. uploads the unit's parts (~``part_bytes`` each), downloads each back and checks its sha256.

Only then is ``compaction.json`` rewritten (its write is the commit point), and only after that are the
replaced step-major segments deleted. A crash before the index write leaves unlisted parts that the next
pass removes; a crash after it leaves replaced segments that the next pass deletes. Readers use whichever
is listed, and re-read the indexes when a segment they expected is gone. Lossy tapes are left as they are
(their step-major form is already small, and a re-encode must not move any value).

One pass at a time per tape: the compaction task takes a per-run Redis lock, refreshed while the pass runs,
and the pass is *fenced*: it checks the lock before every delete and before its commit, and the commit itself
is a compare-and-set write of ``compaction.json`` against the version the pass started from. A pass that
stalled past its lock (and so may have a successor) can therefore neither commit nor delete. Every pass
names its parts with its own id, and before removing unlisted parts as orphans it first bumps
``compaction.json``'s version (compare-and-set), so any older pass still holding parts can no longer commit
them: orphan clean-up never removes parts a live pass could still list.
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from netlapse.core.schemas import tape_prefix
from netlapse.core.settings import Settings
from netlapse.core.store import ObjectNotFound, PreconditionFailed, Store
from netlapse.core.tape import (
    CODEC,
    COMPACT_DIR,
    COMPACTION_NAME,
    KIND_STEP_MAJOR,
    KIND_TIME_MAJOR,
    TapeCorrupt,
    TapeReader,
    decode_time_major_chunk,
    encode_time_major_chunk,
    pack_object,
)

log = logging.getLogger(__name__)

DEFAULT_GROUP_STEPS = 16
DEFAULT_BLOCK_LANES = 4096
DEFAULT_UNIT_STEPS = 64
DEFAULT_PART_BYTES = 8 << 20


@dataclass
class CompactionReport:
    """What one pass did."""

    prefix: str
    units: int = 0
    steps: int = 0
    segments_replaced: int = 0
    bytes_before: int = 0  # step-major bytes of the replaced segments
    bytes_after: int = 0  # time-major bytes written
    raw_bytes: int = 0
    deleted: int = 0
    orphans_removed: int = 0
    seconds: float = 0.0
    skipped: str | None = None
    unit_keys: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        """A JSON-able dict (the Celery task's result)."""
        return asdict(self)


def plan_units(
    segments: list[dict[str, Any]], *, unit_steps: int, complete: bool
) -> list[list[dict[str, Any]]]:
    """Consecutive uncovered step-major segments grouped into units of at least ``unit_steps`` steps.

    A run of segments broken by an already compacted range or a legacy segment starts a new unit; a short
    tail is compacted only when the tape is complete."""
    units: list[list[dict[str, Any]]] = []
    cur: list[dict[str, Any]] = []
    next_pos: int | None = None

    def flush(final: bool) -> None:
        nonlocal cur
        if cur and (final or sum(len(s["steps"]) for s in cur) >= unit_steps):
            units.append(cur)
        cur = []

    for s in segments:
        contiguous = next_pos is None or s["first_pos"] == next_pos
        if s["kind"] != KIND_STEP_MAJOR or s["lossy"]:
            flush(final=complete)
            next_pos = None
            continue
        if not contiguous:
            flush(final=complete)
        if cur and cur[0]["block_lanes"] != s["block_lanes"]:
            flush(final=True)
        cur.append(s)
        next_pos = s["first_pos"] + len(s["steps"])
        if sum(len(x["steps"]) for x in cur) >= unit_steps:
            flush(final=True)
    flush(final=complete)
    return units


class LockLost(RuntimeError):
    """The pass no longer holds its run's compaction lock: it must neither commit nor delete."""


class IndexChanged(RuntimeError):
    """compaction.json changed since the pass read it (another pass committed or cleaned up)."""


Fence = Callable[[], None]


def _no_fence() -> None:
    return None


def _commit_index(store: Store, prefix: str, comp: dict[str, Any], etag: str | None) -> str:
    """Compare-and-set write of compaction.json; IndexChanged if it is no longer at ``etag``."""
    data = json.dumps(comp, separators=(",", ":"), allow_nan=False).encode()
    try:
        return store.put_if(prefix + COMPACTION_NAME, data, etag)
    except PreconditionFailed as e:
        raise IndexChanged(f"{prefix}{COMPACTION_NAME} changed while this pass ran: {e}") from None


def _cleanup(
    store: Store,
    prefix: str,
    comp: dict[str, Any],
    etag: str | None,
    manifest_keys: set[str],
    delete: bool,
    fence: Fence,
) -> tuple[int, int, dict[str, Any], str | None]:
    """Remove leftovers of interrupted passes: unlisted parts, and replaced segments still present.

    Before any orphan goes, compaction.json's version is bumped (compare-and-set), so a pass that wrote those
    parts and still hopes to list them fails its commit instead. Returns (orphans, deleted, index, etag)."""
    listed = {str(p["key"]) for u in comp.get("units", []) for p in u["parts"]}
    orphans = [k for k in store.list(prefix + COMPACT_DIR) if k[len(prefix) :] not in listed]
    if orphans:
        fence()
        comp = {**comp, "generation": int(comp.get("generation", 0)) + 1, "updated_at": time.time()}
        etag = _commit_index(store, prefix, comp, etag)
        for key in orphans:
            fence()
            store.delete_prefix(key)
    deleted = 0
    if delete:
        for u in comp.get("units", []):
            for k in u["replaces"]:
                if k in manifest_keys and store.exists(prefix + k):
                    fence()
                    store.delete_prefix(prefix + k)
                    deleted += 1
    return len(orphans), deleted, comp, etag


def _encode_unit(
    reader: TapeReader,
    store: Store,
    prefix: str,
    unit: list[dict[str, Any]],
    *,
    group_steps: int,
    block_lanes: int,
    part_bytes: int,
    zstd_level: int,
    pass_id: str,
    fence: Fence,
) -> dict[str, Any]:
    """Encode, verify and upload one unit's parts; returns its compaction.json entry (not yet listed)."""
    steps = [st for s in unit for st in s["steps"]]
    first_pos, last_pos = unit[0]["first_pos"], unit[-1]["first_pos"] + len(unit[-1]["steps"]) - 1
    ingest_lanes = int(unit[0]["block_lanes"])
    if ingest_lanes % block_lanes:
        raise ValueError(
            f"time-major block_lanes {block_lanes} must divide the tape's block_lanes {ingest_lanes}"
        )
    n_groups = -(-len(steps) // group_steps)
    names = [t.name for t in reader.tensors()]
    parts: list[dict[str, Any]] = []
    pending: list[tuple[list[bytes], list[int]]] = []  # per block: frame per group, mode per group
    pending_bytes = 0
    block_lo = 0
    gblock = 0

    def flush() -> None:
        nonlocal pending, pending_bytes, block_lo
        if not pending:
            return
        nb = len(pending)
        chunks = [pending[j][0][g] for g in range(n_groups) for j in range(nb)]
        rows = np.zeros((len(chunks), 5), dtype=np.int64)
        rows[:, 3] = [pending[j][1][g] for g in range(n_groups) for j in range(nb)]
        header = {
            "kind": KIND_TIME_MAJOR,
            "codec": CODEC,
            "steps": steps,
            "tensors": names,
            "block_lo": block_lo,
            "block_hi": block_lo + nb,
            "group_steps": group_steps,
            "block_lanes": block_lanes,
        }
        data, info = pack_object(chunks, rows, header)
        key = f"{COMPACT_DIR}{steps[0]:012d}-{steps[-1]:012d}.{pass_id}.{len(parts):04d}.tm"
        fence()
        store.put(prefix + key, data)
        # Read it back: what the index will point at must be exactly what was verified.
        if hashlib.sha256(store.get(prefix + key)).hexdigest() != info["sha256"]:
            raise TapeCorrupt(f"{prefix}{key}: the uploaded part reads back different bytes")
        parts.append({"key": key, **info, "block_lo": block_lo, "block_hi": block_lo + nb})
        block_lo += nb
        pending, pending_bytes = [], 0

    for name in names:
        lanes_dtype, n = reader.lanes_layout(name)
        n_ingest = max(1, -(-n // ingest_lanes))
        for b in range(n_ingest):
            m = reader.step_major_block(name, b, first_pos, last_pos)  # [positions, width]
            width = m.shape[1]
            for lo in range(0, max(width, 1), block_lanes):
                sub = m[:, lo : lo + block_lanes]
                frames: list[bytes] = []
                modes: list[int] = []
                for g in range(n_groups):
                    part = np.ascontiguousarray(sub[g * group_steps : (g + 1) * group_steps])
                    frame, mode = encode_time_major_chunk(part, lanes_dtype, zstd_level)
                    back = decode_time_major_chunk(frame, lanes_dtype, part.shape[0], part.shape[1], mode)
                    if not np.array_equal(back, part):
                        raise TapeCorrupt(f"time-major re-encode of {name!r} block {gblock} is not bit-exact")
                    frames.append(frame)
                    modes.append(mode)
                    pending_bytes += len(frame)
                pending.append((frames, modes))
                gblock += 1
                if pending_bytes >= part_bytes:
                    flush()
    flush()
    return {
        "kind": KIND_TIME_MAJOR,
        "codec": CODEC,
        "steps": steps,
        "first_step": steps[0],
        "last_step": steps[-1],
        "group_steps": group_steps,
        "block_lanes": block_lanes,
        "replaces": [s["key"] for s in unit],
        "parts": parts,
        "raw_bytes": sum(int(s["raw_bytes"]) for s in unit),
        "replaced_bytes": sum(int(s["size"]) for s in unit),
        "stored_bytes": sum(int(p["size"]) for p in parts),
        "created_at": time.time(),
    }


def compact_tape(
    store: Store,
    prefix: str,
    *,
    group_steps: int = DEFAULT_GROUP_STEPS,
    block_lanes: int = DEFAULT_BLOCK_LANES,
    unit_steps: int = DEFAULT_UNIT_STEPS,
    part_bytes: int = DEFAULT_PART_BYTES,
    zstd_level: int = 3,
    delete_replaced: bool = True,
    crash_after_parts: bool = False,
    fence: Fence = _no_fence,
) -> CompactionReport:
    """One compaction pass over the tape at ``prefix`` (see the module docstring). ``crash_after_parts``
    stops right before the index write, as a crash would (for tests). ``fence()`` raises LockLost once the
    pass may have a successor; it is called before every write and delete.

    A pass that loses the race (IndexChanged, LockLost) returns with ``skipped`` saying so: nothing it wrote
    is listed, its parts are orphans for the next pass."""
    t0 = time.perf_counter()
    if not prefix.endswith("/"):
        prefix += "/"
    report = CompactionReport(prefix=prefix)
    reader = TapeReader(store, prefix, cache_bytes=256 << 20)
    if reader.lossy:
        report.skipped = "lossy tape: its step-major form is kept as written"
        return report
    try:
        raw, etag = store.get_versioned(prefix + COMPACTION_NAME)
        comp: dict[str, Any] = json.loads(raw)
    except ObjectNotFound:
        comp, etag = {"format": 1, "units": []}, None
    manifest_keys = {str(s["key"]) for s in reader.manifest.get("segments", [])}
    pass_id = uuid.uuid4().hex[:12]
    try:
        return _compact_pass(
            store,
            prefix,
            reader,
            report,
            comp,
            etag,
            manifest_keys,
            pass_id,
            fence,
            t0,
            group_steps=group_steps,
            block_lanes=block_lanes,
            unit_steps=unit_steps,
            part_bytes=part_bytes,
            zstd_level=zstd_level,
            delete_replaced=delete_replaced,
            crash_after_parts=crash_after_parts,
        )
    except (LockLost, IndexChanged) as e:
        report.skipped = f"stopped, nothing committed or deleted since: {e}"
        report.seconds = time.perf_counter() - t0
        log.warning("compaction of %s %s", prefix, report.skipped)
        return report


def _compact_pass(
    store: Store,
    prefix: str,
    reader: TapeReader,
    report: CompactionReport,
    comp: dict[str, Any],
    etag: str | None,
    manifest_keys: set[str],
    pass_id: str,
    fence: Fence,
    t0: float,
    *,
    group_steps: int,
    block_lanes: int,
    unit_steps: int,
    part_bytes: int,
    zstd_level: int,
    delete_replaced: bool,
    crash_after_parts: bool,
) -> CompactionReport:
    report.orphans_removed, report.deleted, comp, etag = _cleanup(
        store, prefix, comp, etag, manifest_keys, delete_replaced, fence
    )

    units = plan_units(reader.uncovered_segments(), unit_steps=unit_steps, complete=reader.complete)
    if not units:
        report.skipped = "nothing to compact yet"
        report.seconds = time.perf_counter() - t0
        return report
    new_units = []
    for unit in units:
        entry = _encode_unit(
            reader,
            store,
            prefix,
            unit,
            group_steps=group_steps,
            block_lanes=block_lanes,
            part_bytes=part_bytes,
            zstd_level=zstd_level,
            pass_id=pass_id,
            fence=fence,
        )
        new_units.append(entry)
        report.units += 1
        report.steps += len(entry["steps"])
        report.segments_replaced += len(unit)
        report.bytes_before += entry["replaced_bytes"]
        report.bytes_after += entry["stored_bytes"]
        report.raw_bytes += entry["raw_bytes"]
        report.unit_keys.append(entry["parts"][0]["key"])
    if crash_after_parts:
        report.skipped = "stopped before the index write (simulated crash)"
        return report
    comp = {
        "format": 1,
        "generation": int(comp.get("generation", 0)),
        "units": [*comp.get("units", []), *new_units],
        "updated_at": time.time(),
    }
    fence()
    _commit_index(store, prefix, comp, etag)  # the commit point: written last, compare-and-set
    if delete_replaced:
        for u in new_units:
            for k in u["replaces"]:
                fence()  # a pass that lost its lock leaves them to the next pass
                store.delete_prefix(prefix + k)
                report.deleted += 1
    report.seconds = time.perf_counter() - t0
    log.info(
        "compacted %s: %d units, %d steps, %d -> %d bytes in %.2f s",
        prefix,
        report.units,
        report.steps,
        report.bytes_before,
        report.bytes_after,
        report.seconds,
    )
    return report


LOCK_TTL_S = 120.0  # refreshed every third of it while a pass runs

_REFRESH = "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('pexpire', KEYS[1], ARGV[2]) end return 0"
_RELEASE = "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) end return 0"


def compact_lock_key(run_id: str) -> str:
    """Redis key that serializes compaction passes of one run."""
    return f"netlapse:run:{run_id}:compact-lock"


class PassLock:
    """A run's compaction lock: taken with a random token, refreshed in the background while the pass runs.

    ``check()`` (the pass's fence) raises LockLost once the lock is not provably ours: a refresh found
    another token or none, or the last successful refresh is older than the TTL (Redis away, or this
    process stalled), whichever comes first. ``refresh=False`` models a stalled process (tests)."""

    def __init__(self, r: Any, key: str, ttl_s: float = LOCK_TTL_S, refresh: bool = True) -> None:
        self.r, self.key, self.ttl_s, self.refresh = r, key, ttl_s, refresh
        self.token = uuid.uuid4().hex
        self._valid_until = 0.0
        self._lost = False
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def acquire(self) -> bool:
        t = time.monotonic()
        if not self.r.set(self.key, self.token, nx=True, px=int(self.ttl_s * 1000)):
            return False
        self._valid_until = t + self.ttl_s
        if self.refresh:
            self._thread = threading.Thread(target=self._loop, name="netlapse-compact-lock", daemon=True)
            self._thread.start()
        return True

    def _loop(self) -> None:
        while not self._stop.wait(self.ttl_s / 3):
            t = time.monotonic()
            try:
                ok = self.r.eval(_REFRESH, 1, self.key, self.token, int(self.ttl_s * 1000))
            except Exception:  # Redis away: the lock may expire there; check() fences us at our deadline
                log.warning("refreshing the compaction lock %s failed", self.key, exc_info=True)
                continue
            if not ok:
                self._lost = True
                return
            self._valid_until = t + self.ttl_s

    def check(self) -> None:
        if self._lost or time.monotonic() >= self._valid_until:
            raise LockLost(f"the compaction lock {self.key} expired or passed to another pass")

    def release(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        try:
            self.r.eval(_RELEASE, 1, self.key, self.token)
        except Exception:  # it expires by itself
            log.warning("releasing the compaction lock %s failed", self.key, exc_info=True)


def compact_run(
    store: Store, settings: Settings, run_id: str, redis_client: Any, *, lock_ttl_s: float = LOCK_TTL_S
) -> dict[str, Any]:
    """One compaction pass over a run's tape under its refreshed, fenced Redis lock; returns the report.

    A pass already running for the run makes this one a no-op (the running pass or a later one catches up)."""
    lock = PassLock(redis_client, compact_lock_key(run_id), lock_ttl_s)
    if not lock.acquire():
        return CompactionReport(prefix=tape_prefix(run_id), skipped="another pass holds the lock").to_json()
    try:
        report = compact_tape(
            store,
            tape_prefix(run_id),
            group_steps=settings.compact_group_steps,
            unit_steps=settings.compact_unit_steps,
            fence=lock.check,
        )
    except ObjectNotFound:
        report = CompactionReport(prefix=tape_prefix(run_id), skipped="the run has no tape (deleted?)")
    finally:
        lock.release()
    return report.to_json()
