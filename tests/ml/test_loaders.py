"""ml.loaders: batches, reproducibility from the seed, and denormalize."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from ml.data import DatasetBundle, ImageSet, load_dataset
from ml.loaders import ImageTrainLoader, TensorTrainLoader
from ml.loaders import make_loaders as make_run_loaders
from ml.specs import DatasetSpec
from ml.transforms import RunTransforms


@pytest.fixture(scope="module")
def cifar(small_cifar_dir):
    return load_dataset(DatasetSpec(name="cifar10"), small_cifar_dir)


@pytest.fixture(scope="module")
def fmnist_small(small_fmnist_dir):
    return load_dataset(DatasetSpec(name="fashion_mnist", train_subset=200, test_subset=100), small_fmnist_dir)


def make_loaders(bundle: DatasetBundle, *, augmentation, batched: bool = True, **options):
    """(train, test) loaders of a run over `bundle`, its RunTransforms built first."""
    loaders = make_run_loaders(bundle, RunTransforms.for_bundle(augmentation, bundle, batched=batched), **options)
    return loaders.train, loaders.test


def first_batch(loader):
    return next(iter(loader))


@pytest.mark.parametrize("batched", [True, False])
def test_batches_shapes_and_types(cifar, batched):
    train, test = make_loaders(cifar, augmentation="default", batch_size=64, seed=0, batched=batched)
    assert isinstance(train, TensorTrainLoader) == batched
    x, y = first_batch(train)
    assert x.shape == (64, 3, 32, 32) and x.dtype == torch.float32 and y.shape == (64,) and y.dtype == torch.int64
    assert x.is_contiguous()
    assert len(train) == 600 // 64 == sum(1 for _ in train), "the last partial batch is dropped"
    assert sum(len(y) for _, y in test) == 200, "every test image, once"
    transforms = RunTransforms.for_bundle("default", cifar, batched=batched)
    json.dumps(transforms.describe())  # what the trainer saves as augmentation.json
    assert [type(t).__name__ for t in transforms.pipeline][-2:] == ["Cutout", "Normalize"]


def test_uncovered_pipelines_run_in_a_data_loader(cifar):
    train, _ = make_loaders(cifar, augmentation=[{"name": "VerticalFlip"}], batch_size=64, seed=0)
    assert isinstance(train, ImageTrainLoader) and first_batch(train)[0].shape == (64, 3, 32, 32)


def test_batched_epoch_sees_every_image_once():
    """Labels numbering the images say which image each batched sample is: a permutation, less the
    partial last batch, each image exactly as the eval transform normalizes it."""
    images = np.random.default_rng(0).integers(0, 256, size=(250, 8, 8, 3), dtype=np.uint8)
    split = ImageSet(images, np.arange(250, dtype=np.int64))
    bundle = DatasetBundle("numbered", split, split, [str(i) for i in range(250)], (0.4, 0.5, 0.6), (0.2, 0.3, 0.25))
    train, _ = make_loaders(bundle, augmentation="none", batch_size=100, seed=0)
    xs, ys = zip(*train)
    seen = torch.cat(ys).numpy()
    assert len(seen) == 200 and len(set(seen)) == 200
    expected = (images[seen] / 255.0 - np.array(bundle.mean)) / np.array(bundle.std)
    np.testing.assert_allclose(torch.cat(xs).permute(0, 2, 3, 1).numpy(), expected, atol=1e-5)
    assert not np.array_equal(seen, np.concatenate([y.numpy() for _, y in train])), "a new order each epoch"


def test_grayscale_batches(fmnist_small):
    train, test = make_loaders(fmnist_small, augmentation="default", batch_size=32, seed=0)
    assert first_batch(train)[0].shape == (32, 1, 28, 28)
    assert first_batch(test)[0].shape[1:] == (1, 28, 28)
    for x, _ in (first_batch(train), first_batch(test)):  # not channels_last: see ml.runtime.memory_format
        assert x.stride() == (28 * 28, 28 * 28, 28, 1)


@pytest.mark.parametrize("batched", [True, False])
def test_test_loader_is_in_order_and_only_normalized(cifar, batched):
    _, test = make_loaders(cifar, augmentation="default", batch_size=50, seed=0, batched=batched)
    xs, ys = zip(*test)
    np.testing.assert_array_equal(torch.cat(ys).numpy(), cifar.test.labels)
    images = torch.cat(xs)
    expected = (cifar.test.images / 255.0 - np.array(cifar.mean)) / np.array(cifar.std)
    np.testing.assert_allclose(images.permute(0, 2, 3, 1).numpy(), expected, atol=1e-5)


@pytest.mark.parametrize("batched", [True, False])
def test_normalized_training_set_has_zero_mean_unit_std(cifar, batched):
    train, _ = make_loaders(cifar, augmentation="none", batch_size=600, seed=0, batched=batched)
    x, _ = first_batch(train)
    np.testing.assert_allclose(x.mean(dim=(0, 2, 3)).numpy(), 0, atol=1e-4)
    np.testing.assert_allclose(x.std(dim=(0, 2, 3)).numpy(), 1, atol=1e-3)
    assert len(train) == 1 and not train.drop_last, "a set of one batch keeps it"


@pytest.mark.parametrize(("num_workers", "batched"), [(0, True), (0, False), (2, False)])
def test_same_seed_same_batches(cifar, num_workers, batched):
    def batches(seed):
        train, _ = make_loaders(
            cifar, augmentation="default", batch_size=100, seed=seed, num_workers=num_workers, batched=batched
        )
        return [batch for _, batch in zip(range(2), train)]

    first, again, other = batches(3), batches(3), batches(4)
    for (x1, y1), (x2, y2) in zip(first, again):
        assert torch.equal(x1, x2) and torch.equal(y1, y2)
    assert not torch.equal(first[0][1], other[0][1]), "another seed shuffles differently"


def flip_pattern(loader, image: np.ndarray, normalization) -> list[list[bool]]:
    """Per batch, which samples came out flipped, for a loader over copies of one image."""
    flipped = np.ascontiguousarray(image[:, ::-1])
    return [[np.array_equal(out, flipped) for out in normalization.denormalize(x)] for x, _ in loader]


@pytest.mark.parametrize(("num_workers", "batched"), [(0, True), (0, False), (2, False)])
def test_augmentations_differ_between_epochs_and_workers(num_workers, batched):
    """Each epoch draws new augmentations, and DataLoader workers do not repeat each other's draws
    (each reseeds its copy of the pipeline; without that, worker 1 would copy worker 0)."""
    image = np.random.default_rng(0).integers(0, 256, size=(8, 8, 3), dtype=np.uint8)
    images = ImageSet(np.stack([image] * 40), np.arange(40, dtype=np.int64) % 2)
    bundle = DatasetBundle("copies", images, images, ["a", "b"], (0.5, 0.5, 0.5), (0.25, 0.25, 0.25))
    train, _ = make_loaders(
        bundle,
        augmentation=[{"name": "HorizontalFlip", "p": 0.5}],
        batch_size=10,
        seed=0,
        num_workers=num_workers,
        batched=batched,
    )
    normalization = RunTransforms.for_bundle("none", bundle).normalization
    epoch1, epoch2 = flip_pattern(train, image, normalization), flip_pattern(train, image, normalization)
    assert 5 < sum(map(sum, epoch1)) < 35, "about half the images are flipped"
    assert epoch1 != epoch2
    assert epoch1[0] != epoch1[1] and epoch1[2] != epoch1[3], "batches 0, 2 and 1, 3 come from different workers"


def test_denormalize_inverts_normalize(cifar):
    _, test = make_loaders(cifar, augmentation="none", batch_size=16, seed=0)
    x, _ = first_batch(test)
    normalization = RunTransforms.for_bundle("none", cifar).normalization
    images = normalization.denormalize(x)
    assert images.dtype == np.uint8 and images.shape == (32, 32, 32, 3)
    np.testing.assert_array_equal(images, cifar.test.images[:32])
    np.testing.assert_array_equal(normalization.denormalize(x[0])[0], cifar.test.images[0])
    with pytest.raises(ValueError, match=r"\(B, C, H, W\) with C = 3 channels; got \(2, 1, 32, 32\)"):
        normalization.denormalize(x[:2, :1])


def test_validation_loader_is_of_the_test_loaders_kind(cifar):
    held_out = ImageSet(cifar.test.images[:30], cifar.test.labels[:30])
    for batched in (True, False):
        transforms = RunTransforms.for_bundle("default", cifar, batched=batched)
        loaders = make_run_loaders(cifar, transforms, batch_size=8, seed=0, validation=held_out)
        assert type(loaders.validation) is type(loaders.test)
        xs, ys = zip(*loaders.validation)
        np.testing.assert_array_equal(torch.cat(ys).numpy(), held_out.labels)
        np.testing.assert_array_equal(transforms.denormalize(torch.cat(xs)), held_out.images)
