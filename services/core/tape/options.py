"""Every knob of the tape writer in one place, each default stated once (Settings reuses these)."""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # the codec must import without the server's settings (the SDK uses it alone)
    from netlapse.core.schemas import CaptureConfig
    from netlapse.core.settings import Settings

# Lossy deltas are a few bits each, so a keyframe (stored exactly) would dominate; space them further apart.
LOSSY_KEYFRAME_FACTOR = 4
ENCODERS = ("auto", "numpy", "torch")
ENTROPY = ("auto", "native", "zstd")


@dataclass(frozen=True)
class TapeOptions:
    """How a TapeWriter cuts, encodes and commits a tape.

    ``segment_target_bytes`` / ``segment_max_steps``: a segment is uploaded once its compressed chunks
    reach this size or it holds this many steps. ``zstd_level``: level of every chunk's zstd frame.
    ``zstd_threads`` > 0: chunks of >= 2 MiB are compressed with zstd's own threads (standard frames).
    ``keyframe_interval``: every N-th captured step is stored whole; the ones between are deltas.
    ``block_lanes``: lanes per chunk (big tensors encode and decode in parallel, one block per job).
    ``threads``: encoder threads per snapshot; ``thread_nice``: their CPU niceness (Linux, per thread).
    ``lossy_rel_error``: None = lossless; else float tensors between keyframes are stored within that
    fraction of the tensor's largest magnitude at its keyframe, and keyframes come
    ``LOSSY_KEYFRAME_FACTOR`` times less often.
    ``encoder``: where the lane transforms run: "numpy" (CPU), "torch" (on ``device``, e.g. "cuda:0": the
    device path) or "auto" (torch when ``device`` is a CUDA device that is present, else numpy, the faster
    one on a CPU). Every choice writes the same bytes; lossy tapes always use numpy.
    ``segment_digest``: put each segment's SHA-256 in its manifest entry — what SDK ingest checks of a segment
    that crossed a network (the SDK always sets it). Off, a tape relies on what is always there: every chunk's
    CRC-32 and the index's (which lists every chunk's offset, length and CRC), checked by every read and by
    verify(). The digest is 13-16 % of the writer's CPU (docs/performance.md).
    ``entropy``: how the numpy encoder codes blocks: "native" (the C codec, native.py: prediction, symbols and
    Huffman coding fused, format 3), "zstd" (byte planes, each a zstd frame, format 2) or "auto" (native when
    it is built, else zstd with one log line). The torch encoder always writes zstd byte planes."""

    segment_target_bytes: int = 8 << 20
    segment_max_steps: int = 256
    zstd_level: int = 1
    zstd_threads: int = 0
    # A keyframe costs ~0.82 of raw, a delta ~0.43 (SGD): over 49 steps at batch 128, 32 -> 64 takes stored/raw
    # 0.4576 -> 0.4478 (SGD) and 0.5514 -> 0.5422 (Adam); a cold read walks at most 63 deltas, at the native
    # decoder's ~0.9-1 GB/s per thread no longer than 31 did at 0.3-0.4 GB/s (docs/performance.md).
    keyframe_interval: int = 64
    block_lanes: int = 1 << 18  # 1 MiB of float32 per chunk
    threads: int = 1
    thread_nice: int = 0
    lossy_rel_error: float | None = None
    encoder: str = "auto"
    device: str | None = None
    entropy: str = "auto"
    segment_digest: bool = False

    def __post_init__(self) -> None:
        if self.encoder not in ENCODERS:
            raise ValueError(f"encoder must be one of {', '.join(ENCODERS)}, got {self.encoder!r}")
        if self.entropy not in ENTROPY:
            raise ValueError(f"entropy must be one of {', '.join(ENTROPY)}, got {self.entropy!r}")
        if self.segment_target_bytes <= 0 or self.segment_max_steps <= 0:
            raise ValueError("segment_target_bytes and segment_max_steps must be positive")
        if self.keyframe_interval < 1:
            raise ValueError(f"keyframe_interval must be >= 1, got {self.keyframe_interval}")
        if self.block_lanes < 1024:
            raise ValueError(f"block_lanes must be >= 1024, got {self.block_lanes}")
        if self.lossy_rel_error is not None and not (1e-6 <= self.lossy_rel_error <= 0.1):
            raise ValueError(f"lossy_rel_error must be in [1e-6, 0.1], got {self.lossy_rel_error}")

    @property
    def lossy(self) -> bool:
        return self.lossy_rel_error is not None

    @property
    def effective_keyframe_interval(self) -> int:
        """Captured steps between keyframes as written (lossy tapes space them further apart)."""
        return self.keyframe_interval * (LOSSY_KEYFRAME_FACTOR if self.lossy else 1)

    def with_(self, **overrides: Any) -> TapeOptions:
        """A copy with some fields changed (unknown names are a TypeError naming the valid ones)."""
        names = {f.name for f in fields(self)}
        bad = sorted(set(overrides) - names)
        if bad:
            raise TypeError(f"unknown tape option(s) {', '.join(bad)}; valid: {', '.join(sorted(names))}")
        return replace(self, **overrides)

    @classmethod
    def from_settings(
        cls, settings: Settings, capture: CaptureConfig | None = None, **overrides: Any
    ) -> TapeOptions:
        """The options a server run uses: the deployment's Settings, the run's CaptureConfig (mode)."""
        lossy = capture.lossy_rel_error if capture is not None and capture.mode == "lossy" else None
        return cls(
            segment_target_bytes=settings.segment_target_bytes,
            segment_max_steps=settings.segment_max_steps,
            zstd_level=settings.zstd_level,
            keyframe_interval=settings.keyframe_interval,
            threads=max(1, settings.capture_threads),
            thread_nice=settings.capture_nice,
            lossy_rel_error=lossy,
        ).with_(**overrides)

    def describe(self) -> dict[str, Any]:
        """The manifest's ``writer`` block."""
        return {
            "mode": "lossy" if self.lossy else "lossless",
            "lossy_rel_error": self.lossy_rel_error,
            "entropy": self.entropy,
            "zstd_level": self.zstd_level,
            "zstd_threads": self.zstd_threads,
            "threads": self.threads,
            "keyframe_interval": self.effective_keyframe_interval,
            "block_lanes": self.block_lanes,
            "segment_target_bytes": self.segment_target_bytes,
            "segment_max_steps": self.segment_max_steps,
            "segment_digest": self.segment_digest,
        }
