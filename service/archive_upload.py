"""A dataset archive upload: a multipart body read as a stream, its one file part written to disk
chunk by chunk (never held in memory), with a running count that stops it with 413 the moment it
passes MAX_DATASET_BYTES, and its few text fields (name, test_fraction, seed) bounded in size."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from fastapi import HTTPException, Request, status
from fastapi.exceptions import RequestValidationError
from python_multipart.exceptions import FormParserError
from python_multipart.multipart import MultipartParser, parse_options_header

from service.uploads import MAX_PART_HEADER_BYTES, MAX_PART_HEADERS

TEXT_FIELDS = ("name", "test_fraction", "seed")
MAX_TEXT_BYTES = 256  # a field's value: a name of 100 characters fits, in any script
MULTIPART_OVERHEAD_BYTES = 64 * 1024  # what a body holds beside the archive: boundaries, headers, text fields
NO_ARCHIVE = "no archive: send a .zip, .tar or .tar.gz in the form field 'file' of a multipart/form-data body"


def invalid(name: str, message: str) -> RequestValidationError:
    return RequestValidationError([{"type": "value_error", "loc": ("body", name), "msg": message}])


@dataclass
class ArchiveForm:
    """What the form held: the archive's file name and size on disk, and the text fields."""

    filename: str | None = None
    size: int = 0
    fields: dict[str, str] = field(default_factory=dict)


class _ArchiveReader:
    """python-multipart callbacks: the part `file` to `out`, the TEXT_FIELDS kept as text."""

    def __init__(self, out: BinaryIO, max_bytes: int) -> None:
        self.out, self.max_bytes, self.form = out, max_bytes, ArchiveForm()
        self._headers: dict[bytes, bytes] = {}
        self._name, self._value = b"", b""
        self._field: str | None = None
        self._text = bytearray()

    def on_part_begin(self) -> None:
        self._headers, self._field, self._text = {}, None, bytearray()

    def on_header_field(self, data: bytes, start: int, end: int) -> None:
        self._name += data[start:end]

    def on_header_value(self, data: bytes, start: int, end: int) -> None:
        self._value += data[start:end]

    def on_header_end(self) -> None:
        self._headers[self._name.strip().lower()] = self._value.strip()
        self._name, self._value = b"", b""

    def on_headers_finished(self) -> None:
        _, options = parse_options_header(self._headers.get(b"content-disposition", b""))
        name = options.get(b"name", b"").decode("utf-8", "replace")
        if name == "file":
            if b"filename" not in options:
                raise invalid("file", "form field 'file' must be a file upload (the archive), not a value")
            if self.form.filename is not None:
                raise invalid("file", "one archive per upload: the form has more than one 'file'")
            self.form.filename = options[b"filename"].decode("utf-8", "replace")
        elif name not in TEXT_FIELDS:
            raise invalid(name or "file", f"unexpected form field {name!r}; expected 'file' and {list(TEXT_FIELDS)}")
        self._field = name

    def on_part_data(self, data: bytes, start: int, end: int) -> None:
        if self._field == "file":
            self.form.size += end - start
            if self.form.size > self.max_bytes:
                raise HTTPException(
                    status.HTTP_413_CONTENT_TOO_LARGE,
                    f"the archive is larger than MAX_DATASET_BYTES ({self.max_bytes} bytes)",
                )
            self.out.write(data[start:end])
            return
        self._text += data[start:end]
        if len(self._text) > MAX_TEXT_BYTES:
            raise invalid(self._field or "file", f"form field {self._field!r} is longer than {MAX_TEXT_BYTES} bytes")

    def on_part_end(self) -> None:
        if self._field in TEXT_FIELDS:
            try:
                self.form.fields[self._field] = self._text.decode("utf-8")
            except UnicodeDecodeError:
                raise invalid(self._field, f"form field {self._field!r} is not UTF-8 text") from None

    def callbacks(self) -> dict[str, Callable[..., None]]:
        names = ("part_begin", "header_field", "header_value", "header_end", "headers_finished", "part_data")
        return {f"on_{name}": getattr(self, f"on_{name}") for name in (*names, "part_end")}


async def receive_archive(request: Request, path: Path, *, max_bytes: int) -> ArchiveForm:
    """The archive of a multipart upload, written to `path` as it arrives; its text fields. 413 past
    `max_bytes`, 422 naming the field for a missing archive or an unexpected field, 400 for a malformed
    body. `path` is removed when anything fails."""
    content_type, options = parse_options_header(request.headers.get("content-type", ""))
    if content_type != b"multipart/form-data" or b"boundary" not in options:
        raise invalid("file", NO_ARCHIVE)
    try:
        with path.open("wb") as out:
            reader = _ArchiveReader(out, max_bytes)
            parser = MultipartParser(
                options[b"boundary"],
                reader.callbacks(),  # type: ignore[arg-type]
                max_header_count=MAX_PART_HEADERS,
                max_header_size=MAX_PART_HEADER_BYTES,
            )
            async for chunk in request.stream():
                parser.write(chunk)
            parser.finalize()
    except FormParserError as exc:
        path.unlink(missing_ok=True)
        raise HTTPException(status.HTTP_400_BAD_REQUEST, f"malformed multipart body: {exc}") from exc
    except BaseException:
        path.unlink(missing_ok=True)
        raise
    if reader.form.filename is None or reader.form.size == 0:
        path.unlink(missing_ok=True)
        raise invalid("file", NO_ARCHIVE)
    return reader.form
