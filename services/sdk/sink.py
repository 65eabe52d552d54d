"""Where a run's data goes: a server (uploaded in the background) or a local directory (offline).

Both sinks take the same things — the tape (through a Store the TapeWriter writes into), metric batches,
the model program, eval data, the end of the run — so :class:`netlapse.sdk.run.Run` does not care which.

:class:`OnlineSink` never lets the training thread touch the network. Segments, commits and metrics go on
an ordered queue that one uploader thread works off (retrying with backoff); a heartbeat thread tells the
server the process is alive. At most ``max_pending_bytes`` of segments wait in memory: past that, the
TapeWriter's upload blocks the capture writer thread, the capture pool runs dry and training waits — the
same backpressure as a slow disk, reported in ``capture_wait_seconds``. Nothing is dropped.
"""

from __future__ import annotations

import builtins
import json
import logging
import queue
import secrets
import socket
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from netlapse.core.program import eval_inputs_key, eval_labels_key, program_key
from netlapse.core.runs import RunRepository
from netlapse.core.schemas import Progress, RunRecord, RunSummary, SdkInfo, tape_prefix, utcnow
from netlapse.core.sdkruns import finalize_metrics, put_metrics_part, tape_summary
from netlapse.core.store import ObjectNotFound, Store
from netlapse.sdk.offline import RunsDirStore
from netlapse.sdk.transport import IngestClient, IngestRejected, ServerUnreachable

log = logging.getLogger("netlapse.sdk")

DEFAULT_MAX_PENDING_BYTES = 256 << 20
EVAL_KEYS = {"inputs": eval_inputs_key, "labels": eval_labels_key}


class UploadFailed(RuntimeError):
    """The run's data could not all be delivered; the message says what is missing and why."""


def host_name() -> str:
    return socket.gethostname()[:255]


# --- online -------------------------------------------------------------------------------------------------


@dataclass
class _Op:
    kind: str  # object | metrics | program | eval | watch | finish
    payload: Any
    nbytes: int = 0
    done: threading.Event = field(default_factory=threading.Event)


class UploadStore:
    """The Store the SDK's TapeWriter writes into: every object it writes becomes an upload, in order."""

    def __init__(self, sink: OnlineSink) -> None:
        self.sink = sink
        self.prefix = tape_prefix(sink.run_id)
        self.url = f"{sink.client.server}/api/ingest/runs/{sink.run_id}"

    def _rel(self, key: str) -> str:
        if not key.startswith(self.prefix):
            raise ValueError(f"the SDK uploads only the run's tape through this store, not {key!r}")
        return key[len(self.prefix) :]

    def put(self, key: str, data: bytes) -> None:
        self.sink.enqueue(_Op("object", (self._rel(key), bytes(data)), len(data)))

    def put_json(self, key: str, obj: Any) -> None:
        self.put(key, json.dumps(obj, separators=(",", ":"), allow_nan=False).encode())

    def exists(self, key: str) -> bool:
        return False  # a fresh tape: the server created the run a moment ago

    def get(self, key: str) -> bytes:
        raise ObjectNotFound(key, self.url)

    def get_json(self, key: str) -> Any:
        raise ObjectNotFound(key, self.url)

    def get_range(self, key: str, offset: int, length: int) -> bytes:
        raise ObjectNotFound(key, self.url)

    def size(self, key: str) -> int:
        raise ObjectNotFound(key, self.url)

    def list(self, prefix: str) -> builtins.list[str]:
        return []

    def children(self, prefix: str) -> builtins.list[str]:
        return []

    def delete_prefix(self, prefix: str) -> int:
        return 0


class OnlineSink:
    """Uploads a run to a server in the background (one uploader thread, one heartbeat thread)."""

    def __init__(
        self,
        client: IngestClient,
        run: dict[str, Any],
        heartbeat_s: float,
        max_pending_bytes: int = DEFAULT_MAX_PENDING_BYTES,
    ) -> None:
        self.client = client
        self.run_id: str = run["id"]
        self.record = run
        self.heartbeat_s = heartbeat_s
        self.max_pending_bytes = max_pending_bytes
        self.error: str | None = None  # set when the server refused something: uploading has stopped
        self.cancel_requested = False  # someone asked the server to cancel the run (UI, CLI, API)
        self.upload_wait_seconds = 0.0
        self._queue: queue.Queue[_Op | None] = queue.Queue()
        self._pending = 0
        self._cond = threading.Condition()
        self._metrics_seq = 0
        self._stopping = threading.Event()
        self._heart_stop = threading.Event()
        self._give_up_at: float | None = None  # monotonic deadline once finish() waits for the queue
        self._uploader = threading.Thread(target=self._run, name="netlapse-uploader", daemon=True)
        self._heart = threading.Thread(target=self._beat, name="netlapse-heartbeat", daemon=True)
        self._uploader.start()
        self._heart.start()

    def tape_store(self) -> Store:
        return UploadStore(self)  # type: ignore[return-value]

    # -- producer side (training thread, capture writer thread)

    def enqueue(self, op: _Op) -> None:
        """Queue an upload; blocks while more than ``max_pending_bytes`` of segments wait (backpressure)."""
        if self.error is not None:
            return  # the server refused this run's uploads; finish() reports it
        with self._cond:
            t0 = time.perf_counter()
            while self._pending and self._pending + op.nbytes > self.max_pending_bytes and self.error is None:
                self._cond.wait(0.5)
            self.upload_wait_seconds += time.perf_counter() - t0
            self._pending += op.nbytes
        self._queue.put(op)

    def watch(self, info: dict[str, Any]) -> None:
        self.enqueue(_Op("watch", info))

    def metrics(self, rows: list[dict[str, Any]]) -> None:
        self.enqueue(_Op("metrics", (self._metrics_seq, rows)))
        self._metrics_seq += 1

    def program(self, data: bytes) -> None:
        self.enqueue(_Op("program", data, len(data)))

    def eval_part(self, part: str, data: bytes) -> None:
        self.enqueue(_Op("eval", (part, data), len(data)))

    def finish(
        self, status: str, error: str | None, summary: dict[str, Any], timeout: float
    ) -> dict[str, Any]:
        """Queue the end of the run and wait (up to ``timeout`` s) until everything before it is delivered."""
        op = _Op("finish", {"status": status, "error": error, "summary": summary})
        self._give_up_at = time.monotonic() + timeout
        self.enqueue(op)
        if not op.done.wait(timeout + 5):
            self._stopping.set()
            raise UploadFailed(
                f"run {self.run_id}: the server at {self.client.server} did not take the run's data within "
                f"{timeout:.0f} s ({self._queue.qsize()} uploads left); the steps committed so far stay readable"
            )
        if self.error is not None:
            raise UploadFailed(f"run {self.run_id}: {self.error}")
        return dict(op.payload.get("answer") or {})

    def close(self) -> None:
        self._stopping.set()
        self._heart_stop.set()
        self._queue.put(None)
        self._uploader.join(10)
        self._heart.join(self.heartbeat_s + 5)
        self.client.close()

    # -- uploader thread

    def _run(self) -> None:
        while True:
            op = self._queue.get()
            if op is None:
                return
            try:
                if self.error is None:
                    self._send(op)
            except (IngestRejected, ServerUnreachable) as exc:
                self._fail(str(exc))
            except Exception as exc:  # a bug here must not leave the training thread waiting forever
                log.exception("netlapse: uploading failed")
                self._fail(f"{type(exc).__name__}: {exc}")
            finally:
                with self._cond:
                    self._pending -= op.nbytes
                    self._cond.notify_all()
                op.done.set()

    def _should_stop(self) -> bool:
        """Stop retrying: the sink is closing, or finish() has waited as long as it was told to."""
        give_up = self._give_up_at
        return self._stopping.is_set() or (give_up is not None and time.monotonic() > give_up)

    def _fail(self, message: str) -> None:
        """Stop uploading (the server refused, or finish ran out of time) and tell the server, if it listens."""
        if self.error is not None:
            return
        self.error = message
        log.error("netlapse: run %s: uploads stopped: %s", self.run_id, message)
        with self._cond:
            self._cond.notify_all()
        try:
            body = {"status": "failed", "error": f"the SDK stopped uploading: {message}"[:4000]}
            self.client.finish(self.run_id, body, retry=False)
        except Exception:  # the run may be failed already (that is often why we are here)
            pass

    def _send(self, op: _Op) -> None:
        c, rid = self.client, self.run_id
        kw: dict[str, Any] = {"stop": self._should_stop}
        if op.kind == "object":
            key, data = op.payload
            c.put_tape_object(rid, key, data, **kw)
        elif op.kind == "metrics":
            seq, rows = op.payload
            c.metrics(rid, seq, rows, **kw)
        elif op.kind == "program":
            c.put_program(rid, op.payload, **kw)
        elif op.kind == "eval":
            part, data = op.payload
            c.put_eval(rid, part, data, **kw)
        elif op.kind == "watch":
            c.watch(rid, op.payload, **kw)
        elif op.kind == "finish":
            # No heartbeat may write the run record while the server finishes it.
            self._heart_stop.set()
            self._heart.join(60)
            op.payload["answer"] = c.finish(
                rid, {k: op.payload[k] for k in ("status", "error", "summary")}, **kw
            )

    # -- heartbeat thread

    def _beat(self) -> None:
        while not self._heart_stop.wait(self.heartbeat_s) and not self._stopping.is_set():
            try:
                out = self.client.heartbeat(self.run_id, retry=False)
            except IngestRejected as exc:  # refused, not lost: say so (the run would be given up on)
                log.warning("netlapse: heartbeat refused: %s", exc)
                continue
            except Exception as exc:  # a missed beat is fine; the server allows several
                log.debug("netlapse: heartbeat failed: %s", exc)
                continue
            if out.get("cancel_requested") and not self.cancel_requested:
                self.cancel_requested = True
                log.warning(
                    "netlapse: run %s: cancel requested; stop when convenient (run.finish('cancelled'))",
                    self.run_id,
                )
            if out.get("status") == "failed" and self.error is None:
                self._fail(f"the server marked the run failed: {out.get('error')}")


# --- offline ------------------------------------------------------------------------------------------------


class OfflineSink:
    """Writes a run into ``DIR/{run_id}/`` in the server's layout, for ``netlapse push`` or ``netlapse serve``."""

    def __init__(self, directory: str | Path, name: str, config: dict[str, Any]) -> None:
        self.dir = Path(directory).expanduser().resolve()
        self.store = RunsDirStore(self.dir)
        self.repo = RunRepository(self.store)  # type: ignore[arg-type]
        self.run_id = secrets.token_hex(6)
        while self.repo.exists(self.run_id):
            self.run_id = secrets.token_hex(6)
        self.error: str | None = None
        self.cancel_requested = False  # nobody can ask an offline run to stop
        self.upload_wait_seconds = 0.0
        now = utcnow()
        self.rec = RunRecord(
            id=self.run_id,
            name=name,
            status="running",
            source="sdk",
            sdk=SdkInfo(config=config, offline=True, host=host_name(), torch_version=torch.__version__),
            created_at=now,
            started_at=now,
            attempts=1,
        )
        self.repo.save(self.rec)
        self._metrics_seq = 0
        self.record = json.loads(self.rec.model_dump_json())

    @property
    def path(self) -> Path:
        return self.dir / self.run_id

    def tape_store(self) -> Store:
        return self.store  # type: ignore[return-value]

    def watch(self, info: dict[str, Any]) -> None:
        from netlapse.core.schemas import CaptureConfig

        self.rec.capture = CaptureConfig(every=int(info["every"]))
        self.rec.sdk = (self.rec.sdk or SdkInfo()).model_copy(
            update={k: info[k] for k in ("modules", "buffers", "torch_version", "host")}
        )
        self.repo.save(self.rec)

    def metrics(self, rows: list[dict[str, Any]]) -> None:
        put_metrics_part(self.store, self.run_id, self._metrics_seq, rows)  # type: ignore[arg-type]
        self._metrics_seq += 1

    def program(self, data: bytes) -> None:
        self.store.put(program_key(self.run_id), data)
        self.rec.sdk = (self.rec.sdk or SdkInfo()).model_copy(update={"program": True})
        self.repo.save(self.rec)

    def eval_part(self, part: str, data: bytes) -> None:
        self.store.put(EVAL_KEYS[part](self.run_id), data)
        if all(self.store.exists(k(self.run_id)) for k in EVAL_KEYS.values()):
            self.rec.sdk = (self.rec.sdk or SdkInfo()).model_copy(update={"eval_data": True})
            self.repo.save(self.rec)

    def finish(
        self, status: str, error: str | None, summary: dict[str, Any], timeout: float
    ) -> dict[str, Any]:
        tape = tape_summary(self.store, self.run_id)  # type: ignore[arg-type]
        merged = finalize_metrics(self.store, self.run_id)  # type: ignore[arg-type]
        last = merged["steps"][-1] if merged["steps"] else {}
        rec = self.rec
        rec.status, rec.error, rec.finished_at = status, error, utcnow()  # type: ignore[assignment]
        rec.tape_complete = tape["complete"]
        rec.summary = RunSummary.model_validate(summary).model_copy(
            update={k: tape[k] for k in ("steps_captured", "raw_bytes", "stored_bytes")}
        )
        loss = last.get("loss") if isinstance(last.get("loss"), int | float) else None
        acc = last.get("accuracy") if isinstance(last.get("accuracy"), int | float) else None
        if rec.summary.final_loss is None:
            rec.summary.final_loss = loss
        rec.progress = Progress(step=tape["last_step"] or 0, loss=loss, accuracy=acc, eta_seconds=0.0)
        self.repo.save(rec)
        return json.loads(rec.model_dump_json())

    def close(self) -> None:
        pass
