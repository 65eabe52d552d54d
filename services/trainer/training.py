"""The training loop of a run: every optimizer step is handed to the capture pipeline.

A run is resumable (docs/durability.md): every ``resume_interval_s`` (after a segment commit) the loop
stores a checkpoint (trainer/resume.py). A later attempt reopens the tape after its last committed step L,
restores the newest checkpoint at or before L, replays the steps up to L without capturing them (training
is deterministic, so they come out bit-identical) and captures from L + 1 on: the tape continues with no
hole and no duplicate, and the finished run equals an uninterrupted one bit for bit.

Redis is a cache here: progress publishes and the cancel fast path degrade when it is away; the run record
(renewed through the lease) carries cancels and deletion, and every store write is fenced by the lease.
"""

from __future__ import annotations

import builtins
import logging
import math
import os
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F

from netlapse.core.capture import CapturePipeline, capturable_tensors, capture_device
from netlapse.core.datasets import LoadedDataset, load_dataset
from netlapse.core.events import EventStream, EventType
from netlapse.core.metrics import MetricsLog
from netlapse.core.modelspec import build_model
from netlapse.core.queue import COMPACT_QUEUE, TASK_COMPACT
from netlapse.core.runs import RunNotFound, RunRepository
from netlapse.core.schemas import (
    CompactTask,
    Progress,
    RunRecord,
    RunSummary,
    TrainingConfig,
    tape_prefix,
    utcnow,
)
from netlapse.core.settings import Settings
from netlapse.core.store import Store
from netlapse.core.tape import TapeOptions, TapeWriter
from netlapse.trainer.resume import (
    ResumeState,
    capture_state,
    checkpoint_steps,
    restore_state,
    resume_key,
    resume_prefix,
)
from netlapse.trainer.scheduler import LeaseLost, RunLease

log = logging.getLogger(__name__)
PROGRESS_INTERVAL_S = 0.05  # at most ~20 progress events a second; every step still lands in metrics
METRICS_FLUSH_S = 5.0  # one appended metrics part at most this often
REDIS_BACKOFF_S = (0.5, 10.0)  # after a Redis error, skip it this long (doubling up to the maximum)


def make_optimizer(params: Any, cfg: TrainingConfig) -> torch.optim.Optimizer:
    """The optimizer a run asked for, with exactly its hyper-parameters."""
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(
            params, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.nesterov, weight_decay=cfg.weight_decay
        )
    if cfg.optimizer == "adam":
        return torch.optim.Adam(params, lr=cfg.lr, betas=cfg.betas, weight_decay=cfg.weight_decay)
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=cfg.lr, betas=cfg.betas, weight_decay=cfg.weight_decay)
    if cfg.optimizer == "rmsprop":
        return torch.optim.RMSprop(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    if cfg.optimizer == "adadelta":
        return torch.optim.Adadelta(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    raise ValueError(f"unknown optimizer {cfg.optimizer!r}")


def resolve_device(requested: str) -> torch.device:
    """``training.device``: "auto" = CUDA when this worker has it, else CPU; "cuda" without CUDA is an error."""
    if requested == "cpu":
        return torch.device("cpu")
    if requested == "cuda" or (requested == "auto" and torch.cuda.is_available()):
        if not torch.cuda.is_available():
            raise RuntimeError("this run asks for training.device 'cuda' but this trainer has no CUDA device")
        return torch.device("cuda")
    return torch.device("cpu")


def capture_threads(settings: Settings, model: torch.nn.Module) -> int:
    """Encoder threads for a run: the setting, else one on CPU (training needs the cores) and up to 8 on CUDA."""
    if settings.capture_threads:
        return settings.capture_threads
    on_cuda = any(p.is_cuda for p in model.parameters())
    return min(8, os.cpu_count() or 1) if on_cuda else 1


def task_app() -> Any:
    """The Celery app of the task running on this thread (None outside a Celery task: tests, scripts)."""
    from celery import current_task

    if not current_task or getattr(current_task.request, "id", None) is None:
        return None
    return current_task.app


def request_compaction(run_id: str, app: Any = None) -> bool:
    """Send the compaction task by name to the ``compact`` queue (services never import each other).

    ``app``: the Celery app to send with (default: the current task's); without one it does nothing."""
    app = app or task_app()
    if app is None:
        return False
    try:
        app.send_task(
            TASK_COMPACT,
            args=[CompactTask(run_id=run_id).model_dump()],
            queue=COMPACT_QUEUE,
            retry_policy={"max_retries": 1, "interval_start": 0, "interval_step": 0.5},
        )
    except Exception:  # compaction is an optimisation; the run itself is fine without it
        log.warning("could not send the compaction task for run %s", run_id, exc_info=True)
        return False
    return True


def steps_per_epoch(n_train: int, batch_size: int) -> int:
    return math.ceil(n_train / batch_size)


def captured_steps_upto(last: int, every: int, total: int) -> int:
    """How many steps in 0..last a run captures (0, every multiple of ``every``, and the last step)."""
    return 1 + last // every + (1 if last == total and total % every else 0)


@torch.no_grad()
def evaluate(
    model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, batch: int = 1000
) -> tuple[float, float]:
    """Mean loss and accuracy on a split, in eval mode."""
    model.eval()
    loss_sum, correct = 0.0, 0
    for i in range(0, len(x), batch):
        out = model(x[i : i + batch])
        loss_sum += float(F.cross_entropy(out, y[i : i + batch], reduction="sum"))
        correct += int((out.argmax(1) == y[i : i + batch]).sum())
    model.train()
    return loss_sum / max(1, len(x)), correct / max(1, len(x))


class RedisCache:
    """The trainer's view of Redis: publishes and cancel checks that never fail the run.

    After an error Redis is skipped for a short, growing while (so a dead Redis costs no time per step);
    progress events are snapshots, so the first one after Redis returns catches up."""

    def __init__(self, events: EventStream | None) -> None:
        self.events = events
        self._skip_until = 0.0
        self._backoff = REDIS_BACKOFF_S[0]
        self.errors = 0

    def _ok(self) -> bool:
        return self.events is not None and time.monotonic() >= self._skip_until

    def _failed(self, what: str) -> None:
        self.errors += 1
        if self.errors == 1 or self.errors % 100 == 0:
            log.warning(
                "redis unavailable (%s); the run goes on, the store keeps the truth", what, exc_info=True
            )
        self._skip_until = time.monotonic() + self._backoff
        self._backoff = min(self._backoff * 2, REDIS_BACKOFF_S[1])

    def publish(self, run_id: str, type_: EventType, data: dict[str, Any], wait_s: float = 0.0) -> bool:
        """Publish an event; ``wait_s`` > 0 retries that long (for the final status)."""
        deadline = time.monotonic() + wait_s
        while True:
            if self._ok():
                try:
                    assert self.events is not None
                    self.events.publish(run_id, type_, data)
                    self._backoff = REDIS_BACKOFF_S[0]
                    return True
                except Exception:
                    self._failed(f"publish {type_}")
            if time.monotonic() >= deadline or self.events is None:
                return False
            self._skip_until = 0.0
            time.sleep(0.5)

    def cancel_requested(self, run_id: str) -> bool:
        if not self._ok():
            return False
        try:
            assert self.events is not None
            return self.events.cancel_requested(run_id)
        except Exception:
            self._failed("cancel check")
            return False


class FencedStore:
    """The run's store as the trainer sees it: every write first checks that this trainer still holds the
    run's lease, so a trainer that stalled past it (or whose run was deleted) never writes again."""

    def __init__(self, store: Store, lease: RunLease | None) -> None:
        self.inner, self.lease = store, lease
        self.url = store.url

    def _fence(self) -> None:
        if self.lease is not None:
            self.lease.check()

    def put(self, key: str, data: bytes) -> None:
        self._fence()
        self.inner.put(key, data)

    def put_json(self, key: str, obj: Any) -> None:
        self._fence()
        self.inner.put_json(key, obj)

    def drop_cached(self, key: str) -> None:
        drop = getattr(self.inner, "drop_cached", None)
        if drop is not None:
            drop(key)

    def put_if(self, key: str, data: bytes, etag: str | None) -> str:
        self._fence()
        return self.inner.put_if(key, data, etag)

    def delete_prefix(self, prefix: str) -> int:
        self._fence()
        return self.inner.delete_prefix(prefix)

    def get(self, key: str) -> bytes:
        return self.inner.get(key)

    def get_versioned(self, key: str) -> tuple[bytes, str]:
        return self.inner.get_versioned(key)

    def get_range(self, key: str, offset: int, length: int) -> bytes:
        return self.inner.get_range(key, offset, length)

    def get_json(self, key: str) -> Any:
        return self.inner.get_json(key)

    def exists(self, key: str) -> bool:
        return self.inner.exists(key)

    def size(self, key: str) -> int:
        return self.inner.size(key)

    def list(self, prefix: str) -> list[str]:
        return self.inner.list(prefix)

    def children(self, prefix: str) -> builtins.list[str]:
        return self.inner.children(prefix)


@dataclass
class CheckpointStats:
    """What resume checkpoints cost this attempt (reported in the run summary's logs and the bench)."""

    count: int = 0
    bytes: int = 0
    copy_seconds: float = 0.0  # on the training thread
    store_seconds: float = 0.0  # encode + upload, on the checkpoint thread


@dataclass
class Outcome:
    """How an attempt ended, applied to the record with one compare-and-set write."""

    status: str
    progress: Progress
    summary: RunSummary
    tape_complete: bool
    error: str | None = None
    checkpoints: CheckpointStats = field(default_factory=CheckpointStats)
    resumed_from: int | None = None


class Trainer:
    """Trains one run (or resumes it), writing its tape, metrics and checkpoints, publishing its events."""

    def __init__(
        self,
        rec: RunRecord,
        settings: Settings,
        store: Store,
        events: RedisCache,
        lease: RunLease | None = None,
    ) -> None:
        self.rec, self.settings, self.store, self.events, self.lease = rec, settings, store, events, lease
        self.metrics = MetricsLog(store, rec.id, rec.attempts)
        self.epoch_metrics: list[dict[str, Any]] = []
        self.last_row: dict[str, Any] = {}
        self.progress = Progress()
        self.resumed_from: int | None = None
        self.committed_step: int | None = None
        self.ck = CheckpointStats()
        self._ck_pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="netlapse-checkpoint")
        self._ck_future: Future[None] | None = None
        self._ck_committed = False
        self._ck_last = time.monotonic()
        self._celery = task_app()  # captured here: Celery's current task is per thread
        self._side_future: Future[bool] | None = None
        self._send_pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="netlapse-send")

    def publish(self, type_: EventType, data: dict[str, Any]) -> None:
        self.events.publish(self.rec.id, type_, data)

    def _side_send(self, run_id: str) -> None:
        """Ask for a compaction off the training thread (a broker that is away must not stall training)."""
        if self._celery is not None and (self._side_future is None or self._side_future.done()):
            self._side_future = self._send_pool.submit(request_compaction, run_id, self._celery)

    # -- checkpoints

    def _on_commit(self, s: int) -> None:
        self.committed_step = s
        self._ck_committed = True
        self.publish("snapshot", {"step": s})

    def _checkpoint_due(self) -> bool:
        return (
            self._ck_committed
            and time.monotonic() - self._ck_last >= self.settings.resume_interval_s
            and (self._ck_future is None or self._ck_future.done())
        )

    def _checkpoint(self, state_args: dict[str, Any]) -> None:
        if self._ck_future is not None:
            self._ck_future.result()  # a failed upload surfaces here (e.g. the lease was lost)
        self.metrics.flush()  # the rows up to this step are stored before the checkpoint that relies on them
        t0 = time.perf_counter()
        state = capture_state(**state_args, epoch_metrics=list(self.epoch_metrics))
        self.ck.copy_seconds += time.perf_counter() - t0
        self._ck_committed, self._ck_last = False, time.monotonic()
        self._ck_future = self._ck_pool.submit(self._store_checkpoint, state)

    def _store_checkpoint(self, state: ResumeState) -> None:
        t0 = time.perf_counter()
        data = state.encode()
        self.store.put(resume_key(self.rec.id, state.step), data)
        self.ck.count += 1
        self.ck.bytes += len(data)
        # Older checkpoints are dead once a newer one lies at or before the committed tape.
        committed = self.committed_step if self.committed_step is not None else -1
        steps = checkpoint_steps(self.store, self.rec.id)
        usable = [s for s in steps if s <= committed]
        for s in steps:
            if usable and s < usable[-1]:
                self.store.delete_prefix(resume_key(self.rec.id, s))
        self.ck.store_seconds += time.perf_counter() - t0

    def _load_checkpoint(self, last_committed: int | None) -> ResumeState | None:
        if last_committed is None:
            return None
        usable = [s for s in checkpoint_steps(self.store, self.rec.id) if s <= last_committed]
        if not usable:
            return None
        return ResumeState.decode(self.store.get(resume_key(self.rec.id, usable[-1])))

    # -- the loop

    def _check_stop(self) -> bool:
        """True when the run should stop as cancelled; raises LeaseLost when it must stop writing at once."""
        if self.lease is not None:
            self.lease.check()
            if self.lease.cancelled:
                return True
        return self.events.cancel_requested(self.rec.id)

    def run(self) -> Outcome:
        rec = self.rec
        cfg = rec.training_config()
        device = resolve_device(cfg.device)
        data: LoadedDataset = load_dataset(rec.dataset_name(), self.settings)
        train_x, train_y = data.train_x, data.train_y
        if cfg.max_train_samples:
            train_x, train_y = train_x[: cfg.max_train_samples], train_y[: cfg.max_train_samples]
        test_x, test_y = data.test_x, data.test_y
        if device.type != "cpu":
            train_x, train_y = train_x.to(device), train_y.to(device)
            test_x, test_y = test_x.to(device), test_y.to(device)
        torch.manual_seed(cfg.seed)
        model = build_model(rec.layer_spec()).to(device)
        model.train()
        opt = make_optimizer(model.parameters(), cfg)
        gen = torch.Generator().manual_seed(cfg.seed)  # data order, on the CPU whatever the device
        per_epoch = steps_per_epoch(len(train_x), cfg.batch_size)
        total = cfg.epochs * per_epoch

        # On a GPU the snapshot stays there: the lane transforms run on the device ("auto" = torch on CUDA).
        options = TapeOptions.from_settings(
            self.settings,
            rec.capture,
            threads=capture_threads(self.settings, model),
            device=capture_device(model),
        )
        # resume=True: a new run starts an empty tape; an interrupted one continues after its last commit.
        writer = TapeWriter(
            self.store,
            tape_prefix(rec.id),
            capturable_tensors(model),
            options,
            on_commit=self._on_commit,
            resume=True,
        )
        captured_upto = writer.last_committed_step  # steps <= this are on the tape already
        self.committed_step = captured_upto
        step, start_epoch, start_batch = 0, 1, 0
        perm: torch.Tensor | None = None
        ck = self._load_checkpoint(captured_upto)
        if ck is not None:
            perm = restore_state(ck, model, opt, gen)
            step, start_epoch, start_batch = ck.step, ck.epoch, ck.batch
            self.epoch_metrics = list(ck.meta["epoch_metrics"])
        if captured_upto is not None:
            self.resumed_from = step
            log.info(
                "run %s attempt %d: tape committed up to step %d; resuming from step %d (replaying %d steps)",
                rec.id,
                rec.attempts,
                captured_upto,
                step,
                captured_upto - step,
            )
        capture = CapturePipeline(
            model,
            writer,
            buffers=self.settings.capture_buffers,
            nice=self.settings.capture_nice,
            mode=self.settings.capture_mode,
        )
        compact_every = self.settings.compact_during_run_steps
        compacted_upto = captured_upto or 0
        last_captured = captured_upto if captured_upto is not None else -1
        if captured_upto is None:
            capture.capture(0)
            last_captured = 0
        t0 = time.perf_counter()
        last_pub, last_flush = 0.0, time.monotonic()
        cancelled = False
        self.progress = Progress(step=step, total_steps=total, epoch=start_epoch, epochs=cfg.epochs)
        try:
            for epoch in range(start_epoch, cfg.epochs + 1):
                if perm is not None and epoch == start_epoch:
                    b0 = start_batch  # the checkpoint's epoch: its permutation, from its batch on
                else:
                    perm, b0 = torch.randperm(len(train_x), generator=gen), 0
                for b in range(b0, per_epoch):
                    if self._checkpoint_due():
                        self._checkpoint(
                            {
                                "model": model,
                                "opt": opt,
                                "gen": gen,
                                "step": step,
                                "epoch": epoch,
                                "batch": b,
                                "perm": perm,
                            }
                        )
                    idx = perm[b * cfg.batch_size : (b + 1) * cfg.batch_size]
                    if device.type != "cpu":
                        idx = idx.to(device)
                    xb, yb = train_x[idx], train_y[idx]
                    out = model(xb)
                    loss = F.cross_entropy(out, yb)
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                    opt.step()
                    step += 1
                    if step > last_captured and (step % rec.capture.every == 0 or step == total):
                        capture.capture(step)
                        last_captured = step
                    if compact_every and (self.committed_step or 0) - compacted_upto >= compact_every:
                        compacted_upto = self.committed_step or 0
                        self._side_send(rec.id)  # closed segments only; the compactor takes a run lock
                    loss_v = float(loss.detach())
                    acc = float((out.detach().argmax(1) == yb).float().mean())
                    self.last_row = {"step": step, "epoch": epoch, "loss": loss_v, "accuracy": acc}
                    self.metrics.add_step(self.last_row)
                    now = time.perf_counter()
                    if now - last_pub >= PROGRESS_INTERVAL_S or step == total:
                        last_pub = now
                        done = step - (self.resumed_from or 0)
                        eta = (now - t0) / max(1, done) * (total - step)
                        self.progress = Progress(
                            step=step,
                            total_steps=total,
                            epoch=epoch,
                            epochs=cfg.epochs,
                            loss=loss_v,
                            accuracy=acc,
                            eta_seconds=round(eta, 3),
                        )
                        self.publish("progress", self.progress.model_dump())
                        if time.monotonic() - last_flush >= METRICS_FLUSH_S:
                            self.metrics.flush()
                            last_flush = time.monotonic()
                        if self._check_stop():
                            cancelled = True
                            break
                if cancelled:
                    break
                val_loss, val_acc = evaluate(model, test_x, test_y)
                ep = {"epoch": epoch, "step": step, "val_loss": val_loss, "val_accuracy": val_acc}
                self.epoch_metrics.append(ep)
                self.metrics.add_epoch(ep)
                self.publish("epoch", ep)
            if last_captured < step:
                capture.capture(step)  # the last step is always captured, also when cancelled
            stats = capture.close(complete=True)
            if self._ck_future is not None:
                self._ck_future.result()
        except BaseException:
            try:
                capture.close(complete=False)
            except Exception:  # the original error matters more than a second one while cleaning up
                log.exception("capture close after failure")
            raise
        finally:
            self._ck_pool.shutdown(wait=True)
            self._send_pool.shutdown(wait=False)  # a send stuck on a broker that is away is not waited for
        train_s = time.perf_counter() - t0
        merged = self.metrics.finalize()
        if self.store.list(resume_prefix(rec.id)):
            self.store.delete_prefix(resume_prefix(rec.id))  # the run is over: nothing left to resume
        last = merged["steps"][-1] if merged["steps"] else self.last_row
        progress = Progress(
            step=step,
            total_steps=total,
            epoch=int(last.get("epoch") or 0),
            epochs=cfg.epochs,
            loss=last.get("loss"),
            accuracy=last.get("accuracy"),
            eta_seconds=0.0,
        )
        s = rec.summary.model_copy()
        s.train_seconds, s.capture_wait_seconds = round(train_s, 4), round(stats.wait_seconds, 4)
        s.capture_copy_seconds = round(stats.copy_seconds, 4)
        before = 0 if captured_upto is None else captured_steps_upto(captured_upto, rec.capture.every, total)
        s.raw_bytes, s.stored_bytes, s.steps_captured = (
            stats.raw_bytes,
            stats.stored_bytes,
            before + stats.steps,
        )
        s.final_loss = last.get("loss")
        epochs = merged["epochs"]
        if epochs:
            s.val_loss, s.val_accuracy = epochs[-1]["val_loss"], epochs[-1]["val_accuracy"]
        return Outcome(
            status="cancelled" if cancelled else "succeeded",
            progress=progress,
            summary=s,
            tape_complete=True,
            checkpoints=self.ck,
            resumed_from=self.resumed_from,
        )


def finish_run(repo: RunRepository, run_id: str, owner: str, outcome: Outcome) -> RunRecord | None:
    """Write an attempt's end into the record, compare-and-set; None when this trainer no longer holds it.

    A cancel that reached the record before this write wins over "succeeded" (the user was told it would
    stop); the tape stays complete either way."""

    written = False

    def change(cur: RunRecord) -> bool:
        nonlocal written
        written = cur.lease_owner == owner and cur.status == "running"
        if not written:
            return False
        cur.status = outcome.status  # type: ignore[assignment]
        if outcome.status == "succeeded" and cur.cancel_requested:
            cur.status = "cancelled"
        cur.progress, cur.summary, cur.tape_complete = (
            outcome.progress,
            outcome.summary,
            outcome.tape_complete,
        )
        cur.error, cur.finished_at = outcome.error, utcnow()
        cur.resumed_from = outcome.resumed_from
        cur.lease_owner, cur.lease_until = None, None
        return True

    rec = repo.update(run_id, change)
    return rec if written else None


def execute_run(
    rec: RunRecord, owner: str, settings: Settings, store: Store, events: EventStream | None
) -> RunRecord:
    """Train a run this trainer has claimed (``rec.lease_owner == owner``) to a terminal status.

    Exceptions become ``failed`` with a readable error; a deletion stops the run and removes what it wrote
    after the delete; a lost lease stops it without another write (its new holder carries on)."""
    repo = RunRepository(store)
    cache = RedisCache(events)
    lease = RunLease(repo, rec.id, owner, settings.run_lease_s)
    trainer = Trainer(rec, settings, FencedStore(store, lease), cache, lease)
    lease.progress = lambda: trainer.progress
    lease.start()
    cache.publish(rec.id, "status", {"status": "running", "error": None, "attempt": rec.attempts})
    try:
        outcome = trainer.run()
    except Exception as exc:
        if lease.deleted or lease.lost or isinstance(exc, LeaseLost):
            lease.stop()
            return _stopped(rec, lease, store, cache)
        log.exception("run %s failed", rec.id)
        try:
            trainer.metrics.flush()
        except Exception:  # the run's error is the one to report
            log.warning("could not store the last metrics of run %s", rec.id, exc_info=True)
        outcome = Outcome(
            status="failed",
            progress=trainer.progress,
            summary=rec.summary,
            tape_complete=False,
            error=f"{type(exc).__name__}: {exc}",
            resumed_from=trainer.resumed_from,
        )
    finally:
        lease.stop()
    if trainer.ck.count:
        log.info(
            "run %s: %d resume checkpoints, %d bytes, %.3f s copying on the training thread, %.3f s storing",
            rec.id,
            trainer.ck.count,
            trainer.ck.bytes,
            trainer.ck.copy_seconds,
            trainer.ck.store_seconds,
        )
    try:
        final = finish_run(repo, rec.id, owner, outcome)
    except RunNotFound:
        lease.deleted = True
        return _stopped(rec, lease, store, cache)
    if final is None:
        lease.lost = True
        return _stopped(rec, lease, store, cache)
    cache.publish(
        rec.id,
        "status",
        {"status": final.status, "error": final.error, "summary": final.summary.model_dump()},
        wait_s=10.0,
    )
    if final.tape_complete and settings.compact_after_run:
        request_compaction(rec.id)
    return final


def _stopped(rec: RunRecord, lease: RunLease, store: Store, cache: RedisCache) -> RunRecord:
    """The run was deleted (remove what this attempt wrote after the delete) or taken over (write nothing)."""
    if lease.deleted:
        log.warning("run %s was deleted while it trained: stopped, its leftovers removed", rec.id)
        store.delete_prefix(f"runs/{rec.id}/")
        if cache.events is not None:
            try:
                cache.events.delete(rec.id)
            except Exception:  # a cache entry expires anyway
                log.warning("could not drop the events of deleted run %s", rec.id, exc_info=True)
    else:
        log.warning(
            "run %s: this trainer lost its lease; another trainer carries on, nothing more written", rec.id
        )
    return rec
