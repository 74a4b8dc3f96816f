"""From an extracted archive (core.archives.extract) to an image folder as ml.data reads it:
`dest/train/<class>/<n>.<ext>` and `dest/test/<class>/<n>.<ext>`, no hidden files.

Layouts, optionally inside one wrapping folder (`pets/train/cat/1.jpg`): `train/<class>/...` with
`test/<class>/...` (a train/ alone is split as the flat layout is), or flat `<class>/...`, each class
then split by `test_fraction`, stratified and seeded (numpy's default_rng): at least one training image
a class, and one test image when a class has two or more. Images anywhere below a class folder belong
to it. Class names are the folder names; empty, hidden ('.'), control-character or over-long names
are refused, as are fewer than 2 classes, a class without a decodable training image, a test class
that train lacks and an empty test split: DatasetRefused, 422.

Every file is opened once with Pillow (JPEG and MPO, PNG, GIF, BMP, TIFF, WebP, PPM/PGM/PBM: formats
with well-trodden decoders; Pillow's decompression-bomb check is an error). Files are skipped with a
reason: "not an image", "cannot decode: ...", "too large: W x H px" (over max_pixels, before decoding),
"not in a class folder". A kept image is written as its original bytes under a new name, `<n>.<ext>`,
ext from the detected format; images are ordered by content hash, so the split and the names depend on
the images only, never on the archive's order or file names.

Worst-case memory: one image decoded whole (max_pixels, 4 bytes a pixel, twice while converting:
128 MB at the default) and a few numbers per image; JPEGs decode at a reduced scale (Pillow's draft)."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import shutil
import struct
import unicodedata
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
from PIL import Image, ImageMode, UnidentifiedImageError

from core.archives import CHUNK_BYTES, ArchiveRefused, staged_dir

IMAGE_FORMATS = ("JPEG", "PNG", "GIF", "BMP", "TIFF", "WEBP", "PPM")  # what Pillow may open (JPEG covers MPO)
EXTENSIONS = {"JPEG": "jpg", "MPO": "jpg", "TIFF": "tif"}  # the rest: the format's name in lower case
DECODE_ERRORS = (OSError, SyntaxError, ValueError, EOFError, IndexError, TypeError, struct.error)
STATS_SIDE = 32  # mean/std are taken over each training image resized to 32 x 32 px: each weighs the same
BACKGROUND = (255, 255, 255)  # transparent pixels are composited on white, as ml.data's fit_image does
# 16-bit, 32-bit and float grayscale: scaled to 8 bits by its type's range, as ml.data's fit_image does
HIGH_BIT_MODES = ("I", "I;16", "I;16B", "I;16L", "I;16N", "F")
MAX_CLASS_NAME = 100  # characters
MAX_SKIPPED = 100  # skipped files listed in the summary; all are counted
PROGRESS_EVERY = 100  # images between progress calls
SPLITS = ("train", "test")


class DatasetRefused(ArchiveRefused):
    """The archive unpacked, but it does not hold a dataset (422). An ArchiveRefused, so that one
    handler maps both to their status."""

    def __init__(self, detail: str) -> None:
        super().__init__(422, detail)


@dataclass(frozen=True)
class ImportSummary:
    """What an import kept. mean/std: per channel over every training image, converted to "RGB"
    (transparency on white) and resized to STATS_SIDE x STATS_SIDE, as floats in [0, 1]; one value each
    when `channels` is 1 (every image grayscale). image_size: [height, width], each the median over all
    kept images. sha256: of the sorted (split, class, sha256 of the file) triples, so the same images
    in the same classes give the same hash whatever the archive's format, order or file names."""

    classes: list[str]
    counts: dict[str, dict[str, int]]
    image_size: list[int]
    channels: int
    mean: list[float]
    std: list[float]
    bytes: int
    sha256: str
    skipped: list[dict[str, str]]
    skipped_count: int

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass
class _Image:
    path: Path
    label: str
    split: str | None  # None until the flat layout is split
    digest: str
    ext: str
    height: int
    width: int
    gray: bool
    moments: np.ndarray  # (2, 3): per RGB channel, the sum and the sum of squares over the thumbnail


@dataclass
class _Layout:
    classes: list[str]
    files: list[tuple[Path, str, str | None]]  # (file, class, split; None: to be split)
    strays: list[Path]  # files outside any class folder


def import_folder(
    extracted: Path,
    dest: Path,
    *,
    test_fraction: float = 0.2,
    seed: int = 0,
    max_pixels: int = 16_000_000,
    progress: Callable[[int, int], None] | None = None,
) -> ImportSummary:
    """Decode every file of the extracted archive at `extracted` once, and write the images kept into
    the new folder `dest` (complete, or not at all). `progress(done, total)` is called every
    PROGRESS_EVERY files and at the end. Raises DatasetRefused (422)."""
    if not 0 < test_fraction < 1:
        raise ValueError(f"test_fraction {test_fraction!r} must lie between 0 and 1, both excluded")
    layout = _layout(extracted)
    skipped = dict.fromkeys(layout.strays, "not in a class folder")
    images = []
    for done, (path, label, split) in enumerate(layout.files, 1):
        read = _read(path, label, split, max_pixels)
        if isinstance(read, str):
            skipped[path] = read
        else:
            images.append(read)
        if progress is not None and (done % PROGRESS_EVERY == 0 or done == len(layout.files)):
            progress(done, len(layout.files))
    _check_classes(layout, images, skipped)
    if any(image.split is None for image in images):
        _split(images, test_fraction, seed)
    if not any(image.split == "test" for image in images):
        raise DatasetRefused("the test split would be empty: give a class 2 or more images, or add test/<class>/")
    images.sort(key=lambda image: (image.split or "", image.label, image.digest, image.path))
    _write(images, dest)
    members = [{"member": path.relative_to(extracted).as_posix(), "reason": why} for path, why in skipped.items()]
    return _summary(layout.classes, images, members)


def check_layout(extracted: Path) -> list[str]:
    """The classes of an extracted archive, checked without decoding anything (fast enough to answer an
    upload with): DatasetRefused for a layout import_folder would refuse, or a class without any file
    to train on. Whether the files decode is the import's to find."""
    layout = _layout(extracted)
    training = {label for _, label, split in layout.files if split != "test"}
    if empty := [name for name in layout.classes if name not in training]:
        raise DatasetRefused(f"class {empty[0]!r} has no training image: add images or remove the folder")
    return layout.classes


def _children(folder: Path) -> tuple[list[Path], list[Path]]:
    """The folders and the files directly in `folder`, sorted; links are neither."""
    entries = sorted(p for p in folder.iterdir() if not p.is_symlink())
    return [p for p in entries if p.is_dir()], [p for p in entries if p.is_file()]


def _layout(extracted: Path) -> _Layout:
    root = extracted
    folders, strays = _children(root)
    if len(folders) == 1 and folders[0].name not in SPLITS and _children(folders[0])[0]:
        root = folders[0]  # one wrapping folder
        folders, more = _children(root)
        strays += more
    names = [folder.name for folder in folders]
    if "train" not in names:
        if "test" in names:
            raise DatasetRefused("test/ has no train/ beside it: add train/<class>/ folders")
        return _classes(folders, {None: folders}, strays)
    if others := sorted(set(names) - set(SPLITS)):
        raise DatasetRefused(f"folder {others[0]!r} lies beside train/ and test/: move its images into them")
    train, more = _children(root / "train")
    strays += more
    if "test" not in names:  # train/ alone: split as the flat layout is
        return _classes(train, {None: train}, strays)
    test, more = _children(root / "test")
    strays += more
    if extra := sorted({folder.name for folder in test} - {folder.name for folder in train}):
        raise DatasetRefused(
            f"test class {extra[0]!r} is not among train's classes: add train/{extra[0]}/ or remove it"
        )
    return _classes(train, {"train": train, "test": test}, strays)


def _classes(train: list[Path], by_split: dict[str | None, list[Path]], strays: list[Path]) -> _Layout:
    classes = [folder.name for folder in train]
    for name in classes:
        _check_class_name(name)
    if not classes:
        raise DatasetRefused(
            "no class folders: the archive needs train/<class>/<image> and test/<class>/<image>, or <class>/<image>"
        )
    if len(classes) < 2:
        raise DatasetRefused(f"only one class ({classes[0]!r}): a classifier needs 2 or more class folders")
    files = []
    for split, folders in by_split.items():
        for folder in folders:
            found = sorted(p for p in folder.rglob("*") if p.is_file() and not p.is_symlink())
            files += [(path, folder.name, split) for path in found]
    return _Layout(classes, files, strays)


def _check_class_name(name: str) -> None:
    if not name.strip():
        why = "is empty"
    elif name.startswith("."):
        why = "is hidden (starts with '.')"
    elif len(name) > MAX_CLASS_NAME:
        why = f"is longer than {MAX_CLASS_NAME} characters"
    elif any(unicodedata.category(char) == "Cc" for char in name):
        why = "holds a control character"
    else:
        return
    raise DatasetRefused(f"class folder {name!r} {why}: rename it, class names are folder names")


def _read(path: Path, label: str, split: str | None, max_pixels: int) -> _Image | str:
    """The image at `path`, hashed and decoded once, or why it is skipped."""
    with path.open("rb") as file:
        digest = _sha256(file)
        file.seek(0)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("error", Image.DecompressionBombWarning)
                with Image.open(file, formats=IMAGE_FORMATS) as image:
                    width, height = image.size
                    if width * height > max_pixels:
                        return f"too large: {width} x {height} px"
                    gray = ImageMode.getmode(image.mode).basemode == "L"
                    image.draft("L" if gray else "RGB", (STATS_SIDE, STATS_SIDE))  # JPEG: decode at a reduced scale
                    moments = _moments(image)
                    ext = EXTENSIONS.get(str(image.format), str(image.format).lower())
        except UnidentifiedImageError:
            return "not an image"
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
            return f"too large: {exc}"
        except DECODE_ERRORS as exc:
            return f"cannot decode: {exc}"
    return _Image(path, label, split, digest, ext, height, width, gray, moments)


def _moments(image: Image.Image) -> np.ndarray:
    if image.mode in HIGH_BIT_MODES:  # Pillow's convert would clip them to 255
        values = np.asarray(image, np.float64)
        peak = float(values.max(initial=0.0))
        scale = 1.0 if peak <= 255 else 255.0 / (65535.0 if peak <= 65535 else peak)
        image = Image.fromarray(np.clip(values * scale, 0, 255).astype(np.uint8))
    if image.mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")
    if "A" in image.getbands():
        rgba = image.convert("RGBA")
        image = Image.alpha_composite(Image.new("RGBA", rgba.size, (*BACKGROUND, 255)), rgba)
    thumb = image.convert("RGB").resize((STATS_SIDE, STATS_SIDE), Image.Resampling.BILINEAR)
    pixels = np.asarray(thumb, np.float64).reshape(-1, 3) / 255
    return np.stack([pixels.sum(0), (pixels**2).sum(0)])


def _sha256(file: BinaryIO) -> str:
    digest = hashlib.sha256()
    while chunk := file.read(CHUNK_BYTES):
        digest.update(chunk)
    return digest.hexdigest()


def _check_classes(layout: _Layout, images: list[_Image], skipped: dict[Path, str]) -> None:
    training = {image.label for image in images if image.split != "test"}
    for name in layout.classes:
        if name not in training:
            reasons = [skipped[path] for path, label, split in layout.files if label == name and split != "test"]
            first = f" (first: {reasons[0]})" if reasons else ""
            raise DatasetRefused(
                f"class {name!r} has no decodable training image: {len(reasons)} file(s) skipped{first}; "
                "add images or remove the folder"
            )


def _split(images: list[_Image], test_fraction: float, seed: int) -> None:
    """Split each class: round(n * test_fraction) test images, at least 1 when n >= 2, at most n - 1;
    the images ordered by content hash, then permuted by one generator over the sorted classes."""
    by_class: dict[str, list[_Image]] = {}
    for image in sorted(images, key=lambda image: (image.digest, image.path)):
        by_class.setdefault(image.label, []).append(image)
    rng = np.random.default_rng(seed)
    for label in sorted(by_class):
        members = by_class[label]
        n_test = min(max(round(len(members) * test_fraction), 1), len(members) - 1)
        for rank, index in enumerate(rng.permutation(len(members))):
            members[index].split = "test" if rank < n_test else "train"


def _write(images: list[_Image], dest: Path) -> None:
    with staged_dir(dest) as root:
        numbers: dict[tuple[str, str], int] = {}
        for image in images:
            assert image.split is not None, "every image has its split before writing"
            key = (image.split, image.label)
            numbers[key] = numbers.get(key, -1) + 1
            folder = root / image.split / image.label
            folder.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(image.path, folder / f"{numbers[key]}.{image.ext}")


def _summary(classes: list[str], images: list[_Image], skipped: list[dict[str, str]]) -> ImportSummary:
    counts = {split: dict.fromkeys(classes, 0) for split in SPLITS}
    for image in images:
        counts[str(image.split)][image.label] += 1
    channels = 1 if all(image.gray for image in images) else 3
    moments = sum((image.moments for image in images if image.split == "train"), np.zeros((2, 3)))
    mean = moments[0] / (sum(counts["train"].values()) * STATS_SIDE**2)
    std = np.sqrt(np.maximum(moments[1] / (sum(counts["train"].values()) * STATS_SIDE**2) - mean**2, 0))
    triples = sorted((str(image.split), image.label, image.digest) for image in images)
    return ImportSummary(
        classes=sorted(classes),
        counts=counts,
        image_size=[_median([image.height for image in images]), _median([image.width for image in images])],
        channels=channels,
        mean=[round(float(value), 6) for value in mean[:channels]],
        std=[round(float(value), 6) for value in std[:channels]],
        bytes=sum(image.path.stat().st_size for image in images),
        sha256=hashlib.sha256(json.dumps(triples).encode()).hexdigest(),
        skipped=skipped[:MAX_SKIPPED],
        skipped_count=len(skipped),
    )


def _median(values: list[int]) -> int:
    return round(float(np.median(values)))
