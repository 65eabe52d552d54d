"""``netlapse.init / Run.watch / Run.log / Run.finish``: record any PyTorch training loop (docs/sdk.md).

``watch`` snapshots the model at once (step 0) and then after every real optimizer step, from a hook
registered with ``optimizer.register_step_post_hook``: a step the optimizer skips (AMP's GradScaler on
inf/NaN gradients does not call ``optimizer.step()``) is no snapshot, and gradient accumulation gives one
snapshot per real step. Snapshots go through the trainer's own capture pipeline (netlapse.core.capture:
pooled flat buffers, a bounded queue, backpressure) and tape encoder (netlapse.core.tape), encoded in this
process on a background thread.
"""

from __future__ import annotations

import atexit
import io
import logging
import math
import os
import sys
import threading
import time
import weakref
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType
from typing import Any

import numpy as np
import torch

from netlapse.core.capture import CapturePipeline, CaptureStats, capturable_tensors, capture_device
from netlapse.core.schemas import tape_prefix
from netlapse.core.tape import TapeOptions, TapeWriter
from netlapse.sdk.sink import OfflineSink, OnlineSink, UploadFailed, host_name
from netlapse.sdk.transport import IngestClient, ServerUnreachable, server_url

log = logging.getLogger("netlapse.sdk")

MAX_EVAL_BYTES = 64 * 1024 * 1024
METRICS_FLUSH_S = 1.0
METRICS_FLUSH_ROWS = 1000
DEFAULT_FINISH_TIMEOUT_S = 600.0


class NotWatching(RuntimeError):
    """A call that needs ``run.watch(model, optimizer)`` first."""


def init(
    name: str = "run",
    config: Mapping[str, Any] | None = None,
    server: str | None = None,
    token: str | None = None,
    dir: str | os.PathLike[str] | None = None,
) -> Run:
    """Start recording a run.

    Online (default): the run is created on ``server`` (default ``$NETLAPSE_URL``) with ``token`` (default
    ``$NETLAPSE_TOKEN``); ``run.id`` is the server's id. If the server cannot be reached the call raises
    :class:`ServerUnreachable` — no data is ever silently kept back — so record offline on purpose instead.

    Offline (``dir=``): no server is needed; the run is written to ``dir/<run id>/`` in the server's layout,
    for ``netlapse push dir/<run id> --server URL`` later or ``netlapse serve dir``."""
    cfg = _json_config(config)
    _install_exit_hooks()
    if dir is not None:
        sink: OnlineSink | OfflineSink = OfflineSink(dir, name, cfg)
        run = Run(sink, name)
        print(f"netlapse: recording run {run.id} offline in {sink.path}", file=sys.stderr)
        return run
    url = server_url(server)
    if url is None:
        raise ValueError(
            "netlapse.init needs a server: pass server='http://host:8000' or set NETLAPSE_URL "
            "(or record offline with dir='./netlapse-runs')"
        )
    client = IngestClient(url, token)
    try:
        out = client.create_run({"name": name, "config": cfg}, retry=False)
    except ServerUnreachable as exc:
        client.close()
        raise ServerUnreachable(
            f"{exc}. Start the server (`make run` / `netlapse up`), point NETLAPSE_URL at it, or record "
            "offline with netlapse.init(dir='./netlapse-runs') and `netlapse push` later"
        ) from None
    except Exception:
        client.close()
        raise
    sink = OnlineSink(client, out["run"], heartbeat_s=float(out["heartbeat_s"]))
    run = Run(sink, name)
    print(f"netlapse: recording run {run.id} at {client.server}/#/runs/{run.id}", file=sys.stderr)
    return run


def _json_config(config: Mapping[str, Any] | None) -> dict[str, Any]:
    """The config as plain JSON (numbers, strings, lists, dicts); anything else is stored as its str()."""
    import json

    def plain(v: Any) -> Any:
        if isinstance(v, Mapping):
            return {str(k): plain(x) for k, x in v.items()}
        if isinstance(v, list | tuple):
            return [plain(x) for x in v]
        if isinstance(v, bool | int | str) or v is None:
            return v
        if isinstance(v, float):
            return v if math.isfinite(v) else str(v)
        if isinstance(v, np.generic):
            return plain(v.item())
        return str(v)

    out = plain(dict(config or {}))
    json.dumps(out)
    return out


def _number(key: str, v: Any) -> float | int | bool | None:
    if isinstance(v, torch.Tensor):
        if v.numel() != 1:
            raise TypeError(f"run.log: {key!r} is a tensor of {v.numel()} elements; log a number")
        v = v.item()
    if isinstance(v, np.generic):
        v = v.item()
    if isinstance(v, bool | int):
        return v
    if isinstance(v, float):
        return v if math.isfinite(v) else None  # JSON has no NaN/inf; the gap shows in the chart
    raise TypeError(f"run.log: {key!r} is a {type(v).__name__}; netlapse logs numbers")


class Run:
    """One recorded run: ``watch`` a model, ``log`` metrics, ``finish``. Also a context manager: the block
    raising marks the run ``failed`` with the exception's text."""

    def __init__(self, sink: OnlineSink | OfflineSink, name: str) -> None:
        self.sink = sink
        self.name = name
        self.id: str = sink.run_id
        self.step = 0  # optimizer steps taken since watch()
        self.finished = False
        self.status: str = "running"
        self.stats: CaptureStats | None = None
        self._pipe: CapturePipeline | None = None
        self._hook: Any = None
        self._every = 1
        self._last_captured: int | None = None
        self._row: dict[str, Any] | None = None
        self._rows: list[dict[str, Any]] = []
        self._last_flush = 0.0
        self._lock = threading.RLock()
        _live_runs.add(self)

    @property
    def cancel_requested(self) -> bool:
        """Someone asked the server to cancel this run (UI, ``netlapse runs cancel``, the API). The SDK cannot
        stop your loop; check this, then ``run.finish(status="cancelled")``. Seen within one heartbeat."""
        return bool(self.sink.cancel_requested)

    @property
    def offline(self) -> bool:
        return isinstance(self.sink, OfflineSink)

    @property
    def path(self) -> Path | None:
        """Offline: the run's directory (what ``netlapse push`` takes)."""
        return self.sink.path if isinstance(self.sink, OfflineSink) else None

    # -- watching

    def watch(
        self,
        model: torch.nn.Module,
        optimizer: torch.optim.Optimizer,
        every: int = 1,
        example_input: Any = None,
        buffers: bool = False,
        *,
        options: TapeOptions | None = None,
    ) -> Run:
        """Snapshot ``model`` now (step 0), then after every ``every``-th step of ``optimizer`` (and the last).

        ``buffers`` also captures module buffers (BatchNorm running statistics). ``example_input`` (one batch
        as the model takes it) exports the model with torch.export so the server can compute activations and
        feature maps; a model torch.export cannot handle only warns. ``options`` tunes the tape (segment
        size, keyframes, lossy mode; netlapse.core.tape.TapeOptions)."""
        if self._pipe is not None:
            raise RuntimeError("run.watch() was called already; one model per run")
        if self.finished:
            raise RuntimeError(f"run {self.id} is finished")
        if every < 1:
            raise ValueError(f"every must be >= 1, got {every}")
        infos = capturable_tensors(model, include_buffers=buffers)
        if not infos:
            raise ValueError("the model has no floating-point parameters to record")
        on_cuda = any(p.is_cuda for p in model.parameters())
        if options is None:
            # On a GPU the lane transforms run there, on the capture buffer ("auto" = torch on CUDA).
            options = TapeOptions(
                threads=min(8, os.cpu_count() or 1) if on_cuda else 1,
                thread_nice=10,
                device=capture_device(model, include_buffers=buffers),
            )
        modules = {n: type(m).__name__ for n, m in model.named_modules() if n}
        self.sink.watch(
            {
                "modules": modules,
                "buffers": buffers,
                "every": every,
                "torch_version": torch.__version__,
                "host": host_name(),
            }
        )
        # Ingest checks every segment against the SHA-256 its index entry gives.
        writer = TapeWriter(
            self.sink.tape_store(), tape_prefix(self.id), infos, options.with_(segment_digest=True)
        )
        self._pipe = CapturePipeline(model, writer, buffers=4, nice=10, include_buffers=buffers)
        self._every = every
        self._capture(0)
        self._hook = optimizer.register_step_post_hook(self._after_step)
        if example_input is not None:
            self._export(model, example_input)
        return self

    def _export(self, model: torch.nn.Module, example_input: Any) -> None:
        from netlapse.core.program import export_program

        data = export_program(model, example_input)
        if data is not None:
            self.sink.program(data)

    def _after_step(self, optimizer: torch.optim.Optimizer, args: Any, kwargs: Any) -> None:
        """optimizer.register_step_post_hook: runs after every real optimizer step."""
        with self._lock:
            if self.finished or self._pipe is None:
                return
            self.step += 1
            if self.step % self._every == 0:
                self._capture(self.step)
            self._close_row()

    def _capture(self, step: int) -> None:
        assert self._pipe is not None
        self._pipe.capture(step)
        self._last_captured = step

    # -- metrics

    def log(self, metrics: Mapping[str, Any], step: int | None = None) -> None:
        """Record metrics at ``step`` (default: the current step, i.e. optimizer steps taken so far).

        Values are numbers (Python, numpy or one-element tensors); several calls for one step merge."""
        with self._lock:
            if self.finished:
                raise RuntimeError(f"run {self.id} is finished; log() before finish()")
            s = self.step if step is None else int(step)
            if s < 0:
                raise ValueError(f"step must be >= 0, got {s}")
            row = {str(k): _number(str(k), v) for k, v in metrics.items()}
            if "step" in row or "kind" in row:
                raise ValueError("'step' and 'kind' are reserved metric names")
            if self._row is not None and self._row["step"] != s:
                self._close_row()
            if self._row is None:
                self._row = {"step": s}
            self._row.update(row)

    def _close_row(self) -> None:
        if self._row is not None:
            self._rows.append(self._row)
            self._row = None
        now = time.monotonic()
        if self._rows and (
            len(self._rows) >= METRICS_FLUSH_ROWS or now - self._last_flush >= METRICS_FLUSH_S
        ):
            self._flush_rows()

    def _flush_rows(self) -> None:
        self._last_flush = time.monotonic()
        rows, self._rows = self._rows, []
        for i in range(0, len(rows), METRICS_FLUSH_ROWS):
            self.sink.metrics(rows[i : i + METRICS_FLUSH_ROWS])

    # -- eval data

    def eval_data(self, inputs: Any, labels: Any) -> None:
        """A held-out set for per-label activations: ``inputs`` [N, ...] floats and ``labels`` [N] ints
        (numpy or torch), at most 64 MB together."""
        x = _as_numpy(inputs)
        y = _as_numpy(labels)
        if x.ndim < 2 or x.dtype.kind != "f":
            raise ValueError(f"eval inputs must be floats of shape [N, ...], got {x.dtype} {list(x.shape)}")
        if y.ndim != 1 or y.dtype.kind not in "iu":
            raise ValueError(f"eval labels must be integers of shape [N], got {y.dtype} {list(y.shape)}")
        if len(x) != len(y):
            raise ValueError(f"{len(x)} inputs but {len(y)} labels")
        if x.nbytes + y.nbytes > MAX_EVAL_BYTES:
            raise ValueError(
                f"eval data is {(x.nbytes + y.nbytes) / 2**20:.1f} MiB; at most 64 MiB — pass a subset"
            )
        self.sink.eval_part("inputs", _npy(np.ascontiguousarray(x)))
        self.sink.eval_part("labels", _npy(np.ascontiguousarray(y.astype(np.int64))))

    # -- the end

    def finish(
        self, status: str = "succeeded", error: str | None = None, timeout: float = DEFAULT_FINISH_TIMEOUT_S
    ) -> None:
        """Capture the last step, flush, commit, and mark the run ``status`` (``succeeded`` by default).

        Waits up to ``timeout`` seconds for the uploads; raises :class:`UploadFailed` when data was lost."""
        with self._lock:
            if self.finished:
                return
            self.finished = True
            if self._hook is not None:
                self._hook.remove()
            capture_error: BaseException | None = None
            if self._pipe is not None:
                try:
                    if self._last_captured != self.step:
                        self._pipe.capture(self.step)  # the last step is always kept
                    self.stats = self._pipe.close(complete=status == "succeeded")
                except BaseException as exc:
                    capture_error = exc
                    status, error = "failed", error or f"capture failed: {type(exc).__name__}: {exc}"
                    try:
                        self._pipe.close(complete=False)
                    except Exception:  # the first failure is the one reported (capture_error)
                        log.debug("closing the capture pipeline after a failure also failed", exc_info=True)
            if self._row is not None:
                self._close_row()
            if self._rows:
                self._flush_rows()
            summary = self._summary()
            try:
                out = self.sink.finish(status, error, summary, timeout)
                self.status = str(out.get("status", status))
            finally:
                self.sink.close()
                _live_runs.discard(self)
            if capture_error is not None:
                raise capture_error

    def _summary(self) -> dict[str, Any]:
        st = self.stats
        if st is None:
            return {}
        return {
            "capture_wait_seconds": round(st.wait_seconds, 4),
            "capture_copy_seconds": round(st.copy_seconds, 4),
        }

    def __enter__(self) -> Run:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if exc is None:
            self.finish()
            return
        text = f"{type(exc).__name__}: {exc}".strip()
        try:
            self.finish(status="failed", error=text[:4000])
        except Exception:  # the user's exception is the one that matters
            log.exception("netlapse: finishing run %s after an error", self.id)

    def __repr__(self) -> str:
        where = f"offline in {self.path}" if self.offline else "online"
        return f"<netlapse Run {self.id} {self.name!r} step {self.step} {self.status} {where}>"


def _as_numpy(a: Any) -> np.ndarray:
    if isinstance(a, torch.Tensor):
        return a.detach().cpu().numpy()
    return np.asarray(a)


def _npy(a: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, a, allow_pickle=False)
    return buf.getvalue()


# --- a run the script forgot to finish ------------------------------------------------------------------------

_live_runs: weakref.WeakSet[Run] = weakref.WeakSet()
_uncaught: list[BaseException] = []
_previous_hook = sys.excepthook


def _excepthook(t: type[BaseException], e: BaseException, tb: TracebackType | None) -> None:
    _uncaught.append(e)
    _previous_hook(t, e, tb)


def _finish_at_exit() -> None:
    """At interpreter exit, finish runs left open: ``failed`` after an uncaught exception, else ``succeeded``."""
    for run in list(_live_runs):
        if run.finished:
            continue
        try:
            if _uncaught:
                e = _uncaught[-1]
                run.finish(status="failed", error=f"{type(e).__name__}: {e}"[:4000])
            else:
                run.finish()
        except Exception as exc:
            print(f"netlapse: could not finish run {run.id}: {exc}", file=sys.stderr)


_hooks_installed = False


def _install_exit_hooks() -> None:
    global _hooks_installed
    if not _hooks_installed:
        _hooks_installed = True
        sys.excepthook = _excepthook
        atexit.register(_finish_at_exit)


__all__ = ["NotWatching", "Run", "ServerUnreachable", "UploadFailed", "init"]
