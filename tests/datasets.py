"""Tiny real datasets written in the formats the loaders read, and a loopback HTTP server that
serves them as a download would, for tests (import as `datasets`: pytest puts tests/ on sys.path
because tests/conftest.py lives there)."""

from __future__ import annotations

import pickle
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

CIFAR10_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
CIFAR_BATCHES = 5  # data_batch_1..5, as the real dataset
SHAPES = ("circle", "square", "triangle")
TINT = (1.0, 0.75, 0.5)  # R, G, B gains: gray Fashion-MNIST made into 3 channels that differ


def write_cifar_batches(
    folder: Path,
    images: np.ndarray,
    labels: np.ndarray,
    *,
    test_images: np.ndarray | None = None,
    test_labels: np.ndarray | None = None,
    classes: list[str] = CIFAR10_CLASSES,
) -> Path:
    """Write uint8 (N, 32, 32, 3) images as the CIFAR-10 python version into `folder` (the
    `cifar-10-batches-py` folder itself): the train images split over 5 data batches, the test
    images (the train images when not given) as test_batch, and batches.meta."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    if test_images is None:
        test_images, test_labels = images, labels
    for i, part in enumerate(np.array_split(np.arange(len(images)), CIFAR_BATCHES)):
        _write_batch(folder / f"data_batch_{i + 1}", images[part], labels[part], f"training batch {i + 1} of 5")
    _write_batch(folder / "test_batch", test_images, test_labels, "testing batch 1 of 1")
    meta = {b"label_names": [c.encode() for c in classes], b"num_cases_per_batch": len(images) // 5, b"num_vis": 3072}
    with open(folder / "batches.meta", "wb") as f:
        pickle.dump(meta, f, protocol=4)
    return folder


def _write_batch(path: Path, images: np.ndarray, labels: np.ndarray, title: str) -> None:
    assert images.shape[1:] == (32, 32, 3) and images.dtype == np.uint8, (images.shape, images.dtype)
    batch = {
        b"batch_label": title.encode(),
        b"labels": [int(label) for label in labels],
        b"data": np.ascontiguousarray(images.transpose(0, 3, 1, 2).reshape(len(images), 3072)),  # planar
        b"filenames": [f"{path.name}_{i:05d}.png".encode() for i in range(len(images))],
    }
    with open(path, "wb") as f:
        pickle.dump(batch, f, protocol=4)


def gray28_to_cifar(images: np.ndarray) -> np.ndarray:
    """uint8 (N, 28, 28, 1) to (N, 32, 32, 3): padded with 2 black pixels a side and tinted."""
    padded = np.pad(images[..., 0], ((0, 0), (2, 2), (2, 2)))
    return np.stack([(padded * gain).astype(np.uint8) for gain in TINT], axis=-1)


def write_idx(path: Path, array: np.ndarray, *, magic: int | None = None) -> Path:
    """An IDX file of unsigned bytes (gzipped when the name ends in .gz), as Fashion-MNIST ships."""
    import gzip

    magic = (0x0800 | array.ndim) if magic is None else magic
    header = magic.to_bytes(4, "big") + b"".join(n.to_bytes(4, "big") for n in array.shape)
    opener = gzip.open if str(path).endswith(".gz") else open
    with opener(path, "wb") as f:
        f.write(header + np.ascontiguousarray(array, np.uint8).tobytes())
    return Path(path)


def write_shapes(folder: Path, *, per_class: dict[str, int], seed: int) -> None:
    """`folder/<shape>/*.png`: a filled circle, square or triangle at a random place and scale, in
    random colours, on canvases of different sizes, saved in modes RGB, L, RGBA, P and as JPEG."""
    rng = np.random.default_rng(seed)
    modes = ("RGB", "L", "RGBA", "P", "JPEG")
    for label, shape in enumerate(SHAPES):
        (folder / shape).mkdir(parents=True, exist_ok=True)
        for i in range(per_class[shape]):
            image = _draw_shape(shape, rng)
            mode = modes[(i + label) % len(modes)]
            if mode == "JPEG":
                image.save(folder / shape / f"{i:03d}.jpg", quality=95)
            else:
                converted = image.quantize(16) if mode == "P" else image.convert(mode)
                converted.save(folder / shape / f"{i:03d}.png")


def _draw_shape(shape: str, rng: np.random.Generator) -> Image.Image:
    width, height = (int(v) for v in rng.integers(24, 64, size=2))
    background = tuple(int(v) for v in rng.integers(0, 90, size=3))
    colour = tuple(int(v) for v in rng.integers(150, 256, size=3))
    image = Image.new("RGB", (width, height), background)
    side = min(width, height)
    r = side * rng.uniform(0.25, 0.4)
    cx, cy = width / 2 + rng.uniform(-0.1, 0.1) * side, height / 2 + rng.uniform(-0.1, 0.1) * side
    draw = ImageDraw.Draw(image)
    if shape == "circle":
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=colour)
    elif shape == "square":
        draw.rectangle([cx - r, cy - r, cx + r, cy + r], fill=colour)
    else:
        draw.polygon([(cx, cy - r), (cx - r, cy + r), (cx + r, cy + r)], fill=colour)
    return image


def write_cifar_archive(
    path: Path, images: np.ndarray, labels: np.ndarray, *, extra: dict[str, bytes] | None = None
) -> str:
    """cifar-10-python.tar.gz as the real one is laid out (cifar-10-batches-py/<batch>), from uint8
    (N, 32, 32, 3) images, with `extra` members (name: bytes) added; returns its md5."""
    import hashlib
    import io
    import tarfile
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        folder = write_cifar_batches(Path(tmp) / "cifar-10-batches-py", images, labels)
        with tarfile.open(path, "w:gz") as tar:
            tar.add(folder, arcname="cifar-10-batches-py")
            for name, data in (extra or {}).items():
                member = tarfile.TarInfo(name)
                member.size = len(data)
                tar.addfile(member, io.BytesIO(data))
    return hashlib.md5(Path(path).read_bytes(), usedforsecurity=False).hexdigest()


@contextmanager
def serve_folder(folder: Path) -> Iterator[tuple[str, list[str]]]:
    """An HTTP server on the loopback interface serving `folder`: (its base URL, the paths requested)."""
    import functools
    import threading
    from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer

    requested: list[str] = []

    class Handler(SimpleHTTPRequestHandler):
        def log_message(self, format: str, *args: object) -> None:
            requested.append(self.path)

    server = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Handler, directory=str(folder)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", requested
    finally:
        server.shutdown()
        server.server_close()
