"""Session-wide fixtures: tiny real datasets in the layouts ml.data reads, under tmp DATA_DIRs.
They are shared by the whole session: tests must not modify them (copy to tmp_path first)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from datasets import SHAPES, gray28_to_cifar, write_cifar_batches, write_shapes

FMNIST_SYSTEM_DIR = Path("/usr/share/datasets/fashion-mnist")
CIFAR_TRAIN_IMAGES = 600  # 120 per data batch
CIFAR_TEST_IMAGES = 200
SHAPES_TRAIN = {"circle": 14, "square": 12, "triangle": 10}  # unbalanced on purpose: subsets stratify
SHAPES_TEST = {"circle": 5, "square": 4, "triangle": 3}


def pytest_configure(config: pytest.Config) -> None:
    # Tests never download: a dataset that is not on disk must fail at once, not wait on a network.
    os.environ.setdefault("LRCAM_OFFLINE", "1")


@pytest.fixture(scope="session")
def fmnist_data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An empty DATA_DIR: ml.data falls back to the system's real Fashion-MNIST."""
    if not all((FMNIST_SYSTEM_DIR / f"{name}.gz").is_file() for name in _fmnist_names()):
        pytest.fail(f"real Fashion-MNIST is missing from {FMNIST_SYSTEM_DIR}: `apt-get install dataset-fashion-mnist`")
    return tmp_path_factory.mktemp("fmnist_data")


@pytest.fixture(scope="session")
def fmnist_arrays(fmnist_data_dir: Path) -> dict[str, np.ndarray]:
    """Balanced real Fashion-MNIST: 600 train and 200 test images (N, 28, 28, 1) with labels."""
    from ml.data import load_dataset
    from ml.specs import DatasetSpec

    spec = DatasetSpec(name="fashion_mnist", train_subset=CIFAR_TRAIN_IMAGES, test_subset=CIFAR_TEST_IMAGES)
    bundle = load_dataset(spec, fmnist_data_dir)
    return {
        "train_images": bundle.train.images,
        "train_labels": bundle.train.labels,
        "test_images": bundle.test.images,
        "test_labels": bundle.test.labels,
    }


@pytest.fixture(scope="session")
def cifar_data_dir(tmp_path_factory: pytest.TempPathFactory, fmnist_arrays: dict[str, np.ndarray]) -> Path:
    """A DATA_DIR holding cifar-10-batches-py/ in the exact CIFAR python format: 600 train (5
    batches of 120) and 200 test images, real Fashion-MNIST padded to 32x32 and tinted into 3
    channels, with the Fashion-MNIST labels and the CIFAR-10 class names."""
    data_dir = tmp_path_factory.mktemp("cifar_data")
    write_cifar_batches(
        data_dir / "cifar-10-batches-py",
        gray28_to_cifar(fmnist_arrays["train_images"]),
        fmnist_arrays["train_labels"],
        test_images=gray28_to_cifar(fmnist_arrays["test_images"]),
        test_labels=fmnist_arrays["test_labels"],
    )
    return data_dir


@pytest.fixture(scope="session")
def image_folder_data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A DATA_DIR holding shapes/{train,test}/{circle,square,triangle}/: 36 train and 12 test small
    images of different sizes and modes (RGB, L, RGBA, P PNGs and JPEGs), plus a hidden file that
    the loader must skip. Use DatasetSpec(name="image_folder", path="shapes")."""
    data_dir = tmp_path_factory.mktemp("folder_data")
    write_shapes(data_dir / "shapes" / "train", per_class=SHAPES_TRAIN, seed=0)
    write_shapes(data_dir / "shapes" / "test", per_class=SHAPES_TEST, seed=1)
    (data_dir / "shapes" / "train" / SHAPES[0] / ".DS_Store").write_bytes(b"\x00\x00\x00\x01Bud1 not an image")
    return data_dir


def _fmnist_names() -> list[str]:
    return ["train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"]
