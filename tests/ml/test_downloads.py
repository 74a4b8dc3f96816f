"""CIFAR-10 downloaded on first use, from a loopback HTTP server standing in for torchvision's URL:
the md5 is checked, only the batches are taken out of the archive, progress is reported in bytes,
and offline (or on any failure) the error says where to put the files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from datasets import gray28_to_cifar, serve_folder, write_cifar_archive

from ml import downloads
from ml.data import DatasetError, load_dataset
from ml.specs import DatasetSpec


@pytest.fixture
def archive(tmp_path: Path, fmnist_arrays: dict[str, np.ndarray]) -> tuple[Path, str]:
    """A tiny cifar-10-python.tar.gz (real Fashion-MNIST images, padded and tinted) and its md5."""
    images, labels = gray28_to_cifar(fmnist_arrays["train_images"][:100]), fmnist_arrays["train_labels"][:100]
    served = tmp_path / "served"
    served.mkdir()
    path = served / "cifar-10-python.tar.gz"
    return path, write_cifar_archive(
        path, images, labels, extra={"../escaped": b"x", "/tmp/lrcam-absolute-member": b"x"}
    )


@pytest.fixture
def online(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("LRCAM_OFFLINE", raising=False)


def test_cifar10_downloads_on_first_use_with_progress(
    archive: tuple[Path, str], tmp_path: Path, online: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    path, md5 = archive
    data_dir, reports = tmp_path / "data", []
    with serve_folder(path.parent) as (url, requested):
        monkeypatch.setattr(downloads, "CIFAR10_URL", f"{url}/{path.name}")
        monkeypatch.setattr(downloads, "CIFAR10_MD5", md5)
        bundle = load_dataset(DatasetSpec(name="cifar10"), data_dir, on_download=lambda *seen: reports.append(seen))
        again = load_dataset(DatasetSpec(name="cifar10"), data_dir)  # on disk now: no second request
    assert requested == [f"/{path.name}"]
    assert len(bundle.train) == 100 and bundle.classes[0] == "airplane" and bundle.image_size == 32
    assert np.array_equal(again.train.images, bundle.train.images)
    size = path.stat().st_size
    assert reports[0] == (0, size) and reports[-1] == (size, size)
    assert [done for done, _ in reports] == sorted(done for done, _ in reports)
    assert sorted(p.name for p in data_dir.iterdir()) == ["cifar-10-batches-py"]  # no temporary files left
    assert sorted(p.name for p in (data_dir / "cifar-10-batches-py").iterdir()) == sorted(downloads.CIFAR10_FILES)
    assert not (tmp_path / "escaped").exists() and not Path("/tmp/lrcam-absolute-member").exists()


def test_a_wrong_md5_keeps_nothing_and_says_where_to_put_the_files(
    archive: tuple[Path, str], tmp_path: Path, online: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    path, _ = archive
    data_dir = tmp_path / "data"
    with serve_folder(path.parent) as (url, _):
        monkeypatch.setattr(downloads, "CIFAR10_URL", f"{url}/{path.name}")
        with pytest.raises(DatasetError) as caught:
            load_dataset(DatasetSpec(name="cifar10"), data_dir)
    message = str(caught.value)
    assert f"expected md5 {downloads.CIFAR10_MD5}" in message
    assert str(data_dir / "cifar-10-batches-py") in message and "tar xzf cifar-10-python.tar.gz" in message
    assert list(data_dir.iterdir()) == []


def test_an_unreachable_server_is_a_dataset_error_naming_the_url(
    tmp_path: Path, online: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    with serve_folder(tmp_path) as (url, _):  # serves an empty folder: 404
        monkeypatch.setattr(downloads, "CIFAR10_URL", f"{url}/cifar-10-python.tar.gz")
        with pytest.raises(DatasetError, match="could not download http://127.0.0.1:.*404"):
            load_dataset(DatasetSpec(name="cifar10"), tmp_path / "data")


def test_an_archive_without_the_batches_is_refused(
    tmp_path: Path, online: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    import hashlib
    import io
    import tarfile

    served = tmp_path / "served"
    served.mkdir()
    with tarfile.open(served / "a.tar.gz", "w:gz") as tar:
        member = tarfile.TarInfo("cifar-10-batches-py/data_batch_1")
        member.size = 3
        tar.addfile(member, io.BytesIO(b"abc"))
    with serve_folder(served) as (url, _):
        monkeypatch.setattr(downloads, "CIFAR10_URL", f"{url}/a.tar.gz")
        monkeypatch.setattr(downloads, "CIFAR10_MD5", hashlib.md5((served / "a.tar.gz").read_bytes()).hexdigest())
        with pytest.raises(DatasetError, match="the archive has no data_batch_2, .*batches.meta"):
            load_dataset(DatasetSpec(name="cifar10"), tmp_path / "data")
    assert not (tmp_path / "data" / "cifar-10-batches-py").exists()


def test_offline_never_downloads_and_says_where_to_put_the_files(
    archive: tuple[Path, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path, md5 = archive
    monkeypatch.setenv("LRCAM_OFFLINE", "1")
    with serve_folder(path.parent) as (url, requested):
        monkeypatch.setattr(downloads, "CIFAR10_URL", f"{url}/{path.name}")
        monkeypatch.setattr(downloads, "CIFAR10_MD5", md5)
        with pytest.raises(DatasetError) as caught:
            load_dataset(DatasetSpec(name="cifar10"), tmp_path)
    message = str(caught.value)
    assert requested == [] and "LRCAM_OFFLINE=1" in message
    assert str(tmp_path / "cifar-10-batches-py") in message and f"{url}/{path.name}" in message
    assert f"tar xzf cifar-10-python.tar.gz -C {tmp_path}" in message and "data_batch_1" in message
