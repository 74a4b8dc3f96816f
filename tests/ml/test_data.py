"""ml.data on real Fashion-MNIST, tiny CIFAR-format batches and a tiny image folder."""

from __future__ import annotations

import gzip
import shutil

import numpy as np
import pytest
from datasets import CIFAR10_CLASSES, SHAPES, write_cifar_batches, write_idx
from PIL import Image

from ml.data import (
    FMNIST_CLASSES,
    DatasetBundle,
    DatasetError,
    channel_stats,
    fit_image,
    load_dataset,
    stratified_indices,
)
from ml.specs import DatasetSpec


def fmnist(**subsets) -> DatasetSpec:
    return DatasetSpec(name="fashion_mnist", **subsets)


def shapes(**options) -> DatasetSpec:
    return DatasetSpec(name="image_folder", path="shapes", **options)


def assert_well_formed(bundle: DatasetBundle, *, size: int, channels: int, classes: list[str]) -> None:
    for split in (bundle.train, bundle.test):
        assert split.images.dtype == np.uint8 and split.labels.dtype == np.int64
        assert split.images.shape[1:] == (size, size, channels) and len(split.images) == len(split) > 0
        assert split.labels.min() >= 0 and split.labels.max() < len(classes)
    assert bundle.classes == classes and bundle.num_classes == len(classes)
    assert (bundle.in_channels, bundle.image_size) == (channels, size)
    assert len(bundle.mean) == len(bundle.std) == channels
    assert all(0 < m < 1 for m in bundle.mean) and all(0 < s < 1 for s in bundle.std)


# --- Fashion-MNIST ------------------------------------------------------------------------------


def test_fashion_mnist_full(fmnist_data_dir):
    bundle = load_dataset(fmnist(), fmnist_data_dir)
    assert_well_formed(bundle, size=28, channels=1, classes=list(FMNIST_CLASSES))
    assert (len(bundle.train), len(bundle.test)) == (60_000, 10_000)
    assert np.bincount(bundle.train.labels).tolist() == [6000] * 10
    # the published statistics of the Fashion-MNIST training set
    assert bundle.mean[0] == pytest.approx(0.2860, abs=1e-4) and bundle.std[0] == pytest.approx(0.3530, abs=1e-4)


def test_full_splits_are_decoded_once_and_read_only(fmnist_data_dir):
    first, again = load_dataset(fmnist(), fmnist_data_dir), load_dataset(fmnist(), fmnist_data_dir)
    assert again.train.images is first.train.images  # the per-process cache, not a second decode
    with pytest.raises(ValueError, match="read-only"):
        first.train.images[0, 0, 0, 0] = 1


def test_stratified_subset_takes_the_first_images_of_each_class(fmnist_data_dir):
    full = load_dataset(fmnist(), fmnist_data_dir)
    bundle = load_dataset(fmnist(train_subset=100, test_subset=50), fmnist_data_dir)
    assert (len(bundle.train), len(bundle.test)) == (100, 50)
    assert np.bincount(bundle.train.labels, minlength=10).tolist() == [10] * 10
    assert np.bincount(bundle.test.labels, minlength=10).tolist() == [5] * 10
    expected = np.sort(np.concatenate([np.flatnonzero(full.train.labels == c)[:10] for c in range(10)]))
    np.testing.assert_array_equal(bundle.train.images, full.train.images[expected])
    np.testing.assert_array_equal(bundle.train.labels, full.train.labels[expected])
    repeat = load_dataset(fmnist(train_subset=100, test_subset=50), fmnist_data_dir)
    np.testing.assert_array_equal(repeat.train.images, bundle.train.images)
    assert bundle.mean != full.mean, "statistics come from the subset that is trained on"
    assert (bundle.mean, bundle.std) == channel_stats(bundle.train.images)


def test_subset_larger_than_the_split_is_the_whole_split(fmnist_data_dir):
    bundle = load_dataset(fmnist(test_subset=1_000_000), fmnist_data_dir)
    assert len(bundle.test) == 10_000


def test_stratified_indices_largest_remainder():
    labels = np.array([0, 1, 0, 2, 0, 1, 0, 2, 1, 0])  # 5 x class 0, 3 x class 1, 2 x class 2
    # quotas 2.5, 1.5, 1.0: floors 2, 1, 1 and the one left over goes to the lower tied class, 0
    assert stratified_indices(labels, 5).tolist() == [0, 1, 2, 3, 4]
    assert stratified_indices(labels, 2).tolist() == [0, 1]  # 1.0, 0.6, 0.4: class 1 gets the spare
    assert np.bincount(labels[stratified_indices(labels, 7)], minlength=3).tolist() == [4, 2, 1]
    assert stratified_indices(labels, 10).tolist() == list(range(10))


def test_channel_stats_match_numpy():
    images = np.random.default_rng(0).integers(0, 256, size=(20, 8, 8, 3), dtype=np.uint8)
    images[..., 2] //= 4  # a darker, narrower third channel
    mean, std = channel_stats(images)
    scaled = images.astype(np.float64) / 255
    np.testing.assert_allclose(mean, scaled.mean(axis=(0, 1, 2)), atol=1e-6)
    np.testing.assert_allclose(std, scaled.std(axis=(0, 1, 2)), atol=1e-6)
    assert channel_stats(np.full((2, 4, 4, 1), 7, np.uint8))[1] == (1.0,), "a constant channel must not divide by 0"


def test_fashion_mnist_prefers_the_torchvision_folder_under_data_dir(tmp_path):
    raw = tmp_path / "FashionMNIST" / "raw"
    raw.mkdir(parents=True)
    images = np.random.default_rng(0).integers(0, 256, size=(30, 28, 28), dtype=np.uint8)
    labels = np.arange(30, dtype=np.uint8) % 10
    for prefix in ("train", "t10k"):
        write_idx(raw / f"{prefix}-images-idx3-ubyte.gz", images)
        write_idx(raw / f"{prefix}-labels-idx1-ubyte", labels)  # an uncompressed one is read too
    bundle = load_dataset(fmnist(), tmp_path)
    np.testing.assert_array_equal(bundle.train.images[..., 0], images)
    np.testing.assert_array_equal(bundle.test.labels, labels)


@pytest.mark.parametrize("damage", ["magic", "truncated", "not_gzip"])
def test_corrupt_idx_file_is_a_dataset_error(tmp_path, damage):
    raw = tmp_path / "FashionMNIST" / "raw"
    raw.mkdir(parents=True)
    images = np.zeros((10, 28, 28), np.uint8)
    labels = np.arange(10, dtype=np.uint8)
    for prefix in ("train", "t10k"):
        write_idx(raw / f"{prefix}-images-idx3-ubyte.gz", images)
        write_idx(raw / f"{prefix}-labels-idx1-ubyte.gz", labels)
    broken = raw / "train-images-idx3-ubyte.gz"
    if damage == "magic":
        write_idx(broken, images, magic=2049)
    elif damage == "truncated":
        broken.write_bytes(gzip.compress(gzip.decompress(broken.read_bytes())[:-100]))
    else:
        broken.write_bytes(b"this is not gzip data")
    with pytest.raises(DatasetError, match="train-images-idx3-ubyte.gz"):
        load_dataset(fmnist(), tmp_path)


def test_fashion_mnist_missing_everywhere(tmp_path, monkeypatch):
    monkeypatch.setenv("LRCAM_OFFLINE", "1")
    monkeypatch.setattr("ml.data.FMNIST_SYSTEM_DIR", tmp_path / "not-installed")
    with pytest.raises(DatasetError) as caught:
        load_dataset(fmnist(), tmp_path)
    message = str(caught.value)
    assert str(tmp_path / "FashionMNIST" / "raw") in message and "not-installed" in message
    assert "apt-get install dataset-fashion-mnist" in message


# --- CIFAR-10 -----------------------------------------------------------------------------------


def test_cifar10_from_the_python_batches(cifar_data_dir, fmnist_arrays):
    bundle = load_dataset(DatasetSpec(name="cifar10"), cifar_data_dir)
    assert_well_formed(bundle, size=32, channels=3, classes=CIFAR10_CLASSES)
    assert (len(bundle.train), len(bundle.test)) == (600, 200)
    np.testing.assert_array_equal(bundle.train.labels, fmnist_arrays["train_labels"])
    np.testing.assert_array_equal(bundle.test.labels, fmnist_arrays["test_labels"])
    assert bundle.mean[0] > bundle.mean[1] > bundle.mean[2], "tinted R > G > B, per channel"


def test_cifar10_channel_planar_rows_become_hwc(tmp_path):
    rows, cols = np.meshgrid(np.arange(32), np.arange(32), indexing="ij")
    image = np.stack([rows * 4, cols * 4, np.full_like(rows, 200)], axis=-1).astype(np.uint8)
    images = np.stack([image, 255 - image] * 5)
    write_cifar_batches(tmp_path / "cifar-10-batches-py", images, np.arange(10) % 10)
    bundle = load_dataset(DatasetSpec(name="cifar10"), tmp_path)
    np.testing.assert_array_equal(bundle.train.images, images)
    assert bundle.train.images[0, 31, 0].tolist() == [124, 0, 200]  # (row 31, col 0): R = 4 * row


def test_cifar10_missing_offline_names_the_folder(tmp_path, monkeypatch):
    monkeypatch.setenv("LRCAM_OFFLINE", "1")
    with pytest.raises(DatasetError) as caught:
        load_dataset(DatasetSpec(name="cifar10"), tmp_path)
    assert str(tmp_path / "cifar-10-batches-py") in str(caught.value)
    assert "cifar-10-python.tar.gz" in str(caught.value)  # what to download and unpack (tests/ml/test_downloads.py)


def test_cifar10_corrupt_batch_is_a_dataset_error(tmp_path, cifar_data_dir):
    shutil.copytree(cifar_data_dir / "cifar-10-batches-py", tmp_path / "cifar-10-batches-py")
    (tmp_path / "cifar-10-batches-py" / "data_batch_3").write_bytes(b"\x80\x04garbage")
    with pytest.raises(DatasetError, match="data_batch_3"):
        load_dataset(DatasetSpec(name="cifar10"), tmp_path)


# --- image folders ------------------------------------------------------------------------------


def test_image_folder_decodes_every_mode_and_size(image_folder_data_dir):
    bundle = load_dataset(shapes(), image_folder_data_dir)
    assert_well_formed(bundle, size=32, channels=3, classes=sorted(SHAPES))
    assert np.bincount(bundle.train.labels).tolist() == [14, 12, 10]  # the .DS_Store is skipped
    assert np.bincount(bundle.test.labels).tolist() == [5, 4, 3]
    small = load_dataset(shapes(image_size=16, train_subset=18), image_folder_data_dir)
    assert small.train.images.shape == (18, 16, 16, 3)
    assert np.bincount(small.train.labels).tolist() == [7, 6, 5]  # 14:12:10 of 18


def test_an_uploaded_dataset_is_the_image_folder_its_import_wrote(tmp_path, image_folder_data_dir):
    dataset_id = "ab" * 16
    shutil.copytree(image_folder_data_dir / "shapes", tmp_path / "uploads" / dataset_id)
    bundle = load_dataset(DatasetSpec(name="uploaded", id=dataset_id, image_size=16), tmp_path)
    assert_well_formed(bundle, size=16, channels=3, classes=sorted(SHAPES))
    assert bundle.name == "uploaded" and np.bincount(bundle.train.labels).tolist() == [14, 12, 10]
    with pytest.raises(ValueError, match="dataset.id is required"):
        DatasetSpec(name="uploaded")
    with pytest.raises(ValueError, match="pattern"):
        DatasetSpec(name="uploaded", id="../../etc")


def test_image_folder_reflects_changed_files(tmp_path, image_folder_data_dir):
    shutil.copytree(image_folder_data_dir / "shapes", tmp_path / "shapes")
    before = load_dataset(shapes(), tmp_path)
    Image.new("RGB", (40, 30), (255, 0, 0)).save(tmp_path / "shapes" / "test" / "square" / "new.png")
    after = load_dataset(shapes(), tmp_path)
    assert len(after.test) == len(before.test) + 1


def test_image_folder_symlink_outside_data_dir_is_refused(tmp_path, image_folder_data_dir):
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    (data_dir / "escape").symlink_to(image_folder_data_dir / "shapes")  # a real dataset, but outside
    with pytest.raises(DatasetError, match="outside DATA_DIR"):
        load_dataset(DatasetSpec(name="image_folder", path="escape"), data_dir)


@pytest.mark.parametrize("path", ["/etc", "../folder_data"])
def test_image_folder_unvalidated_escaping_path_is_refused(tmp_path, path):
    spec = DatasetSpec.model_construct(
        name="image_folder", path=path, image_size=32, train_subset=None, test_subset=None
    )
    with pytest.raises(DatasetError, match="outside DATA_DIR"):
        load_dataset(spec, tmp_path)


def test_image_folder_file_linking_outside_is_refused(tmp_path, image_folder_data_dir):
    shutil.copytree(image_folder_data_dir / "shapes", tmp_path / "shapes")
    outside = tmp_path.parent / f"{tmp_path.name}-outside.png"
    Image.new("RGB", (8, 8)).save(outside)
    link = tmp_path / "shapes" / "train" / "circle" / "link.png"
    link.symlink_to(outside)
    with pytest.raises(DatasetError, match="link.png"):
        load_dataset(shapes(), tmp_path)


def test_image_folder_corrupt_image_names_the_file(tmp_path, image_folder_data_dir):
    shutil.copytree(image_folder_data_dir / "shapes", tmp_path / "shapes")
    (tmp_path / "shapes" / "test" / "triangle" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    with pytest.raises(DatasetError, match="broken.png"):
        load_dataset(shapes(), tmp_path)


@pytest.mark.parametrize("limit", [30_000, 15_000])  # a 200x200 image: over the limit, over twice it
def test_image_folder_refuses_decompression_bombs(tmp_path, image_folder_data_dir, monkeypatch, limit):
    shutil.copytree(image_folder_data_dir / "shapes", tmp_path / "shapes")
    Image.new("L", (200, 200)).save(tmp_path / "shapes" / "test" / "circle" / "bomb.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", limit)
    with pytest.raises(DatasetError, match="bomb.png"):
        load_dataset(shapes(), tmp_path)


def test_image_folder_structure_errors(tmp_path, image_folder_data_dir):
    shutil.copytree(image_folder_data_dir / "shapes", tmp_path / "shapes")
    (tmp_path / "shapes" / "test" / "hexagon").mkdir()
    with pytest.raises(DatasetError, match="'hexagon'.*not among the train classes"):
        load_dataset(shapes(), tmp_path)
    shutil.rmtree(tmp_path / "shapes" / "test")
    with pytest.raises(DatasetError, match=r"test is missing"):
        load_dataset(shapes(), tmp_path)
    with pytest.raises(DatasetError, match="not found"):
        load_dataset(DatasetSpec(name="image_folder", path="nowhere"), tmp_path)


def test_image_folder_empty_train_class_is_refused(tmp_path, image_folder_data_dir):
    shutil.copytree(image_folder_data_dir / "shapes", tmp_path / "shapes")
    (tmp_path / "shapes" / "train" / "hexagon").mkdir()
    with pytest.raises(DatasetError, match="hexagon has no images"):
        load_dataset(shapes(), tmp_path)


def test_dataset_error_is_a_value_error():
    assert issubclass(DatasetError, ValueError)  # so callers that map ValueError to "bad input" see it


def one_image_folder(tmp_path, image: Image.Image, *, name: str = "x.png"):
    """A folder dataset of one class whose train and test sets hold `image` (twice, for the subsets)."""
    for split in ("train", "test"):
        folder = tmp_path / "one" / split / "only"
        folder.mkdir(parents=True)
        for copy in ("a", "b"):
            image.save(folder / f"{copy}-{name}")
    return DatasetSpec(name="image_folder", path="one", image_size=16)


def test_transparent_pixels_are_composited_on_white_not_their_hidden_colour(tmp_path):
    image = Image.new("RGBA", (16, 16), (0, 0, 0, 0))  # transparent black: what many PNG icons hold
    image.paste((200, 30, 30, 255), (4, 4, 12, 12))  # an opaque red square
    pixels = load_dataset(one_image_folder(tmp_path, image), tmp_path).train.images[0]
    assert pixels[0, 0].tolist() == [255, 255, 255]  # alpha dropped would leave black
    assert pixels[8, 8].tolist() == [200, 30, 30]


def test_half_transparent_pixels_are_blended_with_the_white_background(tmp_path):
    image = Image.new("LA", (16, 16), (0, 128))  # black at half opacity over white
    pixels = load_dataset(one_image_folder(tmp_path, image), tmp_path).train.images[0]
    assert abs(int(pixels[5, 5, 0]) - 127) <= 1


def test_a_16_bit_grayscale_image_trains_scaled_to_8_bits_as_predict_takes_it(tmp_path):
    """Pillow's own conversion clips 16-bit values to 255: such a folder trained on white squares."""
    eight = np.tile(np.arange(0, 256, 16, dtype=np.uint16), (16, 1))  # a ramp, 0..240
    sixteen = Image.fromarray(eight * 257)  # the same picture at 16 bits
    assert sixteen.mode.startswith("I;16")
    pixels = load_dataset(one_image_folder(tmp_path, sixteen), tmp_path).train.images[0]
    assert (pixels == eight[:, :, None]).all()
    assert (np.asarray(fit_image(sixteen, 16, "L")) == eight).all()  # /predict's fitting: the same pixels


def test_non_square_images_keep_their_aspect_centre_cropped(tmp_path):
    image = Image.new("RGB", (48, 16))  # red | green | blue squares: the centre crop keeps green
    for i, colour in enumerate([(255, 0, 0), (0, 255, 0), (0, 0, 255)]):
        image.paste(colour, (16 * i, 0, 16 * (i + 1), 16))
    pixels = load_dataset(one_image_folder(tmp_path, image), tmp_path).train.images[0]
    assert (pixels[:, 1:-1] == [0, 255, 0]).all()  # a squeeze to 16x16 would show all three colours
