"""Safe extraction of uploaded archives: every archive is built here with zipfile/tarfile from tiny
generated images, hostile ones included (zip-slip, links, devices, bombs, lies, truncations).
The builders at the top are shared with test_dataset_import.py."""

from __future__ import annotations

import gzip
import io
import stat
import struct
import tarfile
import tempfile
import tracemalloc
import unicodedata
import zipfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from core.archives import CHUNK_BYTES, MAX_HEADER_BYTES, RATIO_FLOOR_BYTES, ArchiveLimits, ArchiveRefused, extract

LIMITS = ArchiveLimits()
BOMB_BYTES = 50 * 2**20  # zeros: deflate makes them about 50 KB, a ratio near 1000


def image_bytes(
    color: tuple[int, ...] | int = (200, 30, 30), *, size: tuple[int, int] = (8, 8), mode: str = "RGB", fmt: str = "PNG"
) -> bytes:
    """A tiny image of one colour, encoded as `fmt`."""
    buffer = io.BytesIO()
    Image.new(mode, size, color).save(buffer, fmt)
    return buffer.getvalue()


def write_zip(path: Path, members: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return path


def write_tar(path: Path, members: dict[str, bytes], mode: str = "w:gz") -> Path:
    with tarfile.open(path, mode) as tar:  # type: ignore[call-overload]
        for name, data in members.items():
            add_tar_member(tar, name, data)
    return path


def add_tar_member(
    tar: tarfile.TarFile, name: str, data: bytes = b"", kind: bytes = tarfile.REGTYPE, **fields: object
) -> None:
    info = tarfile.TarInfo(name)
    info.type, info.size = kind, len(data)
    for key, value in fields.items():
        setattr(info, key, value)
    tar.addfile(info, io.BytesIO(data) if kind == tarfile.REGTYPE else None)


def write_archive(path: Path, members: dict[str, bytes]) -> Path:
    """`members` as a zip or a tar (compressed or not), chosen by the suffix of `path`."""
    if path.suffix == ".zip":
        return write_zip(path, members)
    modes = {".tar": "w", ".gz": "w:gz", ".tgz": "w:gz", ".bz2": "w:bz2", ".xz": "w:xz"}
    return write_tar(path, members, modes[path.suffix])


@pytest.fixture
def out(tmp_path: Path) -> Path:
    """An empty parent for the destination: refusals must leave it empty."""
    (tmp_path / "out").mkdir()
    return tmp_path / "out"


@pytest.fixture
def nothing_written(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fail the test if extraction starts writing at all: a refusal must come from the pre-check."""

    def no_staging(*args: object, **kwargs: object) -> str:
        raise AssertionError("extraction began writing before refusing")

    monkeypatch.setattr(tempfile, "mkdtemp", no_staging)


def refused(archive: Path, out: Path, limits: ArchiveLimits = LIMITS) -> ArchiveRefused:
    with pytest.raises(ArchiveRefused) as caught:
        extract(archive, out / "dest", limits=limits)
    assert list(out.iterdir()) == [], "a refused archive left files behind"
    assert caught.value.detail == str(caught.value)
    return caught.value


def inflated_by(monkeypatch: pytest.MonkeyPatch, cls: type, method: str = "read") -> list[int]:
    """A running count of the bytes `cls.method` returns: how far a refused archive was inflated."""
    counted, real = [0], getattr(cls, method)

    def counting(self: object, *args: object) -> bytes:
        data: bytes = real(self, *args)
        counted[0] += len(data)
        return data

    monkeypatch.setattr(cls, method, counting)
    return counted


GOOD = {
    "pets/train/cat/1.png": image_bytes((10, 20, 30)),
    "pets/train/dog/2.jpg": image_bytes((40, 50, 60), fmt="JPEG"),
    "pets/test/cat/3.png": image_bytes(77, mode="L"),
    "pets/README.txt": b"two pets",
}
JUNK = {"__MACOSX/pets/train/cat/._1.png": b"\0\5\26\7", "pets/.DS_Store": b"\0\0\0\1Bud1", "pets/._README.txt": b"x"}


@pytest.mark.parametrize("suffix", [".zip", ".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tar.xz"])
def test_extracts_every_format_and_skips_macos_junk(tmp_path: Path, out: Path, suffix: str) -> None:
    archive = write_archive(tmp_path / f"data{suffix}", {**GOOD, **JUNK})
    written = extract(archive, out / "dest", limits=LIMITS)
    assert written == list(GOOD)
    assert {p.relative_to(out / "dest").as_posix() for p in (out / "dest").rglob("*") if p.is_file()} == set(GOOD)
    assert all((out / "dest" / name).read_bytes() == data for name, data in GOOD.items())
    assert [p.name for p in out.iterdir()] == ["dest"]  # no staging folder left beside it


def test_format_comes_from_the_bytes_not_the_name(tmp_path: Path, out: Path) -> None:
    archive = write_tar(tmp_path / "looks.zip", GOOD)
    assert extract(archive, out / "dest", limits=LIMITS) == list(GOOD)
    zipped = write_zip(tmp_path / "looks.tar.gz", GOOD)
    assert extract(zipped, out / "again", limits=LIMITS) == list(GOOD)


def test_folder_entries_are_skipped_and_dest_must_be_new(tmp_path: Path, out: Path) -> None:
    archive = tmp_path / "folders.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("a/", b"")
        zf.writestr("a/empty/", b"")
        zf.writestr("a/x.png", image_bytes())
    assert extract(archive, out / "dest", limits=LIMITS) == ["a/x.png"]
    assert not (out / "dest" / "a" / "empty").exists()
    with pytest.raises(FileExistsError, match="exists"):
        extract(archive, out / "dest", limits=LIMITS)


def hostile_zip(path: Path, name: str, mode: int = 0o644 | stat.S_IFREG) -> Path:
    """GOOD, then one hostile member last: refusing it must come before anything is written."""
    write_zip(path, GOOD)
    with zipfile.ZipFile(path, "a") as zf:
        info = zipfile.ZipInfo(name)
        info.create_system, info.external_attr = 3, mode << 16
        zf.writestr(info, b"/etc/passwd" if stat.S_ISLNK(mode) else b"data")
    return path


@pytest.mark.parametrize(
    ("name", "mode", "why"),
    [
        ("/etc/cron.d/evil", 0o644 | stat.S_IFREG, "absolute path"),
        ("C:/Windows/evil.png", 0o644 | stat.S_IFREG, "absolute path"),
        ("pets/../../evil.png", 0o644 | stat.S_IFREG, "'..'"),
        ("pets\\..\\..\\evil.png", 0o644 | stat.S_IFREG, "'..'"),
        ("pets/train/cat/link.png", 0o777 | stat.S_IFLNK, "symbolic link"),
        ("pets/train/cat/fifo.png", 0o644 | stat.S_IFIFO, "device, fifo"),
        ("pets/train/cat/dev.png", 0o644 | stat.S_IFCHR, "device, fifo"),
    ],
)
def test_hostile_zip_members_are_refused_before_anything_is_written(
    tmp_path: Path, out: Path, name: str, mode: int, why: str, nothing_written: None
) -> None:
    error = refused(hostile_zip(tmp_path / "evil.zip", name, mode), out)
    assert error.status == 422 and repr(name) in error.detail and why in error.detail


@pytest.mark.parametrize(
    ("name", "kind", "fields", "why"),
    [
        ("/etc/cron.d/evil", tarfile.REGTYPE, {}, "absolute path"),
        ("pets/../../evil.png", tarfile.REGTYPE, {}, "'..'"),
        ("pets/train/cat/link.png", tarfile.SYMTYPE, {"linkname": "/etc/passwd"}, "symbolic link"),
        ("pets/train/cat/inside.png", tarfile.SYMTYPE, {"linkname": "1.png"}, "symbolic link"),
        ("pets/train/cat/hard.png", tarfile.LNKTYPE, {"linkname": "pets/train/cat/1.png"}, "hard link"),
        ("pets/train/cat/null.png", tarfile.CHRTYPE, {"devmajor": 1, "devminor": 3}, "device or fifo"),
        ("pets/train/cat/disk.png", tarfile.BLKTYPE, {"devmajor": 8, "devminor": 0}, "device or fifo"),
        ("pets/train/cat/fifo.png", tarfile.FIFOTYPE, {}, "device or fifo"),
    ],
)
@pytest.mark.parametrize("mode", ["w", "w:gz"])
def test_hostile_tar_members_are_refused_before_anything_is_written(
    tmp_path: Path,
    out: Path,
    name: str,
    kind: bytes,
    fields: dict[str, object],
    why: str,
    mode: str,
    nothing_written: None,
) -> None:
    archive = tmp_path / "evil.tar"
    with tarfile.open(archive, mode) as tar:  # type: ignore[call-overload]
        for good, data in GOOD.items():
            add_tar_member(tar, good, data)
        add_tar_member(tar, name, b"data" if kind == tarfile.REGTYPE else b"", kind, **fields)
    error = refused(archive, out)
    assert error.status == 422 and repr(name) in error.detail and why in error.detail


@pytest.mark.parametrize(
    ("first", "second"),
    [
        ("pets/train/cat/1.png", "pets//train/./cat/1.png"),
        ("pets/train/cat/1.png", "pets\\train\\cat\\1.png"),
        (unicodedata.normalize("NFC", "café/1.png"), unicodedata.normalize("NFD", "café/1.png")),
        ("pets/train", "pets/train/cat/1.png"),  # a file that is also a folder
        ("pets/train/cat/1.png", "pets/train/cat/1.png/x.png"),
    ],
)
@pytest.mark.parametrize("suffix", [".zip", ".tar.gz"])
def test_names_that_collide_once_normalised_are_refused(
    tmp_path: Path, out: Path, first: str, second: str, suffix: str, nothing_written: None
) -> None:
    archive = tmp_path / f"twins{suffix}"
    if suffix == ".zip":
        with zipfile.ZipFile(archive, "w") as zf:  # writestr keeps duplicate names; a dict could not
            zf.writestr(first, image_bytes())
            zf.writestr(second, image_bytes())
    else:
        write_tar(archive, {first: image_bytes(), second: image_bytes()})
    error = refused(archive, out)
    assert error.status == 422 and repr(second) in error.detail and "collides" in error.detail


def test_a_zip_bomb_is_refused_for_its_ratio_while_inflating(
    tmp_path: Path, out: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    archive = write_zip(tmp_path / "bomb.zip", {"pets/train/cat/1.png": image_bytes(), "zeros.png": bytes(BOMB_BYTES)})
    compressed = zipfile.ZipFile(archive).getinfo("zeros.png").compress_size
    assert compressed < BOMB_BYTES / 500
    inflated = inflated_by(monkeypatch, zipfile.ZipExtFile)
    error = refused(archive, out)
    assert error.status == 413 and "max_ratio = 200" in error.detail and "'zeros.png'" in error.detail
    assert inflated[0] <= 200 * compressed + CHUNK_BYTES < BOMB_BYTES / 4  # stopped once past the ratio


def test_a_tar_gz_bomb_is_refused_for_its_ratio_while_inflating(
    tmp_path: Path, out: Path, monkeypatch: pytest.MonkeyPatch, nothing_written: None
) -> None:
    archive = write_tar(
        tmp_path / "bomb.tar.gz", {"pets/train/cat/1.png": image_bytes(), "zeros.png": bytes(BOMB_BYTES)}
    )
    inflated = inflated_by(monkeypatch, gzip.GzipFile)
    error = refused(archive, out)
    assert error.status == 413 and "max_ratio = 200" in error.detail
    assert inflated[0] <= RATIO_FLOOR_BYTES + 2 * CHUNK_BYTES  # the stream's running ratio trips past the floor


@pytest.mark.parametrize("suffix", [".zip", ".tar.gz"])
def test_inflated_bytes_past_max_unpacked_bytes_are_refused_while_inflating(
    tmp_path: Path, out: Path, monkeypatch: pytest.MonkeyPatch, suffix: str, nothing_written: None
) -> None:
    archive = write_archive(tmp_path / f"bomb{suffix}", {f"zeros/{i}.bin": bytes(2 * 2**20) for i in range(8)})
    inflated = inflated_by(monkeypatch, zipfile.ZipExtFile if suffix == ".zip" else gzip.GzipFile)
    error = refused(archive, out, ArchiveLimits(max_unpacked_bytes=4 * 2**20, max_ratio=1e9))
    assert error.status == 413 and "max_unpacked_bytes" in error.detail and "'zeros/2.bin'" in error.detail
    assert inflated[0] <= 4 * 2**20 + CHUNK_BYTES  # a zip is refused from its listing, a tar at the 3rd header


@pytest.mark.parametrize("suffix", [".zip", ".tar.gz"])
def test_a_member_past_max_member_bytes_is_refused_before_it_inflates(
    tmp_path: Path, out: Path, monkeypatch: pytest.MonkeyPatch, suffix: str, nothing_written: None
) -> None:
    archive = write_archive(tmp_path / f"big{suffix}", {"small.bin": bytes(1000), "big.bin": bytes(BOMB_BYTES)})
    inflated = inflated_by(monkeypatch, zipfile.ZipExtFile if suffix == ".zip" else gzip.GzipFile)
    error = refused(archive, out, ArchiveLimits(max_member_bytes=3 * 2**20, max_ratio=1e9))
    assert error.status == 413 and "max_member_bytes" in error.detail and "'big.bin'" in error.detail
    assert inflated[0] <= 64 * 2**10  # headers, the small member and tarfile's read-ahead


def test_a_tar_header_bomb_is_refused_before_tarfile_holds_it(tmp_path: Path, out: Path, nothing_written: None) -> None:
    archive = tmp_path / "pax.tar.gz"
    with tarfile.open(archive, "w:gz", format=tarfile.PAX_FORMAT) as tar:
        add_tar_member(tar, "pets/train/cat/1.png", image_bytes(), pax_headers={"comment": "x" * 4 * MAX_HEADER_BYTES})
    error = refused(archive, out, ArchiveLimits(max_ratio=1e9))
    assert error.status == 413 and "headers" in error.detail


def patch_zip_sizes(path: Path, declared: int) -> None:
    """Make the first member of the zip at `path` declare `declared` inflated bytes, in its local
    header and its central directory entry alike (the CRC is left as it was)."""
    data = bytearray(path.read_bytes())
    local, central = data.index(b"PK\x03\x04"), data.index(b"PK\x01\x02")
    struct.pack_into("<I", data, local + 22, declared)
    struct.pack_into("<I", data, central + 24, declared)
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("declared", [100, 4 * 2**20])
def test_a_zip_member_lying_about_its_size_is_refused(
    tmp_path: Path, out: Path, monkeypatch: pytest.MonkeyPatch, declared: int
) -> None:
    real = 8 * 2**20
    archive = write_zip(tmp_path / "liar.zip", {"zeros.bin": bytes(real)})
    patch_zip_sizes(archive, declared)
    assert zipfile.ZipFile(archive).infolist()[0].file_size == declared
    inflated = inflated_by(monkeypatch, zipfile.ZipExtFile)
    error = refused(archive, out, ArchiveLimits(max_member_bytes=6 * 2**20, max_ratio=1e9))
    assert error.status == 422 and "damaged" in error.detail and "'zeros.bin'" in error.detail
    assert inflated[0] <= min(declared, real)  # never more than declared, however much the data holds


@pytest.mark.parametrize(
    "content",
    [
        np.random.default_rng(0).bytes(4096),
        image_bytes(),
        b"",
        gzip.compress(b"label,file\ncat,1.png\n" * 50),
        b"PK",
    ],
    ids=["random", "png", "empty", "gzip-of-text", "just-pk"],
)
def test_anything_but_a_zip_or_tar_is_415(tmp_path: Path, out: Path, content: bytes, nothing_written: None) -> None:
    archive = tmp_path / "upload.zip"
    archive.write_bytes(content)
    error = refused(archive, out)
    if content == b"PK":  # starts like a zip
        assert error.status == 422 and "damaged" in error.detail
    else:
        assert error.status == 415 and "not a zip or tar archive" in error.detail


@pytest.mark.parametrize("suffix", [".zip", ".tar.gz", ".tar"])
@pytest.mark.parametrize("keep", [0.5, 0.9])
def test_a_truncated_archive_is_422(tmp_path: Path, out: Path, suffix: str, keep: float) -> None:
    rng = np.random.default_rng(1)
    members = {f"pets/train/cat/{i}.bin": rng.bytes(20_000) for i in range(10)}  # incompressible: cuts land in data
    archive = write_archive(tmp_path / f"cut{suffix}", members)
    data = archive.read_bytes()
    archive.write_bytes(data[: int(len(data) * keep)])
    error = refused(archive, out)
    assert error.status == 422 and "damaged or cut short" in error.detail


def test_a_corrupt_zip_member_is_422(tmp_path: Path, out: Path) -> None:
    archive = write_zip(tmp_path / "flipped.zip", {"a.txt": b"hello, dataset " * 1000})
    data = bytearray(archive.read_bytes())
    data[60:70] = bytes(10)  # inside the deflated data of the only member
    archive.write_bytes(bytes(data))
    error = refused(archive, out)
    assert error.status == 422 and "damaged" in error.detail


@pytest.mark.parametrize("suffix", [".zip", ".tar.gz"])
def test_more_members_than_the_limit_is_413_before_inflating(
    tmp_path: Path, out: Path, monkeypatch: pytest.MonkeyPatch, suffix: str
) -> None:
    members = {f"c/{i}.txt": b"x" for i in range(51)}
    archive = write_archive(tmp_path / f"many{suffix}", members)
    read = inflated_by(monkeypatch, zipfile.ZipExtFile)
    error = refused(archive, out, ArchiveLimits(max_members=50))
    assert error.status == 413 and "max_members = 50" in error.detail
    assert read[0] == 0  # a zip is refused from its central directory
    assert extract(archive, out / "dest", limits=ArchiveLimits(max_members=51)) == list(members)


def measure_peak(run: Callable[[], object]) -> int:
    tracemalloc.start()
    try:
        run()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


@pytest.mark.parametrize("suffix", [".zip", ".tar.gz"])
def test_members_are_copied_in_chunks_not_held_whole(tmp_path: Path, out: Path, suffix: str) -> None:
    size = 48 * 2**20
    archive = write_archive(tmp_path / f"big{suffix}", {"big.bin": bytes(size)})
    peak = measure_peak(lambda: extract(archive, out / "dest", limits=ArchiveLimits(max_ratio=1e9)))
    assert (out / "dest" / "big.bin").stat().st_size == size
    assert peak < 8 * CHUNK_BYTES, f"extracting a {size:,}-byte member peaked at {peak:,} bytes"
