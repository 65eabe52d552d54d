"""The training loop of a run: every optimizer step is handed to the capture pipeline."""

from __future__ import annotations

import logging
import math
import os
import time
from typing import Any

import torch
import torch.nn.functional as F

from netlapse.core.capture import CapturePipeline, capturable_tensors
from netlapse.core.datasets import LoadedDataset, load_dataset
from netlapse.core.events import EventStream
from netlapse.core.modelspec import build_model
from netlapse.core.queue import ANALYZE_QUEUE, TASK_COMPACT
from netlapse.core.runs import RunRepository
from netlapse.core.schemas import CompactTask, RunRecord, TrainingConfig, metrics_key, tape_prefix, utcnow
from netlapse.core.settings import Settings
from netlapse.core.store import Store
from netlapse.core.tape import TapeOptions, TapeWriter

log = logging.getLogger(__name__)
PROGRESS_INTERVAL_S = 0.05  # at most ~20 progress events a second; every step still lands in metrics


class RunCancelled(Exception):
    pass


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


def capture_threads(settings: Settings, model: torch.nn.Module) -> int:
    """Encoder threads for a run: the setting, else one on CPU (training needs the cores) and up to 8 on CUDA."""
    if settings.capture_threads:
        return settings.capture_threads
    on_cuda = any(p.is_cuda for p in model.parameters())
    return min(8, os.cpu_count() or 1) if on_cuda else 1


def request_compaction(run_id: str) -> bool:
    """Send the analyzer's compaction task by name (services never import each other).

    Only from inside a Celery task, whose app knows the broker; elsewhere (tests, scripts) it does nothing."""
    from celery import current_task

    if not current_task or getattr(current_task.request, "id", None) is None:
        return False
    try:
        current_task.app.send_task(
            TASK_COMPACT, args=[CompactTask(run_id=run_id).model_dump()], queue=ANALYZE_QUEUE
        )
    except Exception:  # compaction is an optimisation; the run itself is fine without it
        log.warning("could not send the compaction task for run %s", run_id, exc_info=True)
        return False
    return True


def steps_per_epoch(n_train: int, batch_size: int) -> int:
    return math.ceil(n_train / batch_size)


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


class Trainer:
    """Trains one run, writing its tape, metrics and record, publishing its events."""

    def __init__(self, rec: RunRecord, settings: Settings, store: Store, events: EventStream) -> None:
        self.rec, self.settings, self.store, self.events = rec, settings, store, events
        self.repo = RunRepository(store)
        self.step_metrics: list[dict[str, Any]] = []
        self.epoch_metrics: list[dict[str, Any]] = []
        self._last_metrics_save = 0.0

    def publish(self, type_: str, data: dict[str, Any]) -> None:
        self.events.publish(self.rec.id, type_, data)  # type: ignore[arg-type]

    def save_metrics(self, force: bool = False) -> None:
        now = time.monotonic()
        if force or now - self._last_metrics_save > 2.0:
            self.store.put_json(
                metrics_key(self.rec.id), {"steps": self.step_metrics, "epochs": self.epoch_metrics}
            )
            self._last_metrics_save = now

    def run(self) -> RunRecord:
        rec, cfg = self.rec, self.rec.training
        data: LoadedDataset = load_dataset(rec.dataset, self.settings)
        train_x, train_y = data.train_x, data.train_y
        if cfg.max_train_samples:
            train_x, train_y = train_x[: cfg.max_train_samples], train_y[: cfg.max_train_samples]
        torch.manual_seed(cfg.seed)
        model = build_model(rec.model)
        model.train()
        opt = make_optimizer(model.parameters(), cfg)
        per_epoch = steps_per_epoch(len(train_x), cfg.batch_size)
        total = cfg.epochs * per_epoch
        rec.progress.total_steps, rec.progress.epochs = total, cfg.epochs
        self.repo.save(rec)

        committed = [0]

        def on_commit(s: int) -> None:
            committed[0] = s
            self.publish("snapshot", {"step": s})

        options = TapeOptions.from_settings(
            self.settings, rec.capture, threads=capture_threads(self.settings, model)
        )
        writer = TapeWriter(
            self.store, tape_prefix(rec.id), capturable_tensors(model), options, on_commit=on_commit
        )
        capture = CapturePipeline(
            model, writer, buffers=self.settings.capture_buffers, nice=self.settings.capture_nice
        )
        compact_every = self.settings.compact_during_run_steps
        compacted_upto = 0
        gen = torch.Generator().manual_seed(cfg.seed)
        step, last_captured = 0, 0
        capture.capture(0)
        t0 = time.perf_counter()
        last_pub = 0.0
        cancelled = False
        try:
            for epoch in range(1, cfg.epochs + 1):
                perm = torch.randperm(len(train_x), generator=gen)
                for b in range(per_epoch):
                    idx = perm[b * cfg.batch_size : (b + 1) * cfg.batch_size]
                    xb, yb = train_x[idx], train_y[idx]
                    out = model(xb)
                    loss = F.cross_entropy(out, yb)
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                    opt.step()
                    step += 1
                    if step % rec.capture.every == 0 or step == total:
                        capture.capture(step)
                        last_captured = step
                    if compact_every and committed[0] - compacted_upto >= compact_every:
                        compacted_upto = committed[0]
                        request_compaction(rec.id)  # closed segments only; the analyzer takes a run lock
                    loss_v = float(loss.detach())
                    acc = float((out.detach().argmax(1) == yb).float().mean())
                    self.step_metrics.append({"step": step, "epoch": epoch, "loss": loss_v, "accuracy": acc})
                    now = time.perf_counter()
                    if now - last_pub >= PROGRESS_INTERVAL_S or step == total:
                        last_pub = now
                        elapsed = now - t0
                        eta = elapsed / step * (total - step)
                        self.publish(
                            "progress",
                            {
                                "step": step,
                                "total_steps": total,
                                "epoch": epoch,
                                "epochs": cfg.epochs,
                                "loss": loss_v,
                                "accuracy": acc,
                                "eta_seconds": round(eta, 3),
                            },
                        )
                        self.save_metrics()
                        if self.events.cancel_requested(rec.id):
                            cancelled = True
                            break
                if cancelled:
                    break
                val_loss, val_acc = evaluate(model, data.test_x, data.test_y)
                ep = {"epoch": epoch, "step": step, "val_loss": val_loss, "val_accuracy": val_acc}
                self.epoch_metrics.append(ep)
                self.publish("epoch", ep)
            if last_captured != step:
                capture.capture(step)  # the last step is always captured, also when cancelled
            stats = capture.close(complete=True)
        except BaseException:
            try:
                capture.close(complete=False)
            except Exception:  # the original error matters more than a second one while cleaning up
                log.exception("capture close after failure")
            raise
        train_s = time.perf_counter() - t0
        self.save_metrics(force=True)
        last = self.step_metrics[-1] if self.step_metrics else {}
        rec.progress.step, rec.progress.epoch = step, (last.get("epoch") or 0)
        rec.progress.loss, rec.progress.accuracy, rec.progress.eta_seconds = (
            last.get("loss"),
            last.get("accuracy"),
            0.0,
        )
        s = rec.summary
        s.train_seconds, s.capture_wait_seconds = round(train_s, 4), round(stats.wait_seconds, 4)
        s.capture_copy_seconds = round(stats.copy_seconds, 4)
        s.raw_bytes, s.stored_bytes, s.steps_captured = stats.raw_bytes, stats.stored_bytes, stats.steps
        s.final_loss = last.get("loss")
        if self.epoch_metrics:
            s.val_loss, s.val_accuracy = (
                self.epoch_metrics[-1]["val_loss"],
                self.epoch_metrics[-1]["val_accuracy"],
            )
        rec.tape_complete = True
        rec.status = "cancelled" if cancelled else "succeeded"
        rec.finished_at = utcnow()
        return rec


def execute_run(run_id: str, settings: Settings, store: Store, events: EventStream) -> RunRecord:
    """Run a queued run to a terminal status; the record always ends terminal, with a readable error on failure."""
    repo = RunRepository(store)
    rec = repo.get(run_id)
    if rec.status in ("succeeded", "failed", "cancelled"):
        return rec
    if rec.status == "running":
        # A redelivered task: the previous attempt died mid-run. Its tape is partial, so the run cannot succeed.
        rec.status, rec.finished_at = "failed", utcnow()
        rec.error = (
            f"the trainer stopped during attempt {rec.attempts} (worker lost); "
            "the tape up to the last committed segment is kept"
        )
        repo.save(rec)
        events.publish(run_id, "status", {"status": rec.status, "error": rec.error})
        return rec
    if events.cancel_requested(run_id):
        rec.status, rec.finished_at = "cancelled", utcnow()
        repo.save(rec)
        events.publish(run_id, "status", {"status": rec.status, "error": None})
        return rec
    rec.status, rec.started_at, rec.attempts = "running", utcnow(), rec.attempts + 1
    repo.save(rec)
    events.publish(run_id, "status", {"status": "running", "error": None})
    trainer = Trainer(rec, settings, store, events)
    try:
        rec = trainer.run()
    except Exception as exc:
        log.exception("run %s failed", run_id)
        rec.status, rec.finished_at = "failed", utcnow()
        rec.error = f"{type(exc).__name__}: {exc}"
        trainer.save_metrics(force=True)
    repo.save(rec)
    events.publish(
        run_id, "status", {"status": rec.status, "error": rec.error, "summary": rec.summary.model_dump()}
    )
    if rec.tape_complete and settings.compact_after_run:
        request_compaction(run_id)
    return rec
