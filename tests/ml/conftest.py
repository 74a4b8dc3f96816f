"""Small generated datasets for the unit tests of ml, in the real on-disk formats (tests/datasets.py):
tests that need only a few images use these rather than a real dataset."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from datasets import TINT, write_cifar_batches, write_idx

CLASSES = 10
TRAIN_IMAGES, TEST_IMAGES = 600, 200  # 60 and 20 a class


def class_images(count: int, *, size: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """uint8 (count, size, size, 1) noise with a bright horizontal band whose row says the class
    (a flip keeps it, a 4 px crop shifts it a little), and balanced int64 labels in shuffled order."""
    rng = np.random.default_rng(seed)
    labels = rng.permutation(np.arange(count) % CLASSES).astype(np.int64)
    images = rng.integers(0, 96, size=(count, size, size, 1), dtype=np.uint8)
    band = size // CLASSES
    for index, label in enumerate(labels):
        images[index, label * band : (label + 1) * band] = rng.integers(160, 256, dtype=np.uint8)
    return images, labels


@pytest.fixture(scope="session")
def small_fmnist_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A DATA_DIR holding FashionMNIST/raw/ (torchvision's layout, found before the system's copy):
    600 train and 200 test generated 28x28 grayscale images in gzipped IDX files."""
    data_dir = tmp_path_factory.mktemp("small_fmnist")
    raw = data_dir / "FashionMNIST" / "raw"
    raw.mkdir(parents=True)
    for split, count, seed in (("train", TRAIN_IMAGES, 0), ("t10k", TEST_IMAGES, 1)):
        images, labels = class_images(count, size=28, seed=seed)
        write_idx(raw / f"{split}-images-idx3-ubyte.gz", images[..., 0])
        write_idx(raw / f"{split}-labels-idx1-ubyte.gz", labels)
    return data_dir


@pytest.fixture(scope="session")
def small_cifar_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A DATA_DIR holding cifar-10-batches-py/: 600 train and 200 test generated 32x32 images, tinted
    into 3 channels that differ, in the CIFAR python format."""
    data_dir = tmp_path_factory.mktemp("small_cifar")
    (train, train_labels), (test, test_labels) = (
        class_images(n, size=32, seed=s) for n, s in ((TRAIN_IMAGES, 2), (TEST_IMAGES, 3))
    )
    write_cifar_batches(
        data_dir / "cifar-10-batches-py",
        tint(train),
        train_labels,
        test_images=tint(test),
        test_labels=test_labels,
    )
    return data_dir


def tint(images: np.ndarray) -> np.ndarray:
    """uint8 (N, H, W, 1) to (N, H, W, 3), each channel scaled by its TINT gain."""
    return np.concatenate([(images * gain).astype(np.uint8) for gain in TINT], axis=-1)
