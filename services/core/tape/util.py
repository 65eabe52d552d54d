"""Small shared pieces of the codec: a byte-bounded LRU, block arithmetic, thread pools, zstd contexts."""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import zstandard

from netlapse.core.store import validate_key


class _ByteLRU:
    """A least-recently-used cache bounded by the total bytes of its values. Not locked: callers lock."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.bytes = 0
        self._d: OrderedDict[Hashable, tuple[Any, int]] = OrderedDict()

    def get(self, key: Hashable) -> Any:
        item = self._d.get(key)
        if item is None:
            return None
        self._d.move_to_end(key)
        return item[0]

    def __contains__(self, key: Hashable) -> bool:
        return key in self._d

    def put(self, key: Hashable, value: Any, nbytes: int) -> None:
        if nbytes > self.max_bytes:
            return  # would evict everything else and still not fit
        old = self._d.pop(key, None)
        if old is not None:
            self.bytes -= old[1]
        self._d[key] = (value, nbytes)
        self.bytes += nbytes
        while self.bytes > self.max_bytes and self._d:
            _, (_, n) = self._d.popitem(last=False)
            self.bytes -= n

    def clear(self) -> None:
        self._d.clear()
        self.bytes = 0


def _norm_prefix(prefix: str) -> str:
    if prefix and not prefix.endswith("/"):
        prefix += "/"
    if prefix:
        validate_key(prefix[:-1])
    return prefix


def _describe_steps(steps: Sequence[int]) -> str:
    """A short human description of captured steps, for error messages."""
    if not steps:
        return "no steps are committed yet"
    if len(steps) == 1:
        return f"the only captured step is {steps[0]}"
    diffs = {b - a for a, b in zip(steps, steps[1:], strict=False)}
    if len(diffs) == 1:
        return f"captured steps are {steps[0]}..{steps[-1]} every {diffs.pop()} ({len(steps)} steps)"
    return f"captured steps are {len(steps)} steps between {steps[0]} and {steps[-1]}"


def _n_blocks(n_lanes: int, block_lanes: int) -> int:
    return max(1, -(-n_lanes // block_lanes))


def _block_slices(n_lanes: int, block_lanes: int) -> list[slice]:
    return [
        slice(b * block_lanes, min(n_lanes, (b + 1) * block_lanes))
        for b in range(_n_blocks(n_lanes, block_lanes))
    ]


def _set_thread_nice(nice: int) -> None:
    """Lower this thread's CPU priority (Linux: per thread), so encoding yields to training."""
    if nice > 0 and hasattr(os, "setpriority"):
        try:
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), nice)
        except OSError:  # not permitted or not supported: run at normal priority
            pass


_READ_POOL: ThreadPoolExecutor | None = None
_READ_POOL_LOCK = threading.Lock()
_LOCAL = threading.local()


def _read_pool() -> ThreadPoolExecutor:
    """Process-wide threads for decoding blocks in parallel (zstd and numpy release the GIL)."""
    global _READ_POOL
    with _READ_POOL_LOCK:
        if _READ_POOL is None:
            _READ_POOL = ThreadPoolExecutor(
                max_workers=max(2, os.cpu_count() or 2), thread_name_prefix="tape-read"
            )
        return _READ_POOL


def _dctx() -> zstandard.ZstdDecompressor:
    # Decompressor contexts must not be used by two threads at once; one per thread.
    d = getattr(_LOCAL, "dctx", None)
    if d is None:
        d = _LOCAL.dctx = zstandard.ZstdDecompressor()
    return d


def _parallel(fn: Callable[[int], Any], n: int, pool: ThreadPoolExecutor | None) -> list[Any]:
    """fn(0..n-1), on the pool when there is more than one job."""
    if n <= 1 or pool is None:
        return [fn(i) for i in range(n)]
    futs: list[Future[Any]] = [pool.submit(fn, i) for i in range(n)]
    return [f.result() for f in futs]
