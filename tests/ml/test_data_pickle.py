"""CIFAR-10 batches are pickles: read as data only. A batch file replaced with a pickle that imports a
callable (here `os.system`) fails to load with a DatasetError and runs nothing."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import numpy as np
import pytest
from datasets import write_cifar_batches

from ml.data import DatasetError, load_dataset
from ml.specs import DatasetSpec


class Exploit:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return os.system, (f"touch {self.marker}",)


def cifar(tmp_path: Path) -> Path:
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (20, 32, 32, 3), dtype=np.uint8)
    write_cifar_batches(tmp_path / "cifar-10-batches-py", images, np.arange(20) % 10)
    return tmp_path


def test_real_format_batches_still_load(tmp_path: Path) -> None:
    bundle = load_dataset(DatasetSpec(name="cifar10"), cifar(tmp_path))
    assert bundle.train.images.shape == (20, 32, 32, 3) and len(bundle.classes) == 10


@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_a_batch_that_imports_code_is_refused_and_nothing_runs(tmp_path: Path, protocol: int) -> None:
    data_dir = cifar(tmp_path)
    marker = tmp_path / "pwned"
    with open(data_dir / "cifar-10-batches-py" / "data_batch_3", "wb") as f:
        pickle.dump({b"data": Exploit(marker), b"labels": []}, f, protocol=protocol)
    with pytest.raises(DatasetError, match=r"posix\.system is not part of a CIFAR-10 batch"):
        load_dataset(DatasetSpec(name="cifar10"), data_dir)
    assert not marker.exists()
