"""LocalStore writes a large page-aligned buffer (a tape segment) with O_DIRECT, so the disk reads it straight
from the writer's buffer instead of the CPU copying it into fresh page-cache pages; everything else, and every
file system that refuses O_DIRECT, goes through the page cache as before. Either way the object's bytes are
exactly what was put, and a put stays atomic (temp file + rename)."""

from __future__ import annotations

import errno
import fcntl
import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from netlapse.core import store as store_mod
from netlapse.core.store import DIRECT_ALIGN, DIRECT_MIN_BYTES, LocalStore, aligned_empty
from netlapse.core.tape import TapeReader, TapeWriter, TensorInfo


def _supports_direct(d: Path) -> bool:
    if not hasattr(os, "O_DIRECT"):
        return False
    fd = os.open(d / "probe", os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        fcntl.fcntl(fd, fcntl.F_SETFL, fcntl.fcntl(fd, fcntl.F_GETFL) | os.O_DIRECT)
        return True
    except OSError:
        return False
    finally:
        os.close(fd)
        (d / "probe").unlink()


@pytest.fixture()
def direct_dir(tmp_path: Path) -> Path:
    """tmp_path where it takes O_DIRECT (ext4 here; tmpfs too since Linux 6.6). Where it does not (older
    tmpfs, some FUSE mounts) the tests that need a real direct write are skipped; the fallback and page-cache
    tests below run everywhere."""
    if not _supports_direct(tmp_path):
        pytest.skip("tmp_path's file system has no O_DIRECT, so no write there can be direct")
    return tmp_path


def _spy(store: LocalStore) -> list[int]:
    """Record what each _write_direct call wrote with O_DIRECT."""
    seen: list[int] = []
    real = store._write_direct

    def spy(fd: int, data: Any) -> int:
        n = real(fd, data)
        seen.append(n)
        return n

    store._write_direct = spy  # type: ignore[method-assign]
    return seen


def _random(n: int, seed: int = 0) -> np.ndarray:
    buf = aligned_empty(n)
    buf[:] = np.random.default_rng(seed).integers(0, 256, n, dtype=np.uint8)
    return buf


@pytest.mark.parametrize("size", [3 * DIRECT_MIN_BYTES + 1234, 2 * DIRECT_MIN_BYTES])
def test_a_large_aligned_buffer_is_written_direct_and_reads_back_the_same(
    direct_dir: Path, size: int
) -> None:
    store = LocalStore(direct_dir / "s")
    seen = _spy(store)
    buf = _random(size)
    assert buf.ctypes.data % DIRECT_ALIGN == 0
    store.put("t/segments/a.seg", buf.data)
    assert seen == [size - size % DIRECT_ALIGN], "the whole aligned head went to the disk directly"
    assert store.get("t/segments/a.seg") == buf.tobytes()
    # Overwritten in place by a shorter object: the old bytes do not show through, nothing temporary is left.
    short = _random(DIRECT_MIN_BYTES + 7, seed=1)
    store.put("t/segments/a.seg", short.data)
    assert store.get("t/segments/a.seg") == short.tobytes()
    assert [p.name for p in (direct_dir / "s" / "t" / "segments").iterdir()] == ["a.seg"]


def test_small_unaligned_or_immutable_buffers_go_through_the_page_cache(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "s")
    seen = _spy(store)
    big = _random(2 * DIRECT_MIN_BYTES + 100, seed=2)
    cases = {
        "small": big[: DIRECT_MIN_BYTES - 1].data,  # aligned, under the threshold
        "shifted": big[1:].data,  # large, one byte off the page boundary
        "bytes": big.tobytes(),  # an immutable copy: wherever it lies, the bytes must come back
    }
    for name, data in cases.items():
        store.put(f"t/{name}", data)
        assert store.get(f"t/{name}") == bytes(data)
    assert seen[:2] == [0, 0]


def test_a_file_system_that_refuses_o_direct_falls_back_once_and_loses_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[int] = []
    real = fcntl.fcntl

    def refusing(fd: int, cmd: int, arg: int = 0) -> Any:
        if cmd == fcntl.F_SETFL and arg & os.O_DIRECT:
            calls.append(fd)
            raise OSError(errno.EINVAL, "Invalid argument")
        return real(fd, cmd, arg)

    monkeypatch.setattr(store_mod.fcntl, "fcntl", refusing)
    store = LocalStore(tmp_path / "s")
    for i in range(3):
        buf = _random(DIRECT_MIN_BYTES + 4096 * i + 5, seed=i)
        store.put(f"t/{i}.seg", buf.data)
        assert store.get(f"t/{i}.seg") == buf.tobytes()
    assert len(calls) == 1 and store._direct is False


def test_a_tape_with_large_segments_is_written_direct_and_reads_back_bit_exact(direct_dir: Path) -> None:
    """The writer assembles segments in page-aligned buffers, so a LocalStore writes each one directly."""
    tensors = [TensorInfo("w", (700, 1000), "float32"), TensorInfo("b", (700,), "float32")]
    store = LocalStore(direct_dir / "s")
    seen = _spy(store)
    rng = np.random.default_rng(5)
    w0 = rng.standard_normal((700, 1000)).astype(np.float32)
    snaps = {}
    writer = TapeWriter(store, "t/", tensors, segment_max_steps=2)
    for step in range(5):
        snaps[step] = {
            "w": w0 - np.float32(1e-3) * step * rng.standard_normal((700, 1000)).astype(np.float32),
            "b": rng.standard_normal(700).astype(np.float32),
        }
        writer.append(step, snaps[step])
    writer.close()
    segments = [n for n in seen if n]
    assert len(segments) == 3 and all(n % DIRECT_ALIGN == 0 and n >= DIRECT_MIN_BYTES for n in segments)
    r = TapeReader(store, "t/")
    r.verify()  # sizes, index and every chunk's CRC-32 (raises TapeCorrupt)
    for step, snap in snaps.items():
        for name, want in snap.items():
            assert r.read(name, step).tobytes() == want.tobytes()
