"""CIFAR-10 fetched on first use: torchvision's URL, the archive's md5 checked while it streams, and
only the python batches taken out of it (read as data: no member can write outside the folder).
Offline (LRCAM_OFFLINE=1) nothing is fetched; `offline_help` says where to put the files instead."""

from __future__ import annotations

import hashlib
import os
import tarfile
import tempfile
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

CIFAR10_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"  # torchvision.datasets.CIFAR10.url
CIFAR10_MD5 = "c58f30108f718f92721af3b95e74349a"  # torchvision.datasets.CIFAR10.tgz_md5
CIFAR10_FOLDER = "cifar-10-batches-py"
CIFAR10_FILES = (*(f"data_batch_{i}" for i in range(1, 6)), "test_batch", "batches.meta")
CHUNK_BYTES = 1 << 20
TIMEOUT_SECONDS = 60  # per socket operation, not for the whole download (170 MB)

# (bytes so far, total bytes or None when the server does not say)
OnBytes = Callable[[int, int | None], None]


class DownloadFailed(RuntimeError):
    """The archive could not be fetched, did not match its md5 or was not CIFAR-10's."""


def offline() -> bool:
    return os.environ.get("LRCAM_OFFLINE") == "1"


def offline_help(data_dir: Path) -> str:
    """Where to put CIFAR-10 by hand, as one sentence."""
    return (
        f"put the CIFAR-10 python batches ({', '.join(CIFAR10_FILES)}) in {Path(data_dir) / CIFAR10_FOLDER}: "
        f"download {CIFAR10_URL} (md5 {CIFAR10_MD5}) and run "
        f"`tar xzf cifar-10-python.tar.gz -C {data_dir}`"
    )


def fetch_cifar10(data_dir: Path, *, on_bytes: OnBytes | None = None) -> None:
    """Download CIFAR-10 into `data_dir/cifar-10-batches-py/` (files already there are kept).
    Raises DownloadFailed saying why; leaves nothing behind on failure."""
    data_dir = Path(data_dir)
    data_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=data_dir, prefix=".cifar10-download-") as tmp:
        archive = Path(tmp) / "cifar-10-python.tar.gz"
        _fetch(CIFAR10_URL, archive, md5=CIFAR10_MD5, on_bytes=on_bytes or (lambda done, total: None))
        unpacked = Path(tmp) / CIFAR10_FOLDER
        _unpack(archive, unpacked)
        target = data_dir / CIFAR10_FOLDER
        target.mkdir(exist_ok=True)
        for name in CIFAR10_FILES:  # each file appears whole (a rename), even to a concurrent reader
            if not (target / name).exists():
                os.replace(unpacked / name, target / name)


def _fetch(url: str, path: Path, *, md5: str, on_bytes: OnBytes) -> None:
    if not url.startswith(("https://", "http://")):
        raise DownloadFailed(f"refusing to download {url!r}: only http(s) URLs")
    digest, done = hashlib.md5(usedforsecurity=False), 0
    try:
        with urllib.request.urlopen(url, timeout=TIMEOUT_SECONDS) as response, open(path, "wb") as out:
            length = response.headers.get("Content-Length", "")
            total = int(length) if length.isdigit() else None
            on_bytes(0, total)
            while chunk := response.read(CHUNK_BYTES):
                out.write(chunk)
                digest.update(chunk)
                done += len(chunk)
                on_bytes(done, total)
    except (urllib.error.URLError, OSError, ValueError) as exc:  # no network, a refused or cut connection
        raise DownloadFailed(f"could not download {url}: {exc}") from exc
    if digest.hexdigest() != md5:
        raise DownloadFailed(f"{url} gave {done} bytes with md5 {digest.hexdigest()}, expected md5 {md5}")


def _unpack(archive: Path, folder: Path) -> None:
    """The archive's cifar-10-batches-py/<file> members, copied out as bytes by name (never extracted
    by the member's own path or type)."""
    folder.mkdir()
    try:
        with tarfile.open(archive, "r:gz") as tar:
            members = {member.name: member for member in tar.getmembers() if member.isfile()}
            missing = [name for name in CIFAR10_FILES if f"{CIFAR10_FOLDER}/{name}" not in members]
            if missing:
                raise DownloadFailed(f"the archive has no {', '.join(missing)} under {CIFAR10_FOLDER}/")
            for name in CIFAR10_FILES:
                source = tar.extractfile(members[f"{CIFAR10_FOLDER}/{name}"])
                assert source is not None  # a regular file always has contents
                with source, open(folder / name, "wb") as out:
                    while chunk := source.read(CHUNK_BYTES):
                        out.write(chunk)
    except (tarfile.TarError, EOFError, OSError) as exc:
        raise DownloadFailed(f"the downloaded archive is unreadable: {exc}") from exc
