"""Image uploads: multipart read as a stream with a running byte count per file (413 the moment
one exceeds MAX_UPLOAD_BYTES, before the rest arrives; the whole body is bounded by MAX_PREDICT_BYTES
in service.middleware), part headers bounded, then sniffed and decoded with Pillow (415 for anything
that is not a complete image, 413 for decompression bombs and for more pixels than the request's
budget, MAX_PREDICT_PIXELS, which counts the pixels decoding will cost: its time, on the model thread).

Worst-case memory of one request: its body (at most MAX_PREDICT_BYTES, 32 MiB by default), one image
decoded in full (at most MAX_PIXELS, 4 bytes each: 160 MB), and every image fitted to the model's
input (at most 256 px a side, ml.specs.MAX_IMAGE_SIZE: 64 x 256 x 256 x 4 bytes, 17 MB). Images are
decoded one at a time, on the API's one model thread (service.predictions), so one full decode is in
memory per API process; JPEGs are reduced while they decode (Pillow's draft mode), no further than the
model's input size, as training decodes an image folder (ml.data)."""

from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import dataclass, field
from io import BytesIO

from fastapi import HTTPException, Request, status
from fastapi.exceptions import RequestValidationError
from PIL import Image, UnidentifiedImageError
from python_multipart.exceptions import FormParserError
from python_multipart.multipart import MultipartParser, parse_options_header

FILE_FIELDS = ("file", "files")
MAX_FILES = 64  # images per request: one inference batch, not an archive
MAX_PIXELS = 40_000_000  # per image (e.g. 8000x5000): beyond any photo, below a decompression bomb
MAX_PART_HEADER_BYTES = 2048  # one header line of a part: a 255-character UTF-8 filename fits twice
MAX_PART_HEADERS = 8  # a part has two or three

Image.MAX_IMAGE_PIXELS = min(Image.MAX_IMAGE_PIXELS or MAX_PIXELS, MAX_PIXELS)  # never unbounded

# Everything Pillow raises for a file that is not a complete image of a format it knows.
DECODE_ERRORS = (OSError, SyntaxError, ValueError, EOFError, IndexError, TypeError, struct.error)

OPENAPI_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "properties": {
                        "file": {"type": "string", "format": "binary", "description": "one image"},
                        "files": {
                            "type": "array",
                            "items": {"type": "string", "format": "binary"},
                            "description": f"several images (at most {MAX_FILES})",
                        },
                    },
                }
            }
        },
    }
}


@dataclass
class Upload:
    filename: str
    data: bytearray = field(default_factory=bytearray)


def too_large(message: str) -> HTTPException:
    return HTTPException(status.HTTP_413_CONTENT_TOO_LARGE, message)


def not_an_image(message: str) -> HTTPException:
    return HTTPException(status.HTTP_415_UNSUPPORTED_MEDIA_TYPE, message)


class _FormReader:
    """python-multipart callbacks collecting the file parts named `file`/`files`."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.uploads: list[Upload] = []
        self._headers: dict[bytes, bytes] = {}
        self._name, self._value = b"", b""
        self._current: Upload | None = None

    def on_part_begin(self) -> None:
        self._headers, self._current = {}, None

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
        if name not in FILE_FIELDS:
            raise _invalid_field(name, f"unexpected form field {name!r}; send images in 'file' or 'files'")
        if b"filename" not in options:
            raise _invalid_field(name, f"form field {name!r} must be a file upload (an image), not a value")
        if len(self.uploads) >= MAX_FILES:
            raise too_large(f"too many files: at most {MAX_FILES} images per request")
        self._current = Upload(filename=options[b"filename"].decode("utf-8", "replace") or f"image{len(self.uploads)}")
        self.uploads.append(self._current)

    def on_part_data(self, data: bytes, start: int, end: int) -> None:
        assert self._current is not None  # on_headers_finished raised for non-file parts
        if len(self._current.data) + (end - start) > self.max_bytes:
            raise too_large(f"file {self._current.filename!r} is larger than MAX_UPLOAD_BYTES ({self.max_bytes} bytes)")
        self._current.data += data[start:end]

    def callbacks(self) -> dict[str, Callable[..., None]]:
        names = ("part_begin", "header_field", "header_value", "header_end", "headers_finished", "part_data")
        return {f"on_{name}": getattr(self, f"on_{name}") for name in names}


def _invalid_field(name: str, message: str) -> RequestValidationError:
    return RequestValidationError([{"type": "value_error", "loc": ("body", name or "file"), "msg": message}])


NO_FILE = "no image: send one in the form field 'file' (or several in 'files') of a multipart/form-data body"


async def read_uploads(request: Request, *, max_bytes: int) -> list[Upload]:
    """The images of a multipart request (fields `file` and/or `files`), each at most `max_bytes`.
    No body, or one that is not multipart, lacks the `file` field: 422 naming it."""
    content_type, options = parse_options_header(request.headers.get("content-type", ""))
    if content_type != b"multipart/form-data" or b"boundary" not in options:
        raise _invalid_field("file", NO_FILE)
    reader = _FormReader(max_bytes)
    parser = MultipartParser(
        options[b"boundary"],
        reader.callbacks(),  # type: ignore[arg-type]
        max_header_count=MAX_PART_HEADERS,
        max_header_size=MAX_PART_HEADER_BYTES,
    )
    try:
        async for chunk in request.stream():
            parser.write(chunk)
        parser.finalize()
    except FormParserError as exc:
        raise HTTPException(status.HTTP_400_BAD_REQUEST, f"malformed multipart body: {exc}") from exc
    if not reader.uploads:
        raise _invalid_field("file", NO_FILE)
    return reader.uploads


def decode_images(
    uploads: list[Upload], *, max_pixels: int, size: int, fit: Callable[[Image.Image], Image.Image]
) -> list[Image.Image]:
    """Every upload decoded for a model of `size` px inputs (decode_image), one at a time, and handed to
    `fit` (the predictor's: the model's input, as training makes it) before the next is decoded; the
    raw bytes of each are dropped once it is decoded. 413 before any decoding when the images' headers
    declare more than `max_pixels` together."""
    declared = sum(_declared_pixels(upload, size) for upload in uploads)
    if declared > max_pixels:
        raise too_large(
            f"the images hold {declared} pixels together; at most {max_pixels} per request "
            "(MAX_PREDICT_PIXELS): send fewer or smaller images"
        )
    images = []
    for upload in uploads:
        images.append(fit(decode_image(upload, size=size)))
        upload.data = bytearray()
    return images


def _declared_pixels(upload: Upload, size: int) -> int:
    """The pixels decoding the image will cost, from its header (nothing decoded): width x height at the
    scale it will be decoded at (a JPEG's draft scale, 1/8 of a side for a large photo; other formats in
    full); 0 when it is no image (decode says so)."""
    try:
        with Image.open(BytesIO(upload.data)) as probe:
            _check_pixels(upload.filename, probe)  # one image too large says so, before the request's sum
            probe.draft(None, (size, size))  # a JPEG's size as decode_image decodes it
            return probe.size[0] * probe.size[1]
    except Image.DecompressionBombError as exc:
        raise too_large(f"file {upload.filename!r} has too many pixels: {exc}") from exc
    except DECODE_ERRORS:
        return 0


def decode_image(upload: Upload, *, size: int) -> Image.Image:
    """The upload as a decoded Pillow image for a model of `size` px inputs (its EXIF rotation kept for
    the predictor); 415 if it is not one, 413 for too many pixels. A JPEG is decoded at the smallest
    scale (draft mode's 1/2, 1/4 or 1/8) that keeps `size` px on both sides, as ml.data decodes an image
    folder's files for training, so that the predictor's one resize starts from the pixels training's
    did; other formats in full."""
    name = upload.filename
    if not upload.data:
        raise not_an_image(f"file {name!r} is empty; expected an image")
    try:
        with Image.open(BytesIO(upload.data)) as probe:
            _check_pixels(name, probe)
            probe.verify()  # structure and checksums, without decoding
        image = Image.open(BytesIO(upload.data))
        _check_pixels(name, image)
        image.draft(None, (size, size))  # JPEG: decode at 1/2, 1/4 or 1/8 scale, as ml.data._decode_image
        image.load()  # decodes every pixel: catches truncated data that verify() lets through
    except Image.DecompressionBombError as exc:
        raise too_large(f"file {name!r} has too many pixels: {exc}") from exc
    except DECODE_ERRORS as exc:
        reason = "not a format Pillow reads" if isinstance(exc, UnidentifiedImageError) else str(exc)
        raise not_an_image(f"file {name!r} is not a readable image (or is truncated): {reason}") from exc
    return image


def _check_pixels(name: str, image: Image.Image) -> None:
    width, height = image.size
    if width * height > MAX_PIXELS:
        raise too_large(f"file {name!r} has too many pixels: {width}x{height}; at most {MAX_PIXELS} per image")
