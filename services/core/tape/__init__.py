"""The snapshot tape: every captured tensor at every captured step, lossless by default, with random access.

Modules: ``lanes`` (integer lanes and their transforms), ``container`` (object layout, index, format),
``options`` (TapeOptions), ``planes`` (format-2 chunks), ``transform`` (lane transforms in numpy and torch),
``writer`` (step-major segments), ``timemajor`` (compaction frames), ``reader``, ``readparts`` (the
objects a reader lists, its decoded states and block decoders), ``trajectories`` (one
element's values over steps, for the reader), ``legacy`` (format-1 tensor-major segments), ``native`` (the
ctypes binding of the C codec ``nlcodec.c``). Every public name is importable from this package.

Layout under a tape prefix (a run's is ``runs/{id}/tape/``)::

    manifest.json                              the writer's index, rewritten (last) after each segment upload
    segments/{first:012d}-{last:012d}.seg      step-major segments, immutable once listed
    compaction.json                            the compactor's index, written last after its objects
    compact/{first:012d}-{last:012d}.{n}.tm    time-major parts, immutable once listed

**Lanes.** Every tensor is viewed as a flat array of integer *lanes*: float16/32/64 as int16/32/64 with the
order-preserving "monotone" map (flip the magnitude bits of negatives), so integer differences are distances
in ULPs; complex as two float lanes per element; ints and bools as themselves. All arithmetic on lanes is
integer arithmetic that wraps, so decoding is exact on every machine and NaN payloads, -0.0 and subnormals
round-trip bit-exact.

**Step-major segments** (``kind: "step-major"``, what training writes). A segment holds consecutive captured
steps. Each (tensor, step) is cut into blocks of at most ``block_lanes`` lanes, each block one zstd frame
("chunk"). Each tensor's chunks are one run of bytes, step then block, so one tensor over a run of steps is
one range read; the largest tensor's run comes first (the writer codes it straight into the segment buffer),
the others follow in tensor order (rows of the index stay tensor-major: the offsets say where each chunk is).
A chunk is either a keyframe (the raw bits, byte-shuffled) or a delta: the residual ``m_t - p`` against a
prediction ``p = m_{t-1}`` (mode D1) or ``p = 2 m_{t-1} - m_{t-2}`` (D2, linear extrapolation, which suits
momentum optimizers), zigzag-mapped so small residuals of either sign have zero high bytes, byte-shuffled
(plane by plane) and zstd-compressed. Keyframes come every ``keyframe_interval`` captured steps for all
tensors, independent of segment boundaries: deltas chain across segments, and a reader walks back to the
nearest keyframe (or decoded state it has cached). Per-chunk mode and crc32 sit in the segment's index.

**Lossy mode** (opt-in per tape): keyframes stay lossless; later steps of a float tensor are stored as the
integer grid index ``K = round((x - key) / q)`` with ``q = 2 * rel_error * max|key|``, where ``key`` is the
tensor at its last keyframe. Because ``K`` is measured against the keyframe, a quantization error never
accumulates (error feedback for free): ``|x - (key + K q)| <= q / 2`` plus the float rounding of the result.
The ``K`` lanes then go through the same predictor/zigzag/zstd path.

**Time-major parts** (``kind: "time-major"``, written by compaction; lossless tapes only). A compaction
*unit* replaces whole step-major segments. Inside it, steps form groups of ``group_steps``; each (block of
``block_lanes`` lanes, group) is one zstd frame holding the group's first step as raw lanes then every
lane's residuals over time, element-major (a lane's trajectory is contiguous). A unit is split into parts of
about ``part_bytes`` along the blocks, so objects stay 1-16 MB however wide the model is. The compactor
verifies every unit bit-exact against the step-major data before it writes ``compaction.json`` and only then
deletes the replaced segments; a reader that finds a replaced segment gone re-reads both indexes.

Every object ends with an index and a fixed trailer::

    [chunks][index = zstd(u32 header_len | header JSON | int64 table[rows, 5])][trailer]
    table row = (offset, length, crc32 of the compressed chunk, mode, param)
    trailer = b"NLTSEG01" | u64 index_offset | u64 index_length | u32 index_crc32 | u32 reserved

Manifest ``format`` 1 still lists the legacy ``"tensor-major"`` kind (XOR deltas restarting at every
segment) that earlier versions wrote; this reader reads it, the writer no longer writes it.
"""

from __future__ import annotations

from netlapse.core.store import StoreError
from netlapse.core.tape.container import (
    CODEC,
    CODEC_LOSSY,
    CODEC_V1,
    COMPACT_DIR,
    COMPACTION_NAME,
    DEFAULT_TM_BLOCK_LANES,
    FORMAT,
    KIND_STEP_MAJOR,
    KIND_TENSOR_MAJOR,
    KIND_TIME_MAJOR,
    MANIFEST_NAME,
    SEGMENTS_DIR,
    StepNotCaptured,
    TapeCorrupt,
    TensorInfo,
    UnknownTensor,
    pack_object,
)
from netlapse.core.tape.lanes import MODE_D1, MODE_D2, MODE_KEY, shuffle_bytes, unshuffle_bytes
from netlapse.core.tape.options import LOSSY_KEYFRAME_FACTOR, TapeOptions
from netlapse.core.tape.reader import TapeReader
from netlapse.core.tape.timemajor import (
    decode_time_major_chunk,
    decode_time_major_lanes,
    encode_time_major_chunk,
)
from netlapse.core.tape.writer import TapeWriter

DEFAULT_BLOCK_LANES = TapeOptions.block_lanes
DEFAULT_KEYFRAME_INTERVAL = TapeOptions.keyframe_interval

__all__ = [
    "CODEC",
    "CODEC_LOSSY",
    "CODEC_V1",
    "COMPACTION_NAME",
    "COMPACT_DIR",
    "DEFAULT_BLOCK_LANES",
    "DEFAULT_KEYFRAME_INTERVAL",
    "DEFAULT_TM_BLOCK_LANES",
    "FORMAT",
    "KIND_STEP_MAJOR",
    "KIND_TENSOR_MAJOR",
    "KIND_TIME_MAJOR",
    "LOSSY_KEYFRAME_FACTOR",
    "MANIFEST_NAME",
    "MODE_D1",
    "MODE_D2",
    "MODE_KEY",
    "SEGMENTS_DIR",
    "StepNotCaptured",
    "StoreError",
    "TapeCorrupt",
    "TapeOptions",
    "TapeReader",
    "TapeWriter",
    "TensorInfo",
    "UnknownTensor",
    "decode_time_major_chunk",
    "decode_time_major_lanes",
    "encode_time_major_chunk",
    "pack_object",
    "shuffle_bytes",
    "unshuffle_bytes",
]
