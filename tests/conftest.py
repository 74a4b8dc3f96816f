"""Fixtures of every test folder.

Session-wide, tiny real datasets in the layouts ml.data reads, under tmp DATA_DIRs: shared by the
whole session, tests must not modify them (copy to tmp_path first). Per test, settings on a fresh
store in tmp (SQLite, or PostgreSQL in a schema of its own) and a session on it: the job store as the
API and the workers share it."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from datasets import SHAPES, gray28_to_cifar, write_cifar_batches, write_shapes
from sqlalchemy import create_engine, make_url
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session
from stores import POSTGRES_URL, postgres_schema_url, skip_without_postgres

from core.config import Settings, get_settings
from core.db import session_for

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


@pytest.fixture(scope="session")
def postgres_available() -> bool:
    try:
        with create_engine(POSTGRES_URL, connect_args={"connect_timeout": 2}).connect():
            return True
    except OperationalError:
        return False


@pytest.fixture
def postgres_url(postgres_available: bool) -> Iterator[str]:
    """A fresh PostgreSQL store: a schema of its own (in search_path), dropped afterwards."""
    skip_without_postgres()
    if not postgres_available:
        pytest.fail(f"PostgreSQL is not reachable at {make_url(POSTGRES_URL).render_as_string(hide_password=True)}")
    with postgres_schema_url(POSTGRES_URL, prefix="t") as url:
        yield url


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A fresh, empty store of each kind."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'store' / 'app.db'}"
    return request.getfixturevalue("postgres_url")


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'app.db'}"


@pytest.fixture
def settings(tmp_path: Path, sqlite_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[Settings]:
    """Environment settings on a fresh SQLite store in tmp_path; change them with `configure`."""
    values = {
        "DATABASE_URL": sqlite_url,
        "REDIS_URL": "redis://127.0.0.1:6379/0",
        "JOB_QUEUE": f"lrcam-test-{uuid.uuid4().hex[:8]}",
        "DATA_DIR": str(tmp_path / "data"),
        "ARTIFACTS_DIR": str(tmp_path / "artifacts"),
        "METRICS_CACHE_SECONDS": "0",  # each test reads what it just wrote; the cache has tests of its own
    }
    for name, value in values.items():
        monkeypatch.setenv(name, value)
    for name in ("API_KEY", "CORS_ORIGINS", "JOB_LEASE_SECONDS", "MAX_UPLOAD_BYTES"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)  # no .env of the developer's
    get_settings.cache_clear()
    yield get_settings()
    get_settings.cache_clear()


@pytest.fixture
def configure(settings: Settings, monkeypatch: pytest.MonkeyPatch):
    """configure(NAME=value, ...) -> the new Settings (the environment changed, the cache cleared)."""

    def _configure(**values: Any) -> Settings:
        for name, value in values.items():
            monkeypatch.setenv(name, str(value))
        get_settings.cache_clear()
        return get_settings()

    return _configure


@pytest.fixture
def session(settings: Settings) -> Iterator[Session]:
    with session_for(settings.DATABASE_URL) as db_session:
        yield db_session


def _fmnist_names() -> list[str]:
    return ["train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"]
