"""The lane transforms of one block, in numpy (CPU) or torch (any device: the device path).

Both implement the same exact integer arithmetic — monotone lanes, the D1/D2 mode vote, the wrapped residual,
zigzag, byte planes and which planes are all zero — so a tape written through either is the same bytes
(tests/unit/test_tape_device.py checks it). Only byte planes that hold something leave the transform; on a
GPU they are what crosses to the host for entropy coding.
"""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from netlapse.core.tape import native
from netlapse.core.tape.lanes import (
    MODE_D1,
    MODE_D2,
    MODE_SAMPLE,
    _Lanes,
    _vote_mode,
    _zigzag_into,
)

if TYPE_CHECKING:
    from netlapse.core.tape.options import TapeOptions

log = logging.getLogger(__name__)


@dataclass
class BlockPlanes:
    """A block's byte planes [k, n] (uint8, rows of all-zero planes left unwritten) and which are nonzero."""

    planes: np.ndarray
    nonzero: list[bool]


def _nonzero_of(acc: int, k: int) -> list[bool]:
    return [bool((acc >> (8 * j)) & 0xFF) for j in range(k)]


class NumpyTransform:
    """The CPU transform: numpy on reused per-tensor buffers, a few passes per block."""

    name = "numpy"

    def lanes_into(self, a: Any, lanes: _Lanes, out: np.ndarray, tmp: np.ndarray) -> np.ndarray:
        """Monotone lanes of array ``a`` into ``out``."""
        bits = np.ascontiguousarray(a).reshape(-1).view(np.uint8).view(lanes.signed)
        if not lanes.monotone:
            np.copyto(out, bits)
            return out
        if native.mono_into(bits, out):  # one pass instead of three
            return out
        np.right_shift(bits, lanes.bits - 1, out=tmp)
        np.bitwise_and(tmp, lanes.signed.type((1 << (lanes.bits - 1)) - 1), out=tmp)
        np.bitwise_xor(bits, tmp, out=out)
        return out

    def new_lanes(self, n: int, lanes: _Lanes) -> np.ndarray:
        return np.empty(n, dtype=lanes.signed)

    def zeros(self, n: int, lanes: _Lanes) -> np.ndarray:
        return np.zeros(n, dtype=lanes.signed)

    def mode(self, m: np.ndarray, m1: np.ndarray, m2: np.ndarray | None) -> int:
        return _vote_mode(m, m1, m2)

    def planes(
        self,
        m: np.ndarray,
        m1: np.ndarray | None,
        m2: np.ndarray | None,
        mode: int,
        lanes: _Lanes,
        res: np.ndarray,
        tmp: np.ndarray,
        out: np.ndarray,
    ) -> BlockPlanes:
        """Planes of zigzag(m - prediction) (prediction 0 when m1 is None) into ``out`` [k, n]."""
        if m1 is None:
            np.copyto(res, m)
        else:
            np.subtract(m, m1, out=res)
            if mode == MODE_D2:
                assert m2 is not None
                np.subtract(res, m1, out=res)
                np.add(res, m2, out=res)
        u = _zigzag_into(res, lanes, tmp)
        k = lanes.signed.itemsize
        nz = _nonzero_of(int(np.bitwise_or.reduce(u)) if u.size else 0, k)
        # Byte j of every lane by shift and narrowing cast: contiguous passes, ~2x a strided byte gather.
        t = tmp.view(lanes.unsigned)
        for j in range(k):
            if nz[j]:
                src = u if j == 0 else np.right_shift(u, 8 * j, out=t)
                np.copyto(out[j], src, casting="unsafe")
        return BlockPlanes(out, nz)


class TorchTransform:
    """The device transform: the same arithmetic in torch, on whatever device the lanes live on."""

    name = "torch"

    def __init__(self, device: Any = None) -> None:
        import torch

        self.torch = torch
        self.device = torch.device(device) if device is not None else torch.device("cpu")
        self.ints = {8: torch.int8, 16: torch.int16, 32: torch.int32, 64: torch.int64}
        # On CUDA every op of this transform goes to one side stream of its own (whatever thread calls it),
        # so encoding never queues behind training's kernels; callers wait on ``stream`` before reusing the
        # buffers they passed in. None on a CPU.
        self.stream = torch.cuda.Stream(self.device) if self.device.type == "cuda" else None

    def _side(self) -> Any:
        return self.torch.cuda.stream(self.stream) if self.stream is not None else contextlib.nullcontext()

    def _t(self, a: Any) -> Any:
        torch = self.torch
        if isinstance(a, torch.Tensor):
            return a.to(self.device, non_blocking=True)
        return torch.from_numpy(np.ascontiguousarray(a)).to(self.device)

    def lanes_into(self, a: Any, lanes: _Lanes, out: Any, tmp: Any) -> Any:
        with self._side():
            return self._lanes_into(a, lanes, out, tmp)

    def _lanes_into(self, a: Any, lanes: _Lanes, out: Any, tmp: Any) -> Any:
        torch = self.torch
        src = self._t(a).reshape(-1)
        bits = src.view(torch.uint8).view(self.ints[lanes.bits])
        if not lanes.monotone:
            out.copy_(bits)
            return out
        torch.bitwise_right_shift(bits, lanes.bits - 1, out=tmp)
        tmp.bitwise_and_((1 << (lanes.bits - 1)) - 1)
        torch.bitwise_xor(bits, tmp, out=out)
        return out

    def new_lanes(self, n: int, lanes: _Lanes) -> Any:
        with self._side():  # allocated on the stream that uses them (the caching allocator is per stream)
            return self.torch.empty(n, dtype=self.ints[lanes.bits], device=self.device)

    def zeros(self, n: int, lanes: _Lanes) -> Any:
        with self._side():
            return self.torch.zeros(n, dtype=self.ints[lanes.bits], device=self.device)

    def mode(self, m: Any, m1: Any, m2: Any | None) -> int:
        with self._side():
            return self._mode(m, m1, m2)

    def _mode(self, m: Any, m1: Any, m2: Any | None) -> int:
        torch = self.torch
        if m2 is None or m.numel() == 0:
            return MODE_D1
        stride = max(1, m.numel() // MODE_SAMPLE)
        a = m[::stride].to(torch.int64)
        b = m1[::stride].to(torch.int64)
        c = m2[::stride].to(torch.int64)
        r1 = a - b
        r2 = r1 - (b - c)
        r1.abs_()
        r2.abs_()
        votes = torch.stack([(r2 < r1).sum(), (r1 < r2).sum()]).tolist()
        return MODE_D2 if votes[0] > votes[1] else MODE_D1

    def planes(
        self,
        m: Any,
        m1: Any | None,
        m2: Any | None,
        mode: int,
        lanes: _Lanes,
        res: Any,
        tmp: Any,
        out: np.ndarray,
    ) -> BlockPlanes:
        with self._side():
            return self._planes(m, m1, m2, mode, lanes, res, tmp, out)

    def _planes(
        self,
        m: Any,
        m1: Any | None,
        m2: Any | None,
        mode: int,
        lanes: _Lanes,
        res: Any,
        tmp: Any,
        out: np.ndarray,
    ) -> BlockPlanes:
        torch = self.torch
        if m1 is None:
            res.copy_(m)
        else:
            torch.sub(m, m1, out=res)
            if mode == MODE_D2:
                res.sub_(m1).add_(m2)
        torch.bitwise_right_shift(res, lanes.bits - 1, out=tmp)
        res.bitwise_left_shift_(1).bitwise_xor_(tmp)
        k = lanes.signed.itemsize
        # Byte j of every lane, as a contiguous plane: shift, mask, narrow (no strided byte gathers).
        dev = torch.empty((k, res.numel()), dtype=torch.uint8, device=self.device)
        for j in range(k):
            torch.bitwise_right_shift(res, 8 * j, out=tmp)
            dev[j].copy_(tmp.bitwise_and_(0xFF))
        nz = dev.amax(dim=1).tolist() if res.numel() else [0] * k
        nonzero = [bool(v) for v in nz]
        idx = [j for j in range(k) if nonzero[j]]
        if idx:
            host = dev[idx].cpu().numpy() if len(idx) < k else dev.cpu().numpy()
            for r, j in enumerate(idx):
                out[j] = host[r]
        return BlockPlanes(out, nonzero)


NUMPY_TRANSFORM = NumpyTransform()  # stateless: one for every writer (and the lossy path of any)
_FALLBACK_LOGGED = False


def use_native(opts: TapeOptions, transform: NumpyTransform | TorchTransform) -> bool:
    """Whether blocks go through the native codec: the numpy encoder, entropy "native"/"auto", and the codec
    built ("native" without it is an error; "auto" falls back to zstd byte planes and logs it once)."""
    if opts.entropy == "zstd" or not isinstance(transform, NumpyTransform):
        return False
    if native.available():
        return True
    if opts.entropy == "native":
        raise native.NativeCodecMissing("entropy='native' but the native tape codec is not built")
    native.warn_missing_once()
    return False


def make_transform(opts: TapeOptions) -> NumpyTransform | TorchTransform:
    """The transform ``opts.encoder`` asks for: "numpy", "torch" (on ``opts.device``), or "auto" = torch on
    a CUDA device when one is given and present, else numpy (the faster one on a CPU)."""
    if opts.lossy or opts.encoder == "numpy":
        return NUMPY_TRANSFORM
    if opts.encoder == "auto":
        if opts.device is None or not str(opts.device).startswith("cuda"):
            return NUMPY_TRANSFORM
        try:
            import torch
        except ImportError:
            return NUMPY_TRANSFORM
        if not torch.cuda.is_available():
            return NUMPY_TRANSFORM
    tr = TorchTransform(opts.device)
    global _FALLBACK_LOGGED
    if not _FALLBACK_LOGGED:
        _FALLBACK_LOGGED = True
        # nvCOMP's Python package is not wired in: its frames would need a GPU to verify; planes go to zstd.
        log.info(
            "tape encoder: lane transforms in torch on %s; byte planes entropy-coded by zstd on the CPU "
            "(nvCOMP not used)",
            tr.device,
        )
    return tr
