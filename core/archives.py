"""Safe extraction of an uploaded dataset archive (zip; tar, plain or gzip, bzip2, xz compressed) with
Python's zipfile and tarfile. An archive is untrusted data (OWASP's zip-slip and zip-bomb rules):

- The format is told from the bytes, never the file name: a zip by its central directory
  (zipfile.is_zipfile), a tar by its first header, read through the metered decompressor below
  (tarfile.is_tarfile would inflate that header unmetered, and a pax header may be gigabytes long).
- Every member's name and type is checked before anything is written: absolute paths, `..`
  components, symbolic and hard links, devices and fifos, names that collide once normalised
  (separators, `.` components, Unicode NFC, a file that is also a folder) are refused, and tar members
  also pass tarfile's `data` filter. A zip is checked from its central directory; a tar is streamed
  twice: the first pass checks every member and meters its data, the second writes.
- Inflated bytes are counted while inflating, CHUNK_BYTES at a time, and the copy stops before the
  chunk that passes a limit is written: a member's bytes (max_member_bytes), all members' bytes
  (max_unpacked_bytes), a zip member's inflated to compressed ratio and a compressed tar stream's
  ratio (max_ratio, judged past RATIO_FLOOR_BYTES). A zip member's declared size is never trusted:
  the bytes read are counted, and a member that holds more or less than it declares is refused.
- Memory stays bounded: members are copied in chunks; the listing holds one entry per member, so it
  is bounded by max_members.
- `dest` appears complete or not at all: files are written into a hidden folder beside it, renamed to
  `dest` at the end and removed on any failure.

Statuses (ArchiveRefused.status): 415 for bytes that are neither a zip nor a tar; 422 for a refused
member, and for an archive that starts like a zip or a tar but is damaged or cut short (an upload cut
short is not an unsupported type: upload it again); 413 for a limit passed.
macOS leftovers (`__MACOSX/`, `._*`, `.DS_Store`) and folder entries are skipped silently."""

from __future__ import annotations

import bz2
import contextlib
import gzip
import io
import lzma
import re
import shutil
import stat
import struct
import tarfile
import tempfile
import unicodedata
import zipfile
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

CHUNK_BYTES = 1 << 20  # one read while copying: the memory a copy holds, and the step of every size check
RATIO_FLOOR_BYTES = 1 << 20  # ratios are judged past 1 MiB: a small, very compressible file is harmless
MAX_HEADER_BYTES = 1 << 20  # a tar member's headers (pax records, long names) and padding: real ones take KiBs
MAX_NAME_CHARS = 1024  # a member's whole path
MAX_PART_BYTES = 255  # one path component in UTF-8: what Linux file systems accept
JUNK_FOLDER, JUNK_FILE, JUNK_PREFIX = "__MACOSX", ".DS_Store", "._"  # what macOS's Finder adds to archives
ZIP_METHODS = {zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED, zipfile.ZIP_BZIP2, zipfile.ZIP_LZMA}
ZIP_MAGIC = b"PK"  # every zip record starts with it
COMPRESSIONS: tuple[tuple[bytes, Callable[[BinaryIO], io.BufferedIOBase]], ...] = (
    (b"\x1f\x8b", lambda raw: gzip.GzipFile(fileobj=raw, mode="rb")),
    (b"BZh", bz2.BZ2File),
    (b"\xfd7zXZ\x00", lzma.LZMAFile),
)
ZIP_ERRORS = (zipfile.BadZipFile, zlib.error, lzma.LZMAError, EOFError, struct.error, UnicodeDecodeError)
DECOMPRESSION_ERRORS = (EOFError, OSError, zlib.error, lzma.LZMAError)  # gzip's BadGzipFile is an OSError
_DRIVE = re.compile(r"^[A-Za-z]:")  # C:... is absolute on Windows


@dataclass(frozen=True)
class ArchiveLimits:
    """What one archive may hold. Defaults fit a large image dataset on a worker's disk."""

    max_members: int = 100_000  # entries of any kind, folders and skipped ones included
    max_unpacked_bytes: int = 8 * 2**30  # all members' inflated bytes
    max_member_bytes: int = 512 * 2**20  # one member's inflated bytes: far beyond any photo
    max_ratio: float = 200.0  # inflated / compressed bytes: images barely compress, bombs reach 1000+


class ArchiveRefused(ValueError):
    """An upload refused, with the HTTP status that says why: 413 a limit passed, 415 not an archive,
    422 a member or content refused. `detail` names the member or the limit and what to do."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail


def extract(archive: Path, dest: Path, *, limits: ArchiveLimits) -> list[str]:
    """Extract `archive` into `dest` (which must not exist; its parent must) and return the files
    written, as '/'-separated paths relative to `dest`, in archive order. Raises ArchiveRefused."""
    if dest.exists():
        raise FileExistsError(f"{dest} exists: extract into a folder that does not exist yet")
    with archive.open("rb") as raw:
        is_zip = raw.read(len(ZIP_MAGIC)) == ZIP_MAGIC
    if is_zip and not zipfile.is_zipfile(archive):
        raise _damaged("a zip without its central directory")
    return _extract_zip(archive, dest, limits) if is_zip else _extract_tar(archive, dest, limits)


@contextlib.contextmanager
def staged_dir(dest: Path) -> Iterator[Path]:
    """A new hidden folder beside `dest` to write into: renamed to `dest` when the block succeeds,
    removed when it fails, so that `dest` never holds partial files."""
    if dest.exists():
        raise FileExistsError(f"{dest} exists: write into a folder that does not exist yet")
    staging = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", suffix=".partial", dir=dest.parent))
    try:
        yield staging
        staging.rename(dest)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def _damaged(what: object) -> ArchiveRefused:
    return ArchiveRefused(422, f"the archive is damaged or cut short ({what}); upload it again or re-create it")


def _refused_member(name: str, why: str) -> ArchiveRefused:
    return ArchiveRefused(422, f"member {name!r} {why}; nothing was extracted: re-create the archive without it")


def _too_large(what: str) -> ArchiveRefused:
    return ArchiveRefused(413, f"{what}; upload a smaller archive, or split the dataset")


def _parts(name: str) -> tuple[str, ...]:
    """The path components `name` is written at, refusing any that could leave the destination."""
    unified = name.replace("\\", "/")
    if unified.startswith("/") or _DRIVE.match(unified):
        raise _refused_member(name, "has an absolute path")
    parts = tuple(unicodedata.normalize("NFC", part) for part in unified.split("/") if part not in ("", "."))
    if ".." in parts:
        raise _refused_member(name, "has a '..' component")
    try:
        sizes = [len(part.encode("utf-8")) for part in parts]
    except UnicodeEncodeError:
        raise _refused_member(name, "has a name that is not valid UTF-8") from None
    if len(unified) > MAX_NAME_CHARS or any(size > MAX_PART_BYTES for size in sizes):
        raise _refused_member(name, f"is longer than {MAX_NAME_CHARS} characters or {MAX_PART_BYTES} bytes a part")
    return parts


def _is_junk(parts: tuple[str, ...]) -> bool:
    return JUNK_FOLDER in parts or parts[-1] == JUNK_FILE or parts[-1].startswith(JUNK_PREFIX)


class _Plan:
    """The pre-check of every member, from its listing: each file's target, collisions refused, the
    member count and the declared sizes (a refusal hint only: the copy counts what it reads)."""

    def __init__(self, limits: ArchiveLimits) -> None:
        self.limits = limits
        self.files: dict[tuple[str, ...], str] = {}
        self.folders: dict[tuple[str, ...], str] = {}
        self.count = self.declared = 0

    def add(self, name: str, kind: str, size: int) -> tuple[str, ...] | None:
        """The target of member `name` ('file', 'dir' or why it is refused), or None to skip it."""
        self.count += 1
        if self.count > self.limits.max_members:
            raise _too_large(f"the archive has more than max_members = {self.limits.max_members:,} members")
        parts = _parts(name)
        if kind not in ("file", "dir"):
            raise _refused_member(name, f"is {kind}")
        if kind == "dir" or (parts and _is_junk(parts)):
            return None
        if not parts:
            raise _refused_member(name, "has an empty name")
        if size > self.limits.max_member_bytes:
            raise _too_large(f"member {name!r} declares {size:,} bytes, over max_member_bytes")
        self.declared += size
        if self.declared > self.limits.max_unpacked_bytes:
            raise _too_large(f"the members up to {name!r} declare more than max_unpacked_bytes")
        other = self.files.get(parts) or self.folders.get(parts)
        other = other or next((self.files[parts[:i]] for i in range(1, len(parts)) if parts[:i] in self.files), None)
        if other is not None:
            raise _refused_member(name, f"collides with member {other!r} once paths are normalised")
        self.files[parts] = name
        self.folders.update((parts[:i], name) for i in range(1, len(parts)))
        return parts


class _Meter:
    """Inflated bytes, counted chunk by chunk against the limits before each chunk is written."""

    def __init__(self, limits: ArchiveLimits) -> None:
        self.limits = limits
        self.total = 0

    def copy(self, read: Callable[[int], bytes], out: BinaryIO | None, name: str, compressed: int | None) -> int:
        """Copy a member from `read` to `out` (None: count only); `compressed`: its zip size, for the ratio."""
        done = 0
        while chunk := read(CHUNK_BYTES):
            done += len(chunk)
            self.total += len(chunk)
            if done > self.limits.max_member_bytes:
                raise _too_large(f"member {name!r} inflates past max_member_bytes = {self.limits.max_member_bytes:,}")
            if self.total > self.limits.max_unpacked_bytes:
                limit = self.limits.max_unpacked_bytes
                raise _too_large(f"the archive inflates past max_unpacked_bytes = {limit:,} at member {name!r}")
            if compressed is not None and done > RATIO_FLOOR_BYTES and done > self.limits.max_ratio * compressed:
                raise _too_large(
                    f"member {name!r} inflates more than max_ratio = {self.limits.max_ratio:g} times its compressed "
                    f"{compressed:,} bytes (a likely zip bomb); if it is real, store it less compressed"
                )
            if out is not None:
                out.write(chunk)
        return done


def _create(root: Path, parts: tuple[str, ...]) -> BinaryIO:
    path = root.joinpath(*parts)
    path.parent.mkdir(parents=True, exist_ok=True)
    return path.open("xb")


# --- zip ----------------------------------------------------------------------------------------


def _zip_kind(info: zipfile.ZipInfo) -> str:
    """'file', 'dir', or why the member is refused (its Unix type, encryption, compression method)."""
    kind = stat.S_IFMT(info.external_attr >> 16)
    if kind == stat.S_IFLNK:
        return "a symbolic link"
    if kind in (stat.S_IFCHR, stat.S_IFBLK, stat.S_IFIFO, stat.S_IFSOCK):
        return "a device, fifo or socket"
    if info.is_dir() or kind == stat.S_IFDIR:
        return "dir"
    if info.flag_bits & 0x1:
        return "encrypted: re-create the archive without a password"
    if info.compress_type not in ZIP_METHODS:
        return f"compressed with method {info.compress_type}, which zipfile cannot inflate: use deflate"
    return "file"


def _extract_zip(archive: Path, dest: Path, limits: ArchiveLimits) -> list[str]:
    size = archive.stat().st_size
    try:
        with zipfile.ZipFile(archive) as zf:
            plan = _Plan(limits)
            targets = [(info, plan.add(info.filename, _zip_kind(info), info.file_size)) for info in zf.infolist()]
            meter, written = _Meter(limits), []
            with staged_dir(dest) as root:
                for info, parts in targets:
                    if parts is None:
                        continue
                    compressed = max(1, min(info.compress_size, size))  # a declared size cannot pass the file's
                    with zf.open(info) as src, _create(root, parts) as out:
                        done = meter.copy(src.read, out, info.filename, compressed)
                    if done != info.file_size:
                        raise _damaged(f"member {info.filename!r} holds {done:,} bytes, declares {info.file_size:,}")
                    written.append("/".join(parts))
            return written
    except ZIP_ERRORS as exc:
        raise _damaged(exc) from exc


# --- tar ----------------------------------------------------------------------------------------


class _Inflated(io.RawIOBase):
    """A tar stream as tarfile reads it: decompressed when the bytes start with a gzip, bzip2 or xz
    magic, metered (the whole stream's ratio, past RATIO_FLOOR_BYTES), and with a ceiling on the bytes
    tarfile may read while it parses a member's headers, which it holds in memory whole."""

    def __init__(self, raw: BinaryIO, limits: ArchiveLimits) -> None:
        head = raw.read(8)
        raw.seek(0)
        opener = next((open_ for magic, open_ in COMPRESSIONS if head.startswith(magic)), None)
        self._raw, self._limits = raw, limits
        self._source: BinaryIO | io.BufferedIOBase = opener(raw) if opener else raw
        self.compressed = opener is not None
        self.inflated = 0
        self.ceiling: int | None = MAX_HEADER_BYTES
        self.after = "the start"  # the last member whole, for messages

    def readable(self) -> bool:
        return True

    def read(self, size: int | None = -1) -> bytes:
        size = CHUNK_BYTES if size is None or size < 0 else min(size, CHUNK_BYTES)
        try:
            data = self._source.read(size)
        except DECOMPRESSION_ERRORS as exc:
            raise _damaged(exc) from exc
        self.inflated += len(data)
        if self.ceiling is not None and self.inflated > self.ceiling:
            raise _too_large(f"the headers after {self.after} take more than {MAX_HEADER_BYTES:,} bytes")
        ratio = self._limits.max_ratio
        if self.compressed and self.inflated > max(RATIO_FLOOR_BYTES, ratio * self._raw.tell()):
            raise _too_large(f"the tar stream inflates more than max_ratio = {ratio:g} times its size (a likely bomb)")
        return data


def _tar_kind(member: tarfile.TarInfo, dest: Path) -> str:
    """'file', 'dir', or why the member is refused (its type, or tarfile's data filter)."""
    if member.issym():
        return "a symbolic link"
    if member.islnk():
        return "a hard link"
    if member.isdev():
        return "a device or fifo"
    if not (member.isreg() or member.isdir()):
        return f"of unsupported tar type {member.type!r}"
    try:
        tarfile.data_filter(member, str(dest))
    except tarfile.FilterError as exc:
        return f"refused by tarfile's data filter ({exc})"
    return "dir" if member.isdir() else "file"


def _tar_members(archive: Path, limits: ArchiveLimits) -> Iterator[tuple[tarfile.TarFile, tarfile.TarInfo]]:
    """Each member of the tar at `archive`, streamed once; 415 if not even its first header reads."""
    with archive.open("rb") as raw:
        stream = _Inflated(raw, limits)
        try:
            with tarfile.open(fileobj=stream, mode="r|", encoding="utf-8", errors="surrogateescape") as tar:
                yield from _each_member(tar, stream)
        except tarfile.ReadError as exc:  # _each_member turns later ones into 422
            raise ArchiveRefused(415, f"not a zip or tar archive ({exc}): upload a .zip, .tar or .tar.gz") from exc


def _each_member(tar: tarfile.TarFile, stream: _Inflated) -> Iterator[tuple[tarfile.TarFile, tarfile.TarInfo]]:
    while True:
        stream.ceiling = stream.inflated + MAX_HEADER_BYTES
        try:
            member = tar.next()
        except tarfile.TarError as exc:
            raise _damaged(exc) from exc
        if member is None:
            return
        stream.ceiling, stream.after = None, repr(member.name)
        yield tar, member  # tarfile keeps each header: about 350 bytes a member


def _copy_tar(tar: tarfile.TarFile, member: tarfile.TarInfo, out: BinaryIO | None, meter: _Meter) -> None:
    src = tar.extractfile(member)
    assert src is not None, "a regular member has data"
    try:
        meter.copy(src.read, out, member.name, None)
    except tarfile.TarError as exc:
        raise _damaged(exc) from exc


def _extract_tar(archive: Path, dest: Path, limits: ArchiveLimits) -> list[str]:
    plan, meter, targets = _Plan(limits), _Meter(limits), []
    for tar, member in _tar_members(archive, limits):  # first pass: check everything, write nothing
        targets.append(plan.add(member.name, _tar_kind(member, dest), member.size))
        if member.isreg():
            _copy_tar(tar, member, None, meter)
    meter, written = _Meter(limits), []
    with staged_dir(dest) as root:
        for index, (tar, member) in enumerate(_tar_members(archive, limits)):
            parts = targets[index]
            if parts is not None:
                with _create(root, parts) as out:
                    _copy_tar(tar, member, out, meter)
                written.append("/".join(parts))
    return written
