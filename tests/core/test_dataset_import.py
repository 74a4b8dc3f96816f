"""From an uploaded archive to the image folder ml.data reads: layouts, every image mode, skipped
files and their reasons, the seeded stratified split, statistics, the content hash, refusals. Every
archive is built here, with the builders of test_archives.py, from tiny generated images."""

from __future__ import annotations

import hashlib
import io
import json
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image
from test_archives import image_bytes, write_archive

from core.archives import ArchiveLimits, ArchiveRefused, extract
from core.dataset_import import MAX_SKIPPED, DatasetRefused, ImportSummary, import_folder


def run_import(tmp_path: Path, members: dict[str, bytes], suffix: str = ".zip", **options: Any) -> ImportSummary:
    """Archive `members`, extract the archive to tmp_path/x and import it into tmp_path/data."""
    tmp_path.mkdir(parents=True, exist_ok=True)
    archive = write_archive(tmp_path / f"upload{suffix}", members)
    extract(archive, tmp_path / "x", limits=ArchiveLimits())
    return import_folder(tmp_path / "x", tmp_path / "data", **options)


def folder_listing(dest: Path) -> dict[str, list[str]]:
    """split/class -> sorted sha256 of the files there: the image folder as ml.data sees it."""
    listing: dict[str, list[str]] = {}
    for path in sorted(dest.rglob("*")):
        if path.is_file():
            key = path.parent.relative_to(dest).as_posix()
            listing.setdefault(key, []).append(hashlib.sha256(path.read_bytes()).hexdigest())
    return {key: sorted(value) for key, value in listing.items()}


def colours(n: int, offset: int = 0) -> list[bytes]:
    """n distinct 8x8 PNGs."""
    return [image_bytes((offset + i, 2 * i % 256, 100)) for i in range(n)]


SPLIT = {
    "train/cat/a.png": image_bytes((250, 0, 0)),
    "train/cat/b.jpg": image_bytes((240, 10, 0), fmt="JPEG"),
    "train/dog/c.png": image_bytes((0, 0, 250)),
    "test/cat/d.png": image_bytes((230, 0, 0)),
    "test/dog/e.png": image_bytes((0, 0, 230)),
}
FLAT = {
    "cat/a.png": image_bytes((250, 0, 0)),
    "cat/b.jpg": image_bytes((240, 10, 0), fmt="JPEG"),
    "cat/d.png": image_bytes((230, 0, 0)),
    "dog/c.png": image_bytes((0, 0, 250)),
    "dog/e.png": image_bytes((0, 0, 230)),
    "dog/f.png": image_bytes((0, 10, 240)),
}


@pytest.mark.parametrize("wrapper", ["", "pets/"])
@pytest.mark.parametrize("suffix", [".zip", ".tar.gz"])
def test_the_train_test_layout_is_written_as_ml_data_reads_it(tmp_path: Path, wrapper: str, suffix: str) -> None:
    members = {wrapper + name: data for name, data in SPLIT.items()} | {f"{wrapper}README.md": b"# pets"}
    summary = run_import(tmp_path, members, suffix)
    assert summary.classes == ["cat", "dog"]
    assert summary.counts == {"train": {"cat": 2, "dog": 1}, "test": {"cat": 1, "dog": 1}}
    files = sorted(p.relative_to(tmp_path / "data") for p in (tmp_path / "data").rglob("*") if p.is_file())
    assert [(f.parent.as_posix(), f.stem) for f in files] == [
        ("test/cat", "0"),
        ("test/dog", "0"),
        ("train/cat", "0"),
        ("train/cat", "1"),
        ("train/dog", "0"),
    ]  # <n>.<ext>, numbered in content-hash order
    assert sorted(f.suffix for f in files) == [".jpg", ".png", ".png", ".png", ".png"]
    kept = sorted(hashlib.sha256(data).hexdigest() for data in SPLIT.values())
    assert sorted(sum(folder_listing(tmp_path / "data").values(), [])) == kept  # the original bytes
    assert summary.skipped == [{"member": f"{wrapper}README.md", "reason": "not in a class folder"}]
    assert summary.bytes == sum(len(data) for data in SPLIT.values())
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no staging folder left


@pytest.mark.parametrize("wrapper", ["", "pets/", "pets/train/"])
def test_flat_class_folders_are_split(tmp_path: Path, wrapper: str) -> None:
    summary = run_import(tmp_path, {wrapper + name: data for name, data in FLAT.items()})
    assert summary.counts == {"train": {"cat": 2, "dog": 2}, "test": {"cat": 1, "dog": 1}}


def test_ml_data_loads_the_imported_folder(tmp_path: Path) -> None:
    from ml.data import load_dataset
    from ml.specs import DatasetSpec

    run_import(tmp_path, SPLIT)
    bundle = load_dataset(DatasetSpec(name="image_folder", path="data", image_size=8), tmp_path)
    assert bundle.classes == ["cat", "dog"] and len(bundle.train) == 3 and len(bundle.test) == 2


def test_every_image_mode_and_size_is_imported(tmp_path: Path) -> None:
    modes = {
        "rgb.png": image_bytes((9, 99, 199)),
        "gray.png": image_bytes(128, mode="L"),
        "rgba.png": image_bytes((10, 20, 30, 128), mode="RGBA"),
        "sixteen.png": image_bytes(40_000, mode="I;16"),
        "palette.gif": image_bytes(3, mode="P", fmt="GIF"),
        "cmyk.jpg": image_bytes((0, 50, 100, 0), mode="CMYK", fmt="JPEG"),
        "wide.png": image_bytes((1, 2, 3), size=(64, 20)),
        "wide.bmp": image_bytes((4, 5, 6), size=(64, 20), fmt="BMP"),
        "wide.tif": image_bytes((7, 8, 9), size=(64, 20), fmt="TIFF"),
    }
    members = {f"train/a/{name}": data for name, data in modes.items()}
    members |= {"train/b/x.webp": image_bytes((5, 5, 5), fmt="WEBP"), "test/a/y.ppm": image_bytes(fmt="PPM")}
    summary = run_import(tmp_path, members)
    assert summary.counts == {"train": {"a": 9, "b": 1}, "test": {"a": 1, "b": 0}} and summary.skipped_count == 0
    assert summary.channels == 3 and len(summary.mean) == len(summary.std) == 3
    assert summary.image_size == [8, 8]  # 8 images of 8 x 8, 3 of 64 wide, 20 high
    extensions = sorted(p.suffix for p in (tmp_path / "data").rglob("*.*"))
    assert extensions == sorted([".png"] * 5 + [".gif", ".jpg", ".bmp", ".tif", ".webp", ".ppm"])


def test_the_median_size_and_grayscale_channels(tmp_path: Path) -> None:
    members = {f"train/a/{i}.png": image_bytes(i, mode="L", size=(64, 20)) for i in range(3)}
    members |= {"train/b/0.png": image_bytes(1, mode="L"), "test/b/1.png": image_bytes(60_000, mode="I;16")}
    summary = run_import(tmp_path, members)
    assert summary.channels == 1 and len(summary.mean) == len(summary.std) == 1
    assert summary.image_size == [20, 64]


def test_mean_and_std_are_over_training_thumbnails_in_zero_one(tmp_path: Path) -> None:
    members = {
        "train/red/0.png": image_bytes((255, 0, 0)),
        "train/red/1.png": image_bytes((255, 0, 0), size=(64, 20)),
        "train/clear/0.png": image_bytes((0, 0, 255, 0), mode="RGBA"),  # transparent: white, as training sees it
        "train/clear/1.png": image_bytes((0, 0, 255)),
        "test/red/0.png": image_bytes((0, 255, 0)),  # test images do not count
    }
    summary = run_import(tmp_path, members)
    assert summary.mean == pytest.approx([0.75, 0.25, 0.5])
    assert summary.std == pytest.approx([np.sqrt(0.75 * 0.25), np.sqrt(0.25 * 0.75), 0.5])


def test_16_bit_grayscale_counts_scaled_to_8_bits_as_training_sees_it(tmp_path: Path) -> None:
    members = {"train/a/0.png": image_bytes(40_000, mode="I;16"), "train/b/0.png": image_bytes(0, mode="L")}
    members |= {"test/a/0.png": image_bytes(0, mode="L")}
    summary = run_import(tmp_path, members)
    assert summary.channels == 1
    assert summary.mean == pytest.approx([40_000 / 65_535 / 2], abs=1 / 255)  # clipped, it would be 0.5


def test_skipped_files_are_listed_with_their_reasons(tmp_path: Path) -> None:
    jpeg = image_bytes((1, 2, 3), size=(64, 64), fmt="JPEG")
    members = {
        "train/a/ok.png": image_bytes(),
        "train/a/notes.txt": b"not a picture",
        "train/a/cut.jpg": jpeg[: len(jpeg) // 2],
        "train/a/huge.png": image_bytes(size=(64, 20)),
        "train/a/fake.png": b"\x89PNG\r\n\x1a\n" + bytes(40),
        "train/b/ok.png": image_bytes((1, 1, 1)),
        "test/b/ok.png": image_bytes((2, 2, 2)),
    }
    summary = run_import(tmp_path, members, max_pixels=1000)
    reasons = {entry["member"]: entry["reason"] for entry in summary.skipped}
    assert reasons["train/a/notes.txt"] == "not an image"
    assert reasons["train/a/cut.jpg"].startswith("cannot decode: ")
    assert reasons["train/a/huge.png"] == "too large: 64 x 20 px"
    assert reasons["train/a/fake.png"].startswith(("cannot decode: ", "not an image"))
    assert summary.skipped_count == len(reasons) == 4 and summary.counts["train"] == {"a": 1, "b": 1}


def test_only_the_first_skipped_files_are_listed_but_all_are_counted(tmp_path: Path) -> None:
    members = {f"train/a/{i}.txt": b"text" for i in range(MAX_SKIPPED + 30)}
    members |= {"train/a/ok.png": image_bytes(), "train/b/ok.png": image_bytes(1), "test/b/ok.png": image_bytes(2)}
    summary = run_import(tmp_path, members)
    assert len(summary.skipped) == MAX_SKIPPED and summary.skipped_count == MAX_SKIPPED + 30


def test_the_flat_split_is_stratified_and_seeded(tmp_path: Path) -> None:
    members = {f"big/{i}.png": data for i, data in enumerate(colours(20))}
    members |= {f"small/{i}.png": data for i, data in enumerate(colours(10, offset=100))}
    members |= {"pair/0.png": image_bytes((7, 7, 7)), "pair/1.png": image_bytes((8, 8, 8)), "one/0.png": image_bytes(9)}
    archive = write_archive(tmp_path / "flat.zip", members)
    extract(archive, tmp_path / "x", limits=ArchiveLimits())
    listings = {}
    for name, seed in [("a", 0), ("b", 0), ("c", 1)]:
        summary = import_folder(tmp_path / "x", tmp_path / name, test_fraction=0.2, seed=seed)
        assert summary.counts["test"] == {"big": 4, "small": 2, "pair": 1, "one": 0}
        assert summary.counts["train"] == {"big": 16, "small": 8, "pair": 1, "one": 1}
        listings[name] = folder_listing(tmp_path / name)
    assert listings["a"] == listings["b"]
    assert listings["a"]["test/big"] != listings["c"]["test/big"]
    assert sorted(listings["a"]["test/big"] + listings["a"]["train/big"]) == sorted(
        listings["c"]["test/big"] + listings["c"]["train/big"]
    )


def test_the_content_hash_depends_on_the_images_only(tmp_path: Path) -> None:
    images = {
        f"{label}/{i}.png": data for n, label in enumerate(("cat", "dog")) for i, data in enumerate(colours(6, 50 * n))
    }
    renamed = {name.replace(".png", f"-{i}.PNG"): data for i, (name, data) in enumerate(reversed(images.items()))}
    first = run_import(tmp_path / "a", images, ".zip")
    again = run_import(tmp_path / "b", renamed, ".tar.gz")  # other format, order and file names
    assert first.sha256 == again.sha256 and folder_listing(tmp_path / "a/data") == folder_listing(tmp_path / "b/data")
    pixels = np.asarray(Image.open(io.BytesIO(images["cat/0.png"]))).copy()
    pixels[0, 0, 0] ^= 1
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "PNG")
    assert run_import(tmp_path / "c", images | {"cat/0.png": buffer.getvalue()}).sha256 != first.sha256
    assert run_import(tmp_path / "d", images, seed=1).sha256 != first.sha256  # another split, another dataset


@pytest.mark.parametrize(
    ("members", "message"),
    [
        ({"a.png": image_bytes(), "b.png": image_bytes(1)}, "no class folders"),
        ({"cat/a.png": image_bytes(), "cat/b.png": image_bytes(1)}, "only one class ('cat')"),
        ({"train/cat/a.png": image_bytes(), "test/cat/b.png": image_bytes(1)}, "only one class ('cat')"),
        ({"cat/a.png": image_bytes(), "dog/notes.txt": b"x"}, "class 'dog' has no decodable training image"),
        (
            {"train/cat/a.png": image_bytes(), "train/dog/a.jpg": b"\xff\xd8\xff", "test/dog/b.png": image_bytes(1)},
            "class 'dog' has no decodable training image: 1 file(s) skipped (first: ",
        ),
        ({**SPLIT, "test/bird/x.png": image_bytes(5)}, "test class 'bird' is not among train's classes"),
        ({**SPLIT, "val/cat/x.png": image_bytes(5)}, "folder 'val' lies beside train/ and test/"),
        ({"test/cat/a.png": image_bytes(), "test/dog/b.png": image_bytes(1)}, "test/ has no train/"),
        ({"cat/a.png": image_bytes(), "dog/b.png": image_bytes(1)}, "the test split would be empty"),
        ({**FLAT, ".cache/a.png": image_bytes(5)}, "class folder '.cache' is hidden"),
        ({**FLAT, f"{'x' * 101}/a.png": image_bytes(5)}, "is longer than 100 characters"),
        ({**FLAT, " /a.png": image_bytes(5)}, "class folder ' ' is empty"),
        ({**FLAT, "bad\x07name/a.png": image_bytes(5)}, "holds a control character"),
    ],
)
def test_what_is_not_a_dataset_is_refused_and_leaves_nothing(
    tmp_path: Path, members: dict[str, bytes], message: str
) -> None:
    archive = write_archive(tmp_path / "upload.tar", members)
    extract(archive, tmp_path / "x", limits=ArchiveLimits())
    (tmp_path / "out").mkdir()
    with pytest.raises(DatasetRefused) as caught:
        import_folder(tmp_path / "x", tmp_path / "out" / "data")
    assert isinstance(caught.value, ArchiveRefused) and caught.value.status == 422
    assert message in caught.value.detail
    assert list((tmp_path / "out").iterdir()) == []


def test_a_failure_while_writing_leaves_no_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    copied: list[object] = []
    copyfile = shutil.copyfile

    def copy_then_fail(source: Path, target: Path, **options: Any) -> None:
        if len(copied) == 3:
            raise OSError(28, "No space left on device")
        copied.append(copyfile(source, target, **options))

    monkeypatch.setattr(shutil, "copyfile", copy_then_fail)
    with pytest.raises(OSError, match="No space left"):
        run_import(tmp_path, SPLIT)
    assert len(copied) == 3 and not (tmp_path / "data").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["upload.zip", "x"]


def test_progress_is_reported_every_hundred_images(tmp_path: Path) -> None:
    members = {f"{label}/{i}.png": image_bytes((i % 256, i // 256, ord(label))) for label in "ab" for i in range(125)}
    calls: list[tuple[int, int]] = []
    run_import(tmp_path, members, progress=lambda done, total: calls.append((done, total)))
    assert calls == [(100, 250), (200, 250), (250, 250)]


def test_the_summary_is_json(tmp_path: Path) -> None:
    summary = run_import(tmp_path, SPLIT)
    data = json.loads(json.dumps(summary.to_dict()))
    assert data["classes"] == ["cat", "dog"] and data["channels"] == 3 and len(data["sha256"]) == 64
    assert set(data) == {
        "classes",
        "counts",
        "image_size",
        "channels",
        "mean",
        "std",
        "bytes",
        "sha256",
        "skipped",
        "skipped_count",
    }


def test_a_test_fraction_outside_zero_one_is_a_value_error(tmp_path: Path) -> None:
    for fraction in (0.0, 1.0, -0.1):
        with pytest.raises(ValueError, match="test_fraction"):
            run_import(tmp_path / str(fraction), FLAT, test_fraction=fraction)


@pytest.mark.slow  # about 10 s on 2 shared cores: 40,000 files created, 20,000 images decoded
def test_twenty_thousand_tiny_members_import_in_bounded_time(tmp_path: Path) -> None:
    tiny = [image_bytes((i % 256, i // 256 % 256, 0), size=(2, 2)) for i in range(10_000)]
    members = {f"set/{label}/{i}.png": data for label in ("a", "b") for i, data in enumerate(tiny)}
    archive = write_archive(tmp_path / "many.zip", members)
    start = time.perf_counter()
    written = extract(archive, tmp_path / "x", limits=ArchiveLimits())
    extracted = time.perf_counter() - start
    summary = import_folder(tmp_path / "x", tmp_path / "data")
    imported = time.perf_counter() - start - extracted
    assert len(written) == 20_000 and summary.counts["test"] == {"a": 2000, "b": 2000}
    assert extracted < 30 and imported < 60, f"extract {extracted:.1f} s, import {imported:.1f} s"
