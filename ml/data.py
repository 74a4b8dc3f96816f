"""Datasets as uint8 arrays: CIFAR-10 and Fashion-MNIST read from their standard files, or an image
folder (`train/<class>/*`, `test/<class>/*`) decoded with Pillow. Decoded splits are cached per
process, so a worker decodes each dataset once; subsets and statistics are cheap on top of that."""

from __future__ import annotations

import contextlib
import functools
import gzip
import pickle
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from PIL import Image, ImageOps

from ml import downloads
from ml.downloads import CIFAR10_FILES, CIFAR10_FOLDER
from ml.specs import DatasetSpec

__all__ = ["DatasetBundle", "DatasetError", "ImageSet", "channel_stats", "load_dataset", "stratified_indices"]

CIFAR10_TRAIN_BATCHES = tuple(name for name in CIFAR10_FILES if name.startswith("data_batch_"))
FMNIST_SYSTEM_DIR = Path("/usr/share/datasets/fashion-mnist")  # Debian's dataset-fashion-mnist
FMNIST_TORCHVISION_DIR = Path("FashionMNIST") / "raw"  # relative to DATA_DIR
FMNIST_FILES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)
FMNIST_CLASSES = (
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
)
IDX_IMAGES_MAGIC = 2051  # 0x00000803: unsigned bytes, 3 dimensions
IDX_LABELS_MAGIC = 2049  # 0x00000801: unsigned bytes, 1 dimension
SPLITS_CACHE_SIZE = 4  # full CIFAR-10 is ~180 MB of uint8; four datasets per worker is plenty
MAX_IMAGE_PIXELS = 64_000_000  # 8000x8000: above any photo we'd train on, below a decompression bomb
Image.MAX_IMAGE_PIXELS = min(Image.MAX_IMAGE_PIXELS or MAX_IMAGE_PIXELS, MAX_IMAGE_PIXELS)
_Stamp = tuple[tuple[str, int, int], ...]  # (path, size, mtime) per file
_Files = tuple[tuple[str, int], ...]  # (path, label) per image


class DatasetError(ValueError):
    """A dataset is missing or unreadable; the message says what and what to do about it."""


@dataclass(frozen=True)
class ImageSet:
    images: np.ndarray  # uint8 (N, H, W, C)
    labels: np.ndarray  # int64 (N,)

    def __len__(self) -> int:
        return len(self.labels)


@dataclass(frozen=True)
class DatasetBundle:
    name: str
    train: ImageSet
    test: ImageSet
    classes: list[str]
    mean: tuple[float, ...]  # per channel, in [0, 1], of the (subset) training images
    std: tuple[float, ...]

    @property
    def in_channels(self) -> int:
        return int(self.train.images.shape[3])

    @property
    def image_size(self) -> int:
        return int(self.train.images.shape[1])

    @property
    def num_classes(self) -> int:
        return len(self.classes)


@dataclass(frozen=True)
class _Splits:
    train: ImageSet
    test: ImageSet
    classes: tuple[str, ...]


def load_dataset(spec: DatasetSpec, data_dir: Path, *, on_download: downloads.OnBytes | None = None) -> DatasetBundle:
    """The dataset `spec` names, read from under `data_dir`, subset and with its statistics.
    CIFAR-10 is downloaded when absent (unless LRCAM_OFFLINE=1), `on_download(bytes, total)` told."""
    data_dir = Path(data_dir)
    if spec.name == "cifar10":
        splits = _cifar10(data_dir, on_download)
    elif spec.name == "fashion_mnist":
        splits = _fashion_mnist(data_dir)
    elif spec.folder is not None:  # image_folder, or uploaded: the image folder its import wrote
        splits = _image_folder(data_dir, spec.folder, spec.image_size)
    else:  # the spec's Literal makes this unreachable for validated specs
        raise ValueError(f"unknown dataset {spec.name!r}; expected cifar10, fashion_mnist, image_folder or uploaded")
    train, test = _subset(splits.train, spec.train_subset), _subset(splits.test, spec.test_subset)
    mean, std = channel_stats(train.images)
    return DatasetBundle(spec.name, train, test, list(splits.classes), mean, std)


def stratified_indices(labels: np.ndarray, n: int) -> np.ndarray:
    """Indices of the first `n` items, stratified: per-class quotas proportional to the class
    frequencies (largest remainder), the first items of each class, in their original order."""
    if n >= len(labels):
        return np.arange(len(labels))
    classes, counts = np.unique(labels, return_counts=True)
    exact = counts * n / len(labels)
    quotas = np.floor(exact).astype(np.int64)
    by_remainder = np.argsort(-(exact - quotas), kind="stable")  # ties: the lower class first
    quotas[by_remainder[: n - int(quotas.sum())]] += 1
    chosen = [np.flatnonzero(labels == c)[:q] for c, q in zip(classes, quotas)]
    return np.sort(np.concatenate(chosen))


def channel_stats(images: np.ndarray) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and std in [0, 1] of uint8 (N, H, W, C) images, exact, from histograms."""
    values = np.arange(256, dtype=np.float64) / 255.0
    means, stds = [], []
    for c in range(images.shape[3]):
        hist = np.bincount(images[..., c].ravel(), minlength=256).astype(np.float64)
        total = max(hist.sum(), 1.0)
        mean = float(hist @ values / total)
        var = float(hist @ (values - mean) ** 2 / total)
        means.append(round(mean, 6))
        stds.append(round(max(var, 0.0) ** 0.5, 6) or 1.0)  # a constant channel must not divide by 0
    return tuple(means), tuple(stds)


def _subset(images: ImageSet, n: int | None) -> ImageSet:
    if n is None or n >= len(images):
        return images
    keep = stratified_indices(images.labels, n)
    return ImageSet(images.images[keep], images.labels[keep])


def hold_out(images: ImageSet, fraction: float, *, seed: int) -> tuple[ImageSet, ImageSet]:
    """(rest, validation): a random `fraction` of `images` (at least one), stratified by class with
    stratified_indices' quotas, drawn from `seed`; both keep the original order."""
    n = min(len(images) - 1, max(1, round(fraction * len(images))))
    order = np.random.default_rng(seed).permutation(len(images))
    held = np.zeros(len(images), dtype=bool)
    held[order[stratified_indices(images.labels[order], n)]] = True
    return (ImageSet(images.images[~held], images.labels[~held]), ImageSet(images.images[held], images.labels[held]))


def _frozen(images: np.ndarray, labels: npt.ArrayLike) -> ImageSet:
    """An ImageSet for the cache: read-only, so no caller can change what later jobs get."""
    images, labels = np.ascontiguousarray(images, np.uint8), np.asarray(labels, np.int64)
    images.flags.writeable = labels.flags.writeable = False
    return ImageSet(images, labels)


def _stamp(paths: list[Path]) -> _Stamp:
    """What the cache keys on besides the name: the files' sizes and modification times."""
    return tuple((str(p), p.stat().st_size, p.stat().st_mtime_ns) for p in paths)


# --- CIFAR-10: the "python version" pickles ---------------------------------------------------


def _cifar10(data_dir: Path, on_download: downloads.OnBytes | None) -> _Splits:
    folder = data_dir / CIFAR10_FOLDER
    names = list(CIFAR10_FILES)
    missing = [name for name in names if not (folder / name).is_file()]
    if missing and downloads.offline():
        raise DatasetError(
            f"CIFAR-10 not found at {folder} and LRCAM_OFFLINE=1 "
            f"forbids downloading it: {downloads.offline_help(data_dir)}"
        )
    if missing:
        try:
            downloads.fetch_cifar10(data_dir, on_bytes=on_download)
        except downloads.DownloadFailed as exc:
            raise DatasetError(f"CIFAR-10 not found at {folder} and {exc}; {downloads.offline_help(data_dir)}") from exc
    folder = folder.resolve()
    return _cached_cifar10(folder, _stamp([folder / name for name in names]))


@functools.lru_cache(maxsize=SPLITS_CACHE_SIZE)
def _cached_cifar10(folder: Path, stamp: _Stamp) -> _Splits:
    del stamp  # only part of the cache key
    train = [_read_cifar_batch(folder / name) for name in CIFAR10_TRAIN_BATCHES]
    test = _read_cifar_batch(folder / "test_batch")
    meta = _unpickle(folder / "batches.meta")
    classes = tuple(name.decode() for name in meta.get(b"label_names", []))
    if len(classes) != 10:
        raise DatasetError(f"{folder / 'batches.meta'} has {len(classes)} label_names; CIFAR-10 has 10")
    images = np.concatenate([batch[0] for batch in train])
    labels = np.concatenate([batch[1] for batch in train])
    return _Splits(_frozen(images, labels), _frozen(*test), classes)


def _read_cifar_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    batch = _unpickle(path)
    data, labels = np.asarray(batch.get(b"data")), np.asarray(batch.get(b"labels", []), np.int64)
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072 or len(data) != len(labels):
        raise DatasetError(
            f"{path} is not a CIFAR-10 batch: expected b'data' uint8 (N, 3072) and N b'labels', "
            f"got {data.dtype} {data.shape} and {len(labels)}; re-create the folder"
        )
    if len(labels) and not 0 <= labels.min() <= labels.max() <= 9:
        raise DatasetError(f"{path} has labels outside 0..9 ({labels.min()}..{labels.max()})")
    return data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1), labels  # channel-planar -> NHWC


# What a CIFAR-10 batch needs to be rebuilt: numpy arrays and their dtypes (the dicts, lists, bytes
# and numbers around them need no import). Anything else in a file is refused, not run.
CIFAR_PICKLE_GLOBALS = frozenset(
    {
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy.core.multiarray", "scalar"),
        ("numpy._core.multiarray", "scalar"),
        ("numpy.core.numeric", "_frombuffer"),
        ("numpy._core.numeric", "_frombuffer"),
        ("_codecs", "encode"),  # bytes in a protocol-2 pickle written by Python 3
    }
)


class _CifarUnpickler(pickle.Unpickler):
    """pickle.Unpickler that resolves only CIFAR_PICKLE_GLOBALS: a batch file someone replaced with a
    pickle that imports `os.system` fails to load instead of running code in every worker."""

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in CIFAR_PICKLE_GLOBALS:
            raise pickle.UnpicklingError(f"{module}.{name} is not part of a CIFAR-10 batch")
        return super().find_class(module, name)


def _unpickle(path: Path) -> dict[bytes, Any]:
    """A CIFAR-10 file (CIFAR's own pickle format), read by _CifarUnpickler: data, never code."""
    try:
        with open(path, "rb") as f:
            content = _CifarUnpickler(f, encoding="bytes").load()
    except (OSError, EOFError, pickle.UnpicklingError, ValueError, TypeError, AttributeError) as exc:
        raise DatasetError(f"cannot read CIFAR-10 file {path}: {exc}; re-create the dataset folder") from exc
    if not isinstance(content, dict):
        raise DatasetError(f"{path} holds a {type(content).__name__}, not a CIFAR-10 dict")
    return content


# --- Fashion-MNIST: IDX files -------------------------------------------------------------------


def _fashion_mnist(data_dir: Path) -> _Splits:
    folders = [data_dir / FMNIST_TORCHVISION_DIR, FMNIST_SYSTEM_DIR]
    files = _find_fmnist(folders)
    if files is None and _download("FashionMNIST", data_dir):
        files = _find_fmnist(folders)
    if files is None:
        raise DatasetError(
            f"Fashion-MNIST not found in {folders[0]} nor {folders[1]}: `apt-get install "
            "dataset-fashion-mnist`, or put the four IDX files (train-images-idx3-ubyte.gz, ...) "
            f"in {folders[0]}, or unset LRCAM_OFFLINE to let torchvision download them"
        )
    return _cached_fashion_mnist(tuple(files), _stamp(files))


def _find_fmnist(folders: list[Path]) -> list[Path] | None:
    """The four IDX files (gzipped or not) of the first folder that has them all."""
    for folder in folders:
        found = [next((p for p in (folder / f"{n}.gz", folder / n) if p.is_file()), None) for n in FMNIST_FILES]
        if all(found):
            return [p.resolve() for p in found]  # type: ignore[union-attr]
    return None


@functools.lru_cache(maxsize=SPLITS_CACHE_SIZE)
def _cached_fashion_mnist(files: tuple[Path, ...], stamp: _Stamp) -> _Splits:
    del stamp  # only part of the cache key
    train_images, train_labels, test_images, test_labels = files
    splits = []
    for images_path, labels_path in ((train_images, train_labels), (test_images, test_labels)):
        images = _read_idx(images_path, IDX_IMAGES_MAGIC)
        labels = _read_idx(labels_path, IDX_LABELS_MAGIC)
        if len(images) != len(labels) or (len(labels) and labels.max() >= len(FMNIST_CLASSES)):
            raise DatasetError(
                f"{images_path} has {len(images)} images, {labels_path} {len(labels)} labels "
                f"up to {labels.max(initial=0)}; expected as many labels as images, in 0..9"
            )
        splits.append(_frozen(images[..., None], labels))
    return _Splits(splits[0], splits[1], FMNIST_CLASSES)


def _read_idx(path: Path, magic: int) -> np.ndarray:
    """An IDX file of unsigned bytes: big-endian magic, one big-endian uint32 per dimension, data."""
    try:
        opener = gzip.open if path.suffix == ".gz" else open
        with opener(path, "rb") as f:
            raw = f.read()
    except (OSError, EOFError) as exc:
        raise DatasetError(f"cannot read IDX file {path}: {exc}; reinstall or re-download it") from exc
    ndim = magic & 0xFF
    header = 4 + 4 * ndim
    found = int.from_bytes(raw[:4], "big") if len(raw) >= 4 else None
    if found != magic:
        raise DatasetError(f"{path} is not an IDX file of {ndim}-d unsigned bytes: magic {found}, expected {magic}")
    shape = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    if len(raw) != header + int(np.prod(shape)):
        raise DatasetError(
            f"{path} is truncated or corrupt: its header says {shape}, its data has "
            f"{len(raw) - header} bytes; reinstall or re-download it"
        )
    return np.frombuffer(raw, np.uint8, offset=header).reshape(shape)


def _download(dataset: str, data_dir: Path) -> bool:
    """Let torchvision fetch a dataset into `data_dir`, unless LRCAM_OFFLINE=1. Whether it tried:
    on failure the caller reports what is still missing."""
    if downloads.offline():
        return False
    import torchvision.datasets

    with contextlib.suppress(OSError, RuntimeError, ValueError):  # no network, a bad archive, a full disk
        getattr(torchvision.datasets, dataset)(root=str(data_dir), download=True)
    return True


# --- image folders ------------------------------------------------------------------------------


def _image_folder(data_dir: Path, path: str, image_size: int) -> _Splits:
    root, folder = data_dir.resolve(), (data_dir / path).resolve()
    if not folder.is_relative_to(root):
        raise DatasetError(f"image folder {path!r} resolves to {folder}, outside DATA_DIR {root}; use one inside")
    if not folder.is_dir():
        raise DatasetError(f"image folder {folder} not found: create it with train/<class>/* and test/<class>/*")
    classes = _class_dirs(folder, "train")
    train, test = _list_split(folder, "train", classes), _list_split(folder, "test", classes)
    stamp = _stamp([Path(p) for p, _ in train + test])
    return _cached_image_folder(folder, image_size, tuple(classes), train, test, stamp)


def _class_dirs(folder: Path, split: str) -> list[str]:
    split_dir = folder / split
    if not split_dir.is_dir():
        raise DatasetError(f"{split_dir} is missing: an image folder needs train/<class>/* and test/<class>/*")
    names = sorted(d.name for d in split_dir.iterdir() if d.is_dir() and not d.name.startswith("."))
    if not names:
        raise DatasetError(f"{split_dir} has no class folders: put each class's images in {split_dir}/<class>/")
    return names


def _list_split(folder: Path, split: str, classes: list[str]) -> _Files:
    """(file, label) of a split, class by class, files sorted by name; hidden files skipped."""
    files = []
    for name in _class_dirs(folder, split):
        if name not in classes:
            raise DatasetError(f"{split} class {name!r} of {folder} is not among the train classes {classes}")
        paths = sorted(p for p in (folder / split / name).iterdir() if not p.name.startswith("."))
        outside = [p for p in paths if not p.resolve().is_relative_to(folder)]
        if outside:
            raise DatasetError(f"{outside[0]} links to {outside[0].resolve()}, outside {folder}; copy the file in")
        class_files = [(str(p), classes.index(name)) for p in paths if p.is_file()]
        if split == "train" and not class_files:
            raise DatasetError(f"train class folder {folder / split / name} has no images")
        files += class_files
    if not files:
        raise DatasetError(f"{folder / split} has no images: put them in {folder / split}/<class>/")
    return tuple(files)


@functools.lru_cache(maxsize=SPLITS_CACHE_SIZE)
def _cached_image_folder(
    folder: Path, image_size: int, classes: tuple[str, ...], train: _Files, test: _Files, stamp: _Stamp
) -> _Splits:
    del folder, stamp  # only part of the cache key
    splits = []
    for files in (train, test):
        images = np.stack([_decode_image(Path(path), image_size) for path, _ in files])
        splits.append(_frozen(images, [label for _, label in files]))
    return _Splits(splits[0], splits[1], classes)


BACKGROUND = (255, 255, 255)  # what transparent pixels are composited on: white, as a viewer shows them
HIGH_BIT_MODES = ("I", "I;16", "I;16B", "I;16L", "I;16N", "F")  # PIL's convert would clip these to 255, not scale


def fit_image(image: Image.Image, size: int, mode: str = "RGB") -> Image.Image:
    """`image` as the model takes it: upright (EXIF), transparency composited on BACKGROUND, in
    `mode` ("RGB" or "L"), scaled so that its shorter side is `size` and centre-cropped to a square,
    keeping its aspect (ImageOps.fit, bilinear). 16-bit, 32-bit and float grayscale is scaled to 8 bits
    (`high_bit_to_l`). Image folders, /predict and the dataset sample grid use it."""
    image = ImageOps.exif_transpose(image)
    if image.mode in HIGH_BIT_MODES:
        image = high_bit_to_l(image)
    if image.mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")
    if image.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (*BACKGROUND, 255))
        image = Image.alpha_composite(background, rgba)
    image = image if image.mode == mode else image.convert(mode)
    if image.size == (size, size):
        return image
    return ImageOps.fit(image, (size, size), Image.Resampling.BILINEAR, centering=(0.5, 0.5))


def high_bit_to_l(image: Image.Image) -> Image.Image:
    """16-bit, 32-bit or float grayscale as 8-bit "L", scaled by the range of its values' type: 16-bit
    data (peak above 255, at most 65535) by 255/65535, wider data by its peak; 8-bit ranges as they are."""
    values = np.asarray(image, dtype=np.float64)
    peak = float(values.max(initial=0.0))
    if peak > 255:  # 16-bit data (0..65535), or wider: scale to 0..255 instead of clipping
        values = values * (255.0 / (65535.0 if peak <= 65535 else peak))
    return Image.fromarray(np.clip(values, 0, 255).astype(np.uint8))


def _decode_image(path: Path, size: int) -> np.ndarray:
    """An image file of any mode as uint8 RGB (size, size, 3) by `fit_image`; refusing anything
    Pillow cannot read and decompression bombs."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as image:
                image.draft("RGB", (size, size))  # JPEG: decode at a reduced scale, much faster
                return np.asarray(fit_image(image, size), np.uint8)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning, OSError, SyntaxError, ValueError) as exc:
        raise DatasetError(f"cannot decode image {path}: {exc}; remove or replace the file") from exc
