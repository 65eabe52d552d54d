"""Capture every snapshot: encode it where it costs training least, upload it off the training thread.

Two modes and a chooser (``CAPTURE_MODES``). **thread**: the training thread only copies the model's
floating-point state into a free preallocated flat buffer and enqueues it. A background thread hands the
buffer to ``TapeWriter.append`` (which may fan the encoding out to its own threads) and returns it to the
pool. When the pool is empty the training thread waits (backpressure) rather than dropping a step; the wait
is measured in ``CaptureStats.wait_seconds``. The writer thread can run at a lower CPU priority (``nice``),
so on a CPU-bound machine encoding uses the cycles training leaves idle.

Where the buffer lives follows the writer's encoder. With the numpy encoder it is host memory (pinned when
the model is on CUDA, copied on a side stream) and the writer gets numpy views. With the torch encoder
(``TapeOptions(encoder="torch", device=...)``: the device path) it is a flat buffer on that device — the
model's GPU: a device-to-device copy on a side stream, no host round trip — and the writer gets torch views,
whose lane transforms then run on the device, on a side stream of the writer thread's own.

**inline**: the training thread encodes the live tensors itself, right after the optimizer step (no copy),
and only sealed segments go to the background thread, which uploads them (storage waits never reach
training; at most ``buffers`` sealed segments wait, then training does). For a model on the CPU only. Where
torch runs its CPU kernels on an OpenMP team of 2+ threads, the snapshot's blocks are coded by that same
team (``TapeWriter.team`` = ``torch.get_num_threads()``; one C call, ``nl_encode_bits_team``): the threads
that were busy with the step move on to the snapshot, nothing else competes with them for the cores, and
the bytes are those of one thread's coding.

**auto** (the default, ``resolve_capture_mode``) picks inline-on-the-team where that is possible (a CPU
model, the numpy encoder with the native coder and no helper pool of its own, torch built with OpenMP and
using 2+ threads), else thread. On the project's 2-core machine, alternating the modes step group by step
group in one process, inline on the team cost the loop 1.5-1.8x less than the thread (docs/performance.md,
"Capture modes").
"""

from __future__ import annotations

import functools
import logging
import os
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from types import TracebackType
from typing import Any, TypeVar

import numpy as np
import torch

from netlapse.core.tape import TapeWriter, TensorInfo

log = logging.getLogger(__name__)
_T = TypeVar("_T")

# Per-tensor views start on this boundary so any dtype view of the flat byte buffer is aligned.
_ALIGN = 64
_POLL_S = 0.05

CAPTURE_MODES = ("auto", "thread", "inline")

_TORCH_TO_NUMPY: dict[torch.dtype, str] = {
    torch.float16: "float16",
    torch.float32: "float32",
    torch.float64: "float64",
}


def _buffer_placement(writer: TapeWriter, sources: list[torch.Tensor]) -> tuple[torch.device, bool]:
    """(where the pooled buffers live, whether the writer is handed torch views instead of numpy).

    The torch encoder gets torch views of a buffer on its own device: the model's GPU stays the only place
    the snapshot is (the device path), or host memory for ``device="cpu"``. A model spread over devices
    other than the encoder's is staged in host memory (the torch encoder takes numpy arrays too)."""
    if getattr(writer, "encoder", "numpy") != "torch":
        return torch.device("cpu"), False
    options = getattr(writer, "options", None)
    dev = torch.device(getattr(options, "device", None) or "cpu")
    if dev.type == "cuda":
        if dev.index is None:
            dev = torch.device("cuda", torch.cuda.current_device())
        if any(s.device != dev for s in sources):
            log.info("capture: the model is not all on %s; snapshots are staged in host memory", dev)
            return torch.device("cpu"), False
        return dev, True
    if dev.type != "cpu":
        return torch.device("cpu"), False
    return dev, True


@functools.cache
def torch_uses_openmp() -> bool:
    """Whether torch's intra-op threads are a GNU OpenMP team (the pip wheels on Linux): the team the native
    codec can borrow from the training thread (TapeWriter.team)."""
    return "parallel backend: OpenMP" in torch.__config__.parallel_info()


def resolve_capture_mode(
    mode: str, sources: list[torch.Tensor], hand_torch: bool, writer: TapeWriter | None = None
) -> str:
    """``mode`` checked: one of CAPTURE_MODES, and "inline" only for tensors on the CPU that the numpy encoder
    takes (ValueError otherwise). "auto" is "inline" where inline coding can use torch's own threads (tensors on
    the CPU, the native codec, torch on an OpenMP team of two or more threads: see the module docstring), else
    "thread"."""
    if mode not in CAPTURE_MODES:
        raise ValueError(f"capture mode must be one of {', '.join(CAPTURE_MODES)}, got {mode!r}")
    on_cpu = not hand_torch and all(s.device.type == "cpu" for s in sources)
    if mode == "auto":
        team = (
            on_cpu
            and writer is not None
            and writer.team_capable
            and torch_uses_openmp()
            and torch.get_num_threads() > 1
        )
        return "inline" if team else "thread"
    if mode == "inline" and not on_cpu:
        raise ValueError(
            "capture mode 'inline' needs the model on the CPU and the numpy encoder (the device path and "
            "GPU models capture on a thread)"
        )
    return mode


class CaptureError(RuntimeError):
    """The background tape writer failed; the original error is the ``__cause__``."""


def capturable_tensors(model: torch.nn.Module, include_buffers: bool = True) -> list[TensorInfo]:
    """Every floating-point tensor of ``model.state_dict()`` in state_dict order, i.e. module paths in the
    model's order (weights, biases and, with ``include_buffers``, buffers such as BatchNorm running stats)."""
    params = None if include_buffers else {n for n, _ in model.named_parameters(remove_duplicate=False)}
    out: list[TensorInfo] = []
    for name, t in model.state_dict().items():
        if not isinstance(t, torch.Tensor) or not t.is_floating_point():
            continue
        if params is not None and name not in params:
            continue
        np_name = _TORCH_TO_NUMPY.get(t.dtype)
        if np_name is None:
            raise ValueError(
                f"tensor {name!r} has dtype {t.dtype}, which the tape cannot store bit-exactly "
                f"(supported: {', '.join(_TORCH_TO_NUMPY.values())}); cast the model first"
            )
        out.append(TensorInfo(name, tuple(int(d) for d in t.shape), np_name))
    return out


def capture_device(model: torch.nn.Module, include_buffers: bool = True) -> str | None:
    """The device to give ``TapeOptions(device=...)`` for ``model``: its CUDA device when every capturable
    tensor is on that one GPU (then the encoder's "auto" runs the lane transforms there, on the capture
    buffer), else None (the CPU encoder)."""
    sd = model.state_dict()
    devices = {sd[t.name].device for t in capturable_tensors(model, include_buffers)}
    if len(devices) != 1:
        return None
    dev = devices.pop()
    if dev.type != "cuda":
        return None
    return str(torch.device("cuda", dev.index if dev.index is not None else torch.cuda.current_device()))


@dataclass
class CaptureStats:
    """What capturing cost so far. ``wait_seconds``: training blocked on a full pool (thread mode) or on
    sealed segments still uploading (inline); ``copy_seconds``: training thread time spent issuing copies
    (thread mode); bytes are the tape writer's raw and stored totals; ``encode_seconds``/``commit_seconds``:
    the writer's own wall time encoding and sealing/uploading; ``writer_cpu_seconds``: CPU time the capture's
    own threads spent in the writer (the writer thread, and in inline mode the training thread's encoding;
    not the encoder's helper threads), which other load on the machine does not inflate."""

    steps: int = 0
    wait_seconds: float = 0.0
    raw_bytes: int = 0
    stored_bytes: int = 0
    copy_seconds: float = 0.0
    encode_seconds: float = 0.0
    commit_seconds: float = 0.0
    writer_cpu_seconds: float = 0.0


@dataclass
class _Slot:
    """One snapshot buffer: flat memory plus per-tensor torch views into it, and what the writer is handed
    (numpy views of host memory, or the torch views themselves for the torch encoder)."""

    buffer: torch.Tensor
    dst: list[torch.Tensor]
    arrays: dict[str, Any] = field(default_factory=dict)
    host: list[np.ndarray] | None = None  # numpy views of the same tensors when the buffer is host memory


class CapturePipeline:
    """Copies the model's state after each optimizer step and streams it to a TapeWriter on a thread.

    At most ``buffers`` snapshots are in flight; memory is ``buffers`` × one snapshot. Use as a context
    manager or call close(); an exception inside the ``with`` closes the tape as incomplete."""

    def __init__(
        self,
        model: torch.nn.Module,
        writer: TapeWriter,
        *,
        buffers: int = 4,
        nice: int = 0,
        include_buffers: bool = True,
        mode: str = "auto",
    ) -> None:
        """Allocate the buffer pool for ``model``'s capturable tensors and start the writer thread
        (``nice`` > 0 lowers its CPU priority on Linux). ``buffers`` is the pool size (snapshots in flight;
        inline: sealed segments waiting for upload); ``include_buffers`` False captures parameters only, not
        module buffers (BatchNorm statistics); ``mode``: "auto", "thread" or "inline" (module docstring)."""
        if buffers < 1:
            raise ValueError(f"buffers must be >= 1, got {buffers}")
        self.model = model
        self.writer = writer
        self.infos = capturable_tensors(model, include_buffers)
        if [(t.name, t.shape, t.dtype) for t in self.infos] != [
            (t.name, t.shape, t.dtype) for t in writer.tensors
        ]:
            raise ValueError(
                "the writer's tensors differ from the model's; build it with "
                f"capturable_tensors(model, include_buffers={include_buffers})"
            )
        self._shapes = [torch.Size(t.shape) for t in self.infos]
        self._dtypes = [next(k for k, v in _TORCH_TO_NUMPY.items() if v == t.dtype) for t in self.infos]
        sources = self._sources()
        self._direct = self._direct_map()
        self.cuda = any(s.is_cuda for s in sources)
        # Parameters may sit on several GPUs: each device gets its own copy stream.
        self.devices = sorted({s.device for s in sources if s.is_cuda}, key=lambda d: d.index or 0)
        self.device = self.devices[0] if self.devices else torch.device("cpu")
        self.buffer_device, self.hand_torch = _buffer_placement(writer, sources)
        self.device_path = self.hand_torch and self.buffer_device.type == "cuda"
        self.mode = resolve_capture_mode(mode, sources, self.hand_torch, writer)
        # inline: the snapshot is coded on torch's own OpenMP team, from the training thread (capture()).
        self._team = self.mode == "inline" and writer.team_capable and torch_uses_openmp()

        offsets, off = [], 0
        for t in self.infos:
            offsets.append(off)
            off += -(-t.nbytes // _ALIGN) * _ALIGN
        self._offsets, self._total = offsets, max(off, _ALIGN)

        self._pool: queue.Queue[_Slot] = queue.Queue()
        if self.mode == "thread":  # inline encodes the live tensors: no buffers
            for _ in range(buffers):
                self._pool.put(self._new_slot())
        self._queue: queue.Queue[tuple[int, _Slot, Any] | None] = queue.Queue()
        # inline: one token per sealed segment for the thread to publish; full = training waits.
        self._sealed: queue.Queue[bool | None] = queue.Queue(maxsize=buffers)
        self._cpu_lock = threading.Lock()
        self._streams: dict[torch.device, Any] = {d: torch.cuda.Stream(device=d) for d in self.devices}
        # The device path: the writer's torch transform runs on a side stream, not training's stream. Only
        # when the writer encodes on its own thread: helper threads would issue work on their default stream.
        # A writer whose transform keeps its own stream (``writer.stream``) is used as it is, on any number
        # of threads.
        self._encode_stream: Any = getattr(writer, "stream", None) if self.device_path else None
        self._own_stream = False
        if self.device_path and self._encode_stream is None and int(getattr(writer, "threads", 1)) <= 1:
            self._encode_stream = torch.cuda.Stream(device=self.buffer_device)
            self._own_stream = True

        self.stats = CaptureStats()
        self._error: BaseException | None = None
        self._error_step: int | None = None
        self._last_step: int | None = None
        self._closed = False
        self.nice = int(nice)
        run = self._run if self.mode == "thread" else self._run_publisher
        self._thread = threading.Thread(target=run, name="netlapse-capture-writer", daemon=True)
        self._thread.start()

    # -- setup helpers

    def _direct_map(self) -> list[tuple[dict[str, Any], str]] | None:
        """Where each captured tensor lives — its module's ``_parameters`` or ``_buffers`` dict and key — when
        ``state_dict()`` is exactly those (no state-dict hooks, no module overriding how it saves itself).
        Then a capture reads them directly: ``state_dict()`` walks every module and builds a dict each time
        (0.05-0.35 ms for paper-cnn, more for deep models: a real share of a ~2 ms GPU step). None otherwise."""
        base = torch.nn.Module
        mods = dict(self.model.named_modules(remove_duplicate=False))
        for m in mods.values():
            t = type(m)
            if (
                getattr(m, "_state_dict_hooks", None)
                or getattr(m, "_state_dict_pre_hooks", None)
                or t.state_dict is not base.state_dict
                or t._save_to_state_dict is not base._save_to_state_dict
            ):
                return None
        out: list[tuple[dict[str, Any], str]] = []
        for info in self.infos:
            prefix, _, attr = info.name.rpartition(".")
            m = mods.get(prefix)
            if m is None:
                return None
            if m._parameters.get(attr) is not None:
                out.append((m._parameters, attr))
            elif m._buffers.get(attr) is not None and attr not in m._non_persistent_buffers_set:
                out.append((m._buffers, attr))
            else:
                return None
        return out

    def _sources(self) -> list[torch.Tensor]:
        """The live capturable tensors, checked against the layout fixed at construction."""
        direct = getattr(self, "_direct", None)
        if direct is not None:
            fast: list[torch.Tensor] = []
            for (d, key), shape, dt in zip(direct, self._shapes, self._dtypes, strict=True):
                t = d.get(key)
                if t is None or t.shape != shape or t.dtype != dt:
                    break  # gone or reshaped: state_dict() below says how
                fast.append(t)
            else:
                return fast
        sd = self.model.state_dict()
        out: list[torch.Tensor] = []
        for info in self.infos:
            t = sd.get(info.name)
            if t is None or tuple(t.shape) != info.shape or _TORCH_TO_NUMPY.get(t.dtype) != info.dtype:
                got = None if t is None else (tuple(t.shape), t.dtype)
                raise RuntimeError(
                    f"tensor {info.name!r} changed since capture started: expected {info.shape} {info.dtype}, got {got}"
                )
            out.append(t)
        return out

    def _new_slot(self) -> _Slot:
        if self.buffer_device.type == "cpu":
            # Pinned memory makes device-to-host copies truly asynchronous.
            buf = torch.empty(self._total, dtype=torch.uint8, pin_memory=self.cuda)
        else:
            buf = torch.empty(self._total, dtype=torch.uint8, device=self.buffer_device)
        flat = buf.numpy() if self.buffer_device.type == "cpu" else None
        dst: list[torch.Tensor] = []
        host: list[np.ndarray] = []
        arrays: dict[str, Any] = {}
        for info, off in zip(self.infos, self._offsets, strict=True):
            tdt = next(k for k, v in _TORCH_TO_NUMPY.items() if v == info.dtype)
            view = buf[off : off + info.nbytes].view(tdt).view(info.shape)
            dst.append(view)
            if flat is not None:
                host.append(flat[off : off + info.nbytes].view(np.dtype(info.dtype)).reshape(info.shape))
            arrays[info.name] = view if self.hand_torch else host[-1]
        return _Slot(buf, dst, arrays, host if flat is not None else None)

    # -- training thread

    def _raise_if_failed(self) -> None:
        if self._error is not None:
            raise CaptureError(
                f"capture writer failed at step {self._error_step}: {type(self._error).__name__}: {self._error}"
            ) from self._error

    def _acquire(self) -> _Slot:
        return self._wait(lambda t: self._pool.get(timeout=t) if t else self._pool.get_nowait(), queue.Empty)

    def _wait(self, attempt: Callable[[float | None], _T], busy: type[Exception]) -> _T:
        """``attempt(None)`` (must not block), else ``attempt(_POLL_S)`` until it does not raise ``busy``; the
        time waited counts as backpressure. Never waits forever on a writer that died."""
        try:
            return attempt(None)
        except busy:
            pass
        t0 = time.perf_counter()
        try:
            while True:
                try:
                    return attempt(_POLL_S)
                except busy:
                    self._raise_if_failed()
                    if not self._thread.is_alive():
                        raise CaptureError("capture writer thread is not running") from None
        finally:
            self.stats.wait_seconds += time.perf_counter() - t0

    def capture(self, step: int) -> None:
        """Snapshot the model as of now as ``step`` (call right after optimizer.step()).

        Blocks while all buffers are in flight; raises CaptureError if the writer thread has failed."""
        if self._closed:
            raise RuntimeError("capture() on a closed CapturePipeline")
        self._raise_if_failed()
        step = int(step)
        if self._last_step is not None and step <= self._last_step:
            raise ValueError(f"capture steps must strictly increase: got {step} after {self._last_step}")
        if self.mode == "inline":
            self._capture_inline(step)
            return
        slot = self._acquire()
        t0 = time.perf_counter()
        try:
            self._raise_if_failed()  # the writer may have failed while we waited for this buffer
            sources = self._sources()
            event = self._copy(slot, sources)
        except BaseException:
            self._pool.put(slot)
            raise
        self.stats.copy_seconds += time.perf_counter() - t0
        self._last_step = step
        self._queue.put((step, slot, event))

    def _capture_inline(self, step: int) -> None:
        """Encode the live tensors on this thread; hand a full segment to the thread for upload."""
        arrays = {
            info.name: src.detach().numpy() for info, src in zip(self.infos, self._sources(), strict=True)
        }
        c0, h0 = time.thread_time(), self.writer.team_cpu_seconds
        if self._team:
            self.writer.team = torch.get_num_threads()  # (the user may change it between steps)
        try:
            try:
                self.writer.append(step, arrays, commit=False)
                self._last_step = step
                self.stats.steps += 1
                sealed = self.writer.seal() if self.writer.segment_full else None
            except Exception as e:  # the same CaptureError, with its cause, as from the writer thread
                self._error_step, self._error = step, e
                log.error("capture writer failed at step %s: %s", step, e)
                self._raise_if_failed()
            if sealed is not None:
                self._hand_sealed()
        finally:
            self._add_cpu(time.thread_time() - c0 + self.writer.team_cpu_seconds - h0)
            self._sync_writer_stats()

    def _hand_sealed(self) -> None:
        self._wait(
            lambda t: self._sealed.put(True, timeout=t) if t else self._sealed.put_nowait(True), queue.Full
        )

    def _add_cpu(self, seconds: float) -> None:
        with self._cpu_lock:
            self.stats.writer_cpu_seconds += seconds

    def _copy(self, slot: _Slot, sources: list[torch.Tensor]) -> Any:
        """Copy sources into the slot (host or device buffer alike: a CUDA source is copied on its device's
        side stream); returns the events the writer must synchronize (empty on CPU)."""
        events: list[Any] = []
        with torch.no_grad():
            for i, src in enumerate(sources):
                if src.is_cuda:
                    continue
                if slot.host is not None and src.device.type == "cpu":
                    # One plain memcpy per tensor. torch's copy_ splits a large tensor over its intra-op
                    # threads, and when a core is busy (the writer, another process) that parallel copy waits
                    # for a thread to be scheduled: ~1 ms per 4.8 MB idle and 5-17 ms on a loaded 2-core
                    # machine, against 0.25-0.35 ms here.
                    np.copyto(slot.host[i], src.detach().numpy())
                else:
                    slot.dst[i].copy_(src)
            for device, stream in self._streams.items():
                current = torch.cuda.current_stream(device)
                # The side stream must see the optimizer step that was just queued on the current stream.
                stream.wait_stream(current)
                with torch.cuda.device(device), torch.cuda.stream(stream):
                    for dst, src in zip(slot.dst, sources, strict=True):
                        if src.is_cuda and src.device == device:
                            dst.copy_(src, non_blocking=True)
                    event = torch.cuda.Event()
                    event.record(stream)
                # The next optimizer step writes these tensors in place; it must not start before the copy ends.
                current.wait_event(event)
                events.append(event)
        return events

    # -- writer thread

    def _lower_priority(self) -> None:
        if self.nice > 0 and hasattr(os, "setpriority"):
            try:  # Linux: a thread id names just this thread
                os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), self.nice)
            except OSError:
                log.debug("could not lower the capture writer's priority")

    def _run_publisher(self) -> None:
        """inline mode: upload what the training thread sealed, in order."""
        self._lower_priority()
        while True:
            token = self._sealed.get()
            if token is None:
                return
            c0 = time.thread_time()
            try:
                if self._error is None:
                    self.writer.publish()
            except BaseException as e:  # kept and re-raised on the training thread
                self._error_step = self.writer.last_committed_step
                self._error = e
                log.error("capture writer failed to upload a segment: %s", e)
            finally:
                self._add_cpu(time.thread_time() - c0)

    def _run(self) -> None:
        self._lower_priority()
        while True:
            item = self._queue.get()
            if item is None:
                return
            step, slot, event = item
            c0 = time.thread_time()
            try:
                if self._error is None:
                    for ev in event:
                        ev.synchronize()
                    self._append(step, slot)
                    self.stats.steps += 1
                    self._sync_writer_stats()
            except BaseException as e:  # kept and re-raised on the training thread
                self._error_step = step
                self._error = e
                log.error("capture writer failed at step %s: %s", step, e)
            finally:
                self._add_cpu(time.thread_time() - c0)
                # After a failure keep draining, so a training thread blocked on the pool wakes up.
                self._pool.put(slot)

    def _append(self, step: int, slot: _Slot) -> None:
        if self.buffer_device.type != "cuda":
            self.writer.append(step, slot.arrays)
            return
        # The device path: the transform reads the device buffer; it must be done with it before the slot
        # returns to the pool (the next copy into it), so the stream it ran on is synchronized.
        stream = self._encode_stream or torch.cuda.current_stream(self.buffer_device)
        if self._own_stream:
            with torch.cuda.device(self.buffer_device), torch.cuda.stream(stream):
                self.writer.append(step, slot.arrays)
        else:
            self.writer.append(step, slot.arrays)
        stream.synchronize()

    # -- shutdown

    def close(self, complete: bool = True) -> CaptureStats:
        """Drain queued snapshots, close the tape (``complete`` marks it finished) and stop the thread.

        Raises CaptureError if the writer failed (then the tape is closed as incomplete, best effort).
        A second call returns the stats again (or raises the same error)."""
        if self._closed:
            self._raise_if_failed()
            return replace(self.stats)
        self._closed = True
        self._queue.put(None)
        self._sealed.put(None)  # a full queue waits here for the uploads, which the thread keeps doing
        self._thread.join()
        if self._error is not None:
            try:
                self.writer.close(complete=False)
            except Exception:  # the writer's first error is the one worth reporting
                log.exception("closing the tape after a capture failure")
            self._raise_if_failed()
        try:
            self.writer.close(complete=complete)
        except BaseException as e:
            self._error, self._error_step = e, self._last_step
            self._raise_if_failed()
        self._sync_writer_stats()
        return replace(self.stats)

    def _sync_writer_stats(self) -> None:
        w = self.writer
        self.stats.raw_bytes, self.stats.stored_bytes = w.raw_bytes, w.stored_bytes
        self.stats.encode_seconds = float(getattr(w, "encode_seconds", 0.0))
        self.stats.commit_seconds = float(getattr(w, "commit_seconds", 0.0))

    @property
    def closed(self) -> bool:
        """Whether close() was called."""
        return self._closed

    def __enter__(self) -> CapturePipeline:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if exc_type is None:
            self.close(complete=True)
            return
        try:
            self.close(complete=False)
        except Exception:  # the exception already propagating matters more
            log.exception("closing capture after an error")
