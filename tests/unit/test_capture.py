"""The capture pipeline: backpressure instead of drops, writer errors surface, buffer reuse is safe."""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from netlapse.core.capture import (
    CaptureError,
    CapturePipeline,
    capturable_tensors,
    capture_device,
    torch_uses_openmp,
)
from netlapse.core.settings import Settings
from netlapse.core.store import LocalStore
from netlapse.core.tape import TapeReader, TapeWriter, TensorInfo


def small_model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(8, 16), nn.BatchNorm1d(16), nn.ReLU(), nn.Linear(16, 3))


def float_state(model: nn.Module) -> dict[str, np.ndarray]:
    """A deep copy of every floating-point state_dict tensor."""
    return {
        k: v.detach().cpu().numpy().copy() for k, v in model.state_dict().items() if v.is_floating_point()
    }


def train_step(model: nn.Module, opt: torch.optim.Optimizer, gen: torch.Generator) -> None:
    x = torch.randn(32, 8, generator=gen)
    y = torch.randint(0, 3, (32,), generator=gen)
    loss = nn.functional.cross_entropy(model(x), y)
    opt.zero_grad()
    loss.backward()
    opt.step()


def assert_same_bits(got: np.ndarray, want: np.ndarray) -> None:
    assert got.shape == want.shape and got.dtype == want.dtype
    assert np.array_equal(got.view(np.uint32), want.view(np.uint32))


class GatedWriter(TapeWriter):
    """A writer that cannot append until its gate opens: slower than any training loop."""

    gate: threading.Event

    def append(self, step: int, arrays: Mapping[str, np.ndarray], *, commit: bool = True) -> None:
        assert self.gate.wait(10), "gate never opened"
        super().append(step, arrays, commit=commit)


class FailingWriter(TapeWriter):
    """A writer whose upload path breaks at a given step."""

    fail_at = 2

    def append(self, step: int, arrays: Mapping[str, np.ndarray], *, commit: bool = True) -> None:
        if step == self.fail_at:
            raise OSError(f"disk full at step {step}")
        super().append(step, arrays, commit=commit)


@pytest.fixture
def store(tmp_path: Path) -> LocalStore:
    return LocalStore(tmp_path / "store")


def test_capturable_tensors_are_float_state_in_state_dict_order() -> None:
    model = small_model()
    infos = capturable_tensors(model)
    names = [k for k, v in model.state_dict().items() if v.is_floating_point()]
    assert [t.name for t in infos] == names
    assert "1.running_mean" in names and "1.num_batches_tracked" not in names  # BN stats yes, int counter no
    assert infos[0] == TensorInfo("0.weight", (16, 8), "float32")
    with pytest.raises(ValueError, match="bfloat16"):
        capturable_tensors(nn.Linear(2, 2).to(torch.bfloat16))


def test_slow_writer_makes_training_wait_and_drops_nothing(store: LocalStore) -> None:
    model = small_model()
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    gen = torch.Generator().manual_seed(1)
    writer = GatedWriter(store, "t/", capturable_tensors(model), segment_max_steps=5)
    writer.gate = threading.Event()
    pipe = CapturePipeline(model, writer, buffers=2, mode="thread")
    expected = {0: float_state(model)}
    pipe.capture(0)
    for step in range(1, 16):
        train_step(model, opt, gen)
        expected[step] = float_state(model)
        if step == 2:
            # Both buffers are in flight and the writer is stuck for 0.3 s: this capture must wait, not drop.
            threading.Timer(0.3, writer.gate.set).start()
        pipe.capture(step)
    stats = pipe.close()
    assert stats.wait_seconds > 0.2, "training must block while the writer is behind"
    assert stats.steps == 16
    assert stats.raw_bytes == writer.raw_bytes > 0 and stats.stored_bytes == writer.stored_bytes > 0
    r = TapeReader(store, "t/")
    assert r.steps() == list(range(16)) and r.complete
    for step, snap in expected.items():
        for name, want in snap.items():
            assert_same_bits(r.read(name, step), want)


@pytest.mark.parametrize("mode", ["thread", "inline"])
def test_buffer_reuse_does_not_corrupt_snapshots(store: LocalStore, mode: str) -> None:
    """A single buffer is reused for every step; each step must still read back what the model held."""
    model = small_model()
    opt = torch.optim.Adam(model.parameters(), lr=0.05)
    gen = torch.Generator().manual_seed(2)
    writer = TapeWriter(store, "t/", capturable_tensors(model), segment_max_steps=4)
    expected = {}
    with CapturePipeline(model, writer, buffers=1, mode=mode) as pipe:
        for step in range(25):
            if step:
                train_step(model, opt, gen)
            expected[step] = float_state(model)
            pipe.capture(step)
    assert pipe.stats.steps == 25
    r = TapeReader(store, "t/")
    assert r.steps() == list(range(25))
    changed = 0
    for step, snap in expected.items():
        for name, want in snap.items():
            got = r.read(name, step)
            assert_same_bits(got, want)
            if step and not np.array_equal(want, expected[step - 1][name]):
                changed += 1
    assert changed > 0, "the model must actually change for this test to mean anything"


def test_writer_error_surfaces_in_capture_with_its_cause(store: LocalStore) -> None:
    model = small_model()
    writer = FailingWriter(store, "t/", capturable_tensors(model))
    pipe = CapturePipeline(model, writer, buffers=1, mode="thread")
    pipe.capture(0)
    pipe.capture(1)
    pipe.capture(2)  # accepted; the writer fails on it in the background
    with pytest.raises(CaptureError, match="step 2.*disk full") as exc:
        pipe.capture(3)  # with one buffer this waits for step 2's append, which failed
    assert isinstance(exc.value.__cause__, OSError)
    with pytest.raises(CaptureError, match="disk full"):
        pipe.close()
    with pytest.raises(CaptureError):
        pipe.close(complete=False)  # a second close repeats the error instead of hanging
    r = TapeReader(store, "t/")
    assert not r.complete, "a tape whose capture failed must not claim to be complete"
    assert r.steps() == [0, 1]


def test_writer_error_surfaces_in_close(store: LocalStore) -> None:
    model = small_model()
    writer = FailingWriter(store, "t/", capturable_tensors(model))
    writer.fail_at = 4
    pipe = CapturePipeline(model, writer, buffers=8, mode="thread")
    for step in range(5):
        pipe.capture(step)
    with pytest.raises(CaptureError, match="step 4") as exc:
        pipe.close()
    assert isinstance(exc.value.__cause__, OSError)


@pytest.mark.parametrize("mode", ["thread", "inline"])
def test_error_in_training_closes_the_tape_incomplete(store: LocalStore, mode: str) -> None:
    model = small_model()
    writer = TapeWriter(store, "t/", capturable_tensors(model))
    with pytest.raises(RuntimeError, match="boom"), CapturePipeline(model, writer, mode=mode) as pipe:
        pipe.capture(0)
        raise RuntimeError("boom")
    r = TapeReader(store, "t/")
    assert r.steps() == [0] and not r.complete


@pytest.mark.parametrize("mode", ["thread", "inline"])
def test_capture_rejects_non_increasing_steps_and_use_after_close(store: LocalStore, mode: str) -> None:
    model = small_model()
    pipe = CapturePipeline(model, TapeWriter(store, "t/", capturable_tensors(model)), mode=mode)
    pipe.capture(3)
    with pytest.raises(ValueError, match="strictly increase"):
        pipe.capture(3)
    pipe.close()
    with pytest.raises(RuntimeError, match="closed"):
        pipe.capture(4)


def test_pipeline_refuses_a_writer_for_another_model(store: LocalStore) -> None:
    writer = TapeWriter(store, "t/", capturable_tensors(nn.Linear(3, 3)))
    with pytest.raises(ValueError, match="differ"):
        CapturePipeline(small_model(), writer)


def test_capture_is_concurrent_with_the_writer(store: LocalStore) -> None:
    """capture() returns before the writer has appended: the encode runs on another thread."""
    model = small_model()
    started = threading.Event()
    release = threading.Event()

    class BlockingWriter(TapeWriter):
        def append(self, step: int, arrays: Mapping[str, np.ndarray], *, commit: bool = True) -> None:
            started.set()
            release.wait(5)
            super().append(step, arrays, commit=commit)

    pipe = CapturePipeline(
        model, BlockingWriter(store, "t/", capturable_tensors(model)), buffers=2, mode="thread"
    )
    pipe.capture(0)
    assert started.wait(5)
    t0 = time.perf_counter()
    pipe.capture(1)  # a second free buffer exists: no wait although the writer is stuck
    assert time.perf_counter() - t0 < 1.0
    assert pipe.stats.steps == 0
    release.set()
    assert pipe.close().steps == 2


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_capture_is_bit_exact(store: LocalStore) -> None:
    model = small_model().cuda()
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    writer = TapeWriter(store, "t/", capturable_tensors(model), segment_max_steps=6)
    pipe = CapturePipeline(model, writer, buffers=2)
    assert pipe.cuda
    expected = {}
    for step in range(20):
        if step:
            x = torch.randn(256, 8, device="cuda")
            y = torch.randint(0, 3, (256,), device="cuda")
            loss = nn.functional.cross_entropy(model(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
        pipe.capture(step)
        expected[step] = float_state(model)  # .cpu() syncs the training stream, not the capture stream
    pipe.close()
    r = TapeReader(store, "t/")
    for step, snap in expected.items():
        for name, want in snap.items():
            assert_same_bits(r.read(name, step), want)


@pytest.mark.parametrize("mode", ["thread", "inline"])
def test_low_priority_multithreaded_writer_is_exact_and_reports_its_own_cost(
    store: LocalStore, mode: str
) -> None:
    model = small_model()
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    gen = torch.Generator().manual_seed(4)
    writer = TapeWriter(store, "t/", capturable_tensors(model), threads=2, thread_nice=5, keyframe_interval=4)
    expected = {}
    with CapturePipeline(model, writer, buffers=2, nice=5, mode=mode) as pipe:
        for step in range(12):
            if step:
                train_step(model, opt, gen)
            expected[step] = float_state(model)
            pipe.capture(step)
    stats = pipe.stats
    assert stats.steps == 12 and stats.encode_seconds > 0 and stats.commit_seconds > 0
    r = TapeReader(store, "t/")
    for step, snap in expected.items():
        for name, want in snap.items():
            assert_same_bits(r.read(name, step), want)


def test_parameters_only_leaves_buffers_out(store: LocalStore) -> None:
    """include_buffers=False: every parameter (frozen ones too) in module order, no BatchNorm statistics."""
    model = small_model()
    model[0].bias.requires_grad_(False)  # frozen: still captured, and never changes
    names = [t.name for t in capturable_tensors(model, include_buffers=False)]
    assert names == ["0.weight", "0.bias", "1.weight", "1.bias", "3.weight", "3.bias"]
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1)
    gen = torch.Generator().manual_seed(3)
    writer = TapeWriter(store, "t/", capturable_tensors(model, include_buffers=False))
    with pytest.raises(ValueError, match="include_buffers=True"):
        CapturePipeline(model, writer)
    expected = {}
    with CapturePipeline(model, writer, include_buffers=False) as pipe:
        for step in range(4):
            if step:
                train_step(model, opt, gen)
            expected[step] = {k: v for k, v in float_state(model).items() if k in names}
            pipe.capture(step)
    r = TapeReader(store, "t/")
    assert [t.name for t in r.tensors()] == names
    for step, snap in expected.items():
        for name, want in snap.items():
            assert_same_bits(r.read(name, step), want)
    assert np.array_equal(r.read("0.bias", 3), r.read("0.bias", 0))
    assert not np.array_equal(r.read("0.weight", 3), r.read("0.weight", 0))


class RecordingWriter(TapeWriter):
    """A writer that notes what kind of arrays the pipeline hands it."""

    kinds: list[str]

    def append(self, step: int, arrays: Mapping[str, object], *, commit: bool = True) -> None:
        self.kinds.extend(sorted({type(a).__name__ for a in arrays.values()}))
        super().append(step, arrays, commit=commit)


@pytest.mark.parametrize("buffers", [1, 3])
def test_torch_encoder_gets_torch_views_of_the_buffer_and_the_tape_is_bit_exact(
    store: LocalStore, buffers: int
) -> None:
    """The device path, driven on the CPU: TapeOptions(encoder="torch", device="cpu") makes the pipeline keep
    its buffers as torch tensors on that device and hand the writer torch views (the code path a CUDA model
    takes with its GPU); every step decodes bit-exactly and matches a numpy-encoded tape of the same run."""
    model = small_model()
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    gen = torch.Generator().manual_seed(5)
    infos = capturable_tensors(model)
    writer = RecordingWriter(store, "dev/", infos, encoder="torch", device="cpu", segment_max_steps=5)
    writer.kinds = []
    assert writer.encoder == "torch"
    # Byte planes on both sides: the torch encoder always writes zstd planes (the native codec is CPU-only).
    reference = TapeWriter(store, "np/", infos, encoder="numpy", entropy="zstd", segment_max_steps=5)
    expected = {}
    with CapturePipeline(model, writer, buffers=buffers) as pipe:
        assert pipe.hand_torch and pipe.buffer_device == torch.device("cpu") and not pipe.device_path
        for step in range(30):
            if step:
                train_step(model, opt, gen)
            expected[step] = float_state(model)
            reference.append(step, expected[step])
            pipe.capture(step)
    reference.close()
    assert pipe.stats.steps == 30 and set(writer.kinds) == {"Tensor"}
    assert pipe.stats.writer_cpu_seconds > 0
    r = TapeReader(store, "dev/")
    assert r.steps() == list(range(30)) and r.complete
    assert r.manifest["writer"]["encoder"] == "torch"
    for step, snap in expected.items():
        for name, want in snap.items():
            assert_same_bits(r.read(name, step), want)
    # Both encoders write the same bytes: the segments are identical.
    seg = sorted(store.list("dev/segments/"))
    assert [k.removeprefix("dev/") for k in seg] == [
        k.removeprefix("np/") for k in sorted(store.list("np/segments/"))
    ]
    for k in seg:
        assert store.get(k) == store.get("np/" + k.removeprefix("dev/"))


@pytest.mark.parametrize("mode", ["thread", "inline"])
def test_numpy_encoder_gets_numpy_views_of_host_memory(store: LocalStore, mode: str) -> None:
    model = small_model()
    writer = RecordingWriter(store, "t/", capturable_tensors(model), encoder="numpy")
    writer.kinds = []
    with CapturePipeline(model, writer, buffers=2, mode=mode) as pipe:
        assert not pipe.hand_torch and not pipe.device_path
        pipe.capture(0)
    assert set(writer.kinds) == {"ndarray"}


def test_device_path_without_nvcomp_says_so_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Captures through the torch encoder fall back to CPU entropy coding without nvCOMP: one log line says so,
    however many runs start in the process."""
    import logging

    from netlapse.core.tape import transform as tape_transform

    monkeypatch.setattr(tape_transform, "_FALLBACK_LOGGED", False)
    with caplog.at_level(logging.INFO, logger="netlapse.core.tape"):
        for p in ("a/", "b/"):
            model = small_model()
            store = LocalStore(tmp_path / p)
            w = TapeWriter(store, p, capturable_tensors(model), encoder="torch", device="cpu")
            with CapturePipeline(model, w) as pipe:
                pipe.capture(0)
            assert TapeReader(store, p).steps() == [0]
    lines = [r.getMessage() for r in caplog.records if "nvCOMP" in r.getMessage()]
    assert len(lines) == 1, lines


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_device_path_keeps_the_snapshot_on_the_gpu_and_is_bit_exact(store: LocalStore) -> None:
    model = small_model().cuda()
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    writer = TapeWriter(
        store, "t/", capturable_tensors(model), encoder="torch", device="cuda", segment_max_steps=6
    )
    pipe = CapturePipeline(model, writer, buffers=2)
    assert pipe.device_path and pipe.buffer_device.type == "cuda"
    expected = {}
    for step in range(20):
        if step:
            x = torch.randn(256, 8, device="cuda")
            y = torch.randint(0, 3, (256,), device="cuda")
            loss = nn.functional.cross_entropy(model(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
        pipe.capture(step)
        expected[step] = float_state(model)
    pipe.close()
    r = TapeReader(store, "t/")
    for step, snap in expected.items():
        for name, want in snap.items():
            assert_same_bits(r.read(name, step), want)


def test_capture_device_names_the_gpu_only_for_a_model_on_one_gpu() -> None:
    """A CPU model keeps the CPU encoder (TapeOptions(device=None): "auto" = numpy)."""
    assert capture_device(small_model()) is None
    if torch.cuda.is_available():
        assert capture_device(small_model().cuda()) == f"cuda:{torch.cuda.current_device()}"


@pytest.mark.parametrize("mode", ["thread", "inline"])
def test_non_contiguous_parameters_are_copied_by_value(store: LocalStore, mode: str) -> None:
    """The host copy is a memcpy per tensor: a channels_last conv weight (strided) and a transposed parameter
    still land in the buffer in logical order, bit for bit."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.Flatten(), nn.Linear(8 * 6 * 6, 4))
    model = model.to(memory_format=torch.channels_last)
    with torch.no_grad():
        model[2].weight = nn.Parameter(model[2].weight.detach().t().contiguous().t())  # a transposed view
    assert not model[0].weight.is_contiguous() and not model[2].weight.is_contiguous()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    gen = torch.Generator().manual_seed(7)
    writer = TapeWriter(store, "t/", capturable_tensors(model))
    expected = {}
    with CapturePipeline(model, writer, buffers=2, mode=mode) as pipe:
        for step in range(5):
            if step:
                x = torch.randn(4, 3, 8, 8, generator=gen).to(memory_format=torch.channels_last)
                loss = model(x).square().mean()
                opt.zero_grad()
                loss.backward()
                opt.step()
            expected[step] = float_state(model)
            pipe.capture(step)
    r = TapeReader(store, "t/")
    for step, snap in expected.items():
        for name, want in snap.items():
            assert_same_bits(r.read(name, step), np.ascontiguousarray(want))


@pytest.mark.parametrize("mode", ["thread", "inline"])
def test_captures_follow_replaced_parameters_and_hooks(store: LocalStore, mode: str) -> None:
    """A capture reads parameters and buffers straight from their modules (no state_dict() per step), so it
    must see what state_dict() would: a parameter replaced by a new one (or its .data swapped) is captured
    with its new values, a reshaped one is an error, and a model with a state-dict hook keeps state_dict()."""
    model = small_model()
    writer = TapeWriter(store, "t/", capturable_tensors(model))
    pipe = CapturePipeline(model, writer, buffers=2, mode=mode)
    assert pipe._direct is not None
    expected = {0: float_state(model)}
    pipe.capture(0)
    model[0].weight = nn.Parameter(torch.full_like(model[0].weight, 0.5))
    expected[1] = float_state(model)
    pipe.capture(1)
    model[3].bias.data = torch.full_like(model[3].bias, -2.0)
    model[1].running_mean.fill_(3.0)
    expected[2] = float_state(model)
    pipe.capture(2)
    model[3].bias = nn.Parameter(torch.zeros(5))
    with pytest.raises(RuntimeError, match="changed since capture started"):
        pipe.capture(3)
    pipe.close()
    r = TapeReader(store, "t/")
    for step, snap in expected.items():
        for name, want in snap.items():
            assert_same_bits(r.read(name, step), want)
    assert np.all(r.read("0.weight", 1) == 0.5) and np.all(r.read("3.bias", 2) == -2.0)

    hooked = small_model()
    hooked.register_state_dict_pre_hook(lambda module, prefix, keep_vars: None)
    w2 = TapeWriter(store, "h/", capturable_tensors(hooked))
    with CapturePipeline(hooked, w2) as p2:
        assert p2._direct is None
        p2.capture(0)
    assert_same_bits(TapeReader(store, "h/").read("0.weight", 0), float_state(hooked)["0.weight"])


class GatedStore(LocalStore):
    """A store whose segment uploads wait for a gate (a slow disk or network), or fail from the n-th on."""

    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.gate = threading.Event()
        self.gate.set()
        self.fail_from: int | None = None
        self.segment_puts = 0

    def put(self, key: str, data: bytes) -> None:
        if "/segments/" in key:
            assert self.gate.wait(10), "gate never opened"
            self.segment_puts += 1
            if self.fail_from is not None and self.segment_puts >= self.fail_from:
                raise OSError(f"no space left uploading {key}")
        super().put(key, data)


def test_inline_capture_encodes_on_the_caller_and_uploads_behind_it(tmp_path: Path) -> None:
    """Inline: capture() has encoded the step when it returns (no copy, no buffer pool); a slow upload does
    not stall training until ``buffers`` sealed segments wait for it; then training waits; nothing is lost."""
    store = GatedStore(tmp_path / "s")
    model = small_model()
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    gen = torch.Generator().manual_seed(5)
    writer = TapeWriter(store, "t/", capturable_tensors(model), segment_max_steps=2)
    pipe = CapturePipeline(model, writer, buffers=2, mode="inline")
    assert pipe.mode == "inline" and pipe._pool.empty()
    store.gate.clear()
    expected = {}
    for step in range(5):  # seals segments [0,1] and [2,3]: both wait for the gate, training does not
        if step:
            train_step(model, opt, gen)
        expected[step] = float_state(model)
        pipe.capture(step)
        assert pipe.stats.steps == step + 1 and writer.raw_bytes == (step + 1) * sum(
            t.nbytes for t in writer.tensors
        )
    assert pipe.stats.wait_seconds == 0 and writer.last_committed_step is None

    def train_on() -> None:  # [4,5] and [6,7] are sealed too: with two waiting, the next capture blocks
        for step in range(5, 12):
            train_step(model, opt, gen)
            expected[step] = float_state(model)
            pipe.capture(step)

    loop = threading.Thread(target=train_on)
    loop.start()
    deadline = time.monotonic() + 10
    last = -1
    while time.monotonic() < deadline:  # until training stops making progress
        time.sleep(0.3)
        if pipe.stats.steps == last:
            break
        last = pipe.stats.steps
    # Blocked: one segment in the upload, `buffers` sealed ones waiting, the step that sealed the last held.
    assert loop.is_alive() and writer.pending_segments == 4 and writer.last_committed_step is None
    store.gate.set()
    loop.join(10)
    stats = pipe.close()
    assert stats.wait_seconds > 0.25 and stats.steps == 12 and stats.writer_cpu_seconds > 0
    r = TapeReader(store, "t/")
    assert r.complete and r.steps() == list(range(12))
    for step, snap in expected.items():
        for name, want in snap.items():
            assert_same_bits(r.read(name, step), want)


def test_inline_upload_failure_surfaces_in_the_next_capture(tmp_path: Path) -> None:
    store = GatedStore(tmp_path / "s")
    store.fail_from = 2
    model = small_model()
    writer = TapeWriter(store, "t/", capturable_tensors(model), segment_max_steps=2)
    pipe = CapturePipeline(model, writer, buffers=4, mode="inline")
    with pytest.raises(CaptureError, match="no space left") as exc:
        for step in range(20):
            pipe.capture(step)
            time.sleep(0.01)  # let the upload thread run
    assert isinstance(exc.value.__cause__, OSError)
    with pytest.raises(CaptureError):
        pipe.close()
    r = TapeReader(store, "t/")
    assert not r.complete and r.steps() == [0, 1], "the segment uploaded before the failure stays readable"


def test_auto_is_the_default_inline_on_torchs_team_else_thread_and_inline_needs_a_cpu_model(
    store: LocalStore,
) -> None:
    model = small_model()
    infos = capturable_tensors(model)
    assert Settings().capture_mode == "auto" and torch_uses_openmp()
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        with CapturePipeline(model, TapeWriter(store, "a/", infos)) as pipe:
            assert pipe.mode == "inline", (
                "a CPU model with torch on an OpenMP team codes inline, on that team"
            )
            pipe.capture(0)
            pipe.capture(1)
        assert pipe.stats.steps == 2 and pipe.stats.writer_cpu_seconds > 0
        torch.set_num_threads(1)  # no other thread of torch's to borrow: a writer thread of its own
        with CapturePipeline(model, TapeWriter(store, "b/", infos)) as pipe:
            assert pipe.mode == "thread"
    finally:
        torch.set_num_threads(before)
    torch_writer = TapeWriter(store, "c/", infos, encoder="torch", device="cpu")
    with CapturePipeline(model, torch_writer) as pipe:
        assert pipe.mode == "thread", "the torch encoder (the device path) codes on the writer thread"
    with pytest.raises(ValueError, match="needs the model on the CPU and the numpy encoder"):
        CapturePipeline(model, TapeWriter(store, "d/", infos, encoder="torch", device="cpu"), mode="inline")
    with pytest.raises(ValueError, match="capture mode must be one of auto, thread, inline"):
        CapturePipeline(model, TapeWriter(store, "e/", infos), mode="fast")
