"""Loaders over a DatasetBundle: uint8 HWC images in, normalized float32 NCHW batches out,
reproducible from the job's seed (shuffle order and augmentations alike). Pipelines that
ml.batch_augment covers run batched on tensors held on the model's device; any other runs image by
image through albumentations in a DataLoader."""

from __future__ import annotations

import warnings
from collections.abc import Iterator, Sequence
from dataclasses import replace

import albumentations as A
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, get_worker_info

from ml.augment import build_eval_transform, build_train_transform, normalization, reseed
from ml.batch_augment import BatchAugment, normalize, pixels
from ml.data import DatasetBundle, ImageSet
from ml.specs import Augmentation

__all__ = [
    "AugmentedImages",
    "TensorEvalLoader",
    "TensorTrainLoader",
    "as_normalized_by",
    "denormalize",
    "epoch_seed",
    "make_eval_loader",
    "make_loaders",
    "pipeline",
    "start_epoch",
]

EVAL_BATCH_FACTOR = 2  # evaluation keeps no activations for backward: twice the batch fits


class AugmentedImages(Dataset):
    """(image, label) pairs of an ImageSet through an albumentations pipeline: float32 (C, H, W), int.

    `transform` is public: the trainer saves `describe(loader.dataset.transform)`."""

    def __init__(self, images: ImageSet, transform: A.Compose) -> None:
        self.images = images
        self.transform = transform

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        image = self.transform(image=self.images.images[index])["image"]
        chw = np.ascontiguousarray(image.transpose(2, 0, 1), dtype=np.float32)
        return torch.from_numpy(chw), int(self.images.labels[index])


class TensorTrainLoader:
    """Shuffled, batched-augmented training batches from the uint8 images held as one tensor on
    `device`; a new shuffle and new augmentations each epoch, all from `seed`. Like the DataLoader it
    replaces: `len()` batches, the last partial one dropped unless it is the only one."""

    def __init__(
        self, images: ImageSet, augment: BatchAugment, *, batch_size: int, seed: int, device: torch.device
    ) -> None:
        self.augment, self.transform = augment, augment.compose  # `transform`: for augmentation.json
        self.labels = torch.from_numpy(np.array(images.labels, dtype=np.int64)).to(device)
        self.source = pixels(_tensor(images.images).to(device), augment.mean)
        self.shape = (images.images.shape[3], *images.images.shape[1:3])  # (C, H, W)
        self.count, self.batch_size = len(images), batch_size
        self.drop_last = self.count > batch_size
        self.generator = torch.Generator().manual_seed(seed)

    def __len__(self) -> int:
        return self.count // self.batch_size if self.drop_last else 1

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        order = torch.randperm(self.count, generator=self.generator).to(self.labels.device)
        for start in range(0, len(self) * self.batch_size, self.batch_size):
            indices = order[start : start + self.batch_size]
            yield self.augment.apply(self.source, self.shape, indices, self.generator), self.labels[indices]


class TensorEvalLoader:
    """Test batches in dataset order, only normalized, from the uint8 images held on `device`."""

    def __init__(
        self, images: ImageSet, *, batch_size: int, mean: Sequence[float], std: Sequence[float], device: torch.device
    ) -> None:
        self.images = _tensor(images.images).to(device)
        self.labels = torch.from_numpy(np.array(images.labels, dtype=np.int64)).to(device)
        self.batch_size, self.mean, self.std = batch_size, tuple(mean), tuple(std)
        self.transform = build_eval_transform(mean=mean, std=std)

    def __len__(self) -> int:
        return -(-len(self.labels) // self.batch_size)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for start in range(0, len(self.labels), self.batch_size):
            batch = slice(start, start + self.batch_size)
            yield normalize(self.images[batch], mean=self.mean, std=self.std), self.labels[batch]


Loader = DataLoader | TensorTrainLoader | TensorEvalLoader


def as_normalized_by(bundle: DatasetBundle, augmentation: Augmentation) -> DatasetBundle:
    """`bundle` with the mean and std the model's inputs are normalized with (ml.augment.normalization):
    a user's Normalize replaces the dataset's statistics for evaluation, the manifest, GradCAM,
    samples.png and /predict alike, so the model is tested and served on what it trained on."""
    mean, std = normalization(augmentation, mean=bundle.mean, std=bundle.std)
    return replace(bundle, mean=mean, std=std)


def make_loaders(
    bundle: DatasetBundle,
    *,
    augmentation: Augmentation,
    batch_size: int,
    seed: int,
    num_workers: int = 0,
    pin_memory: bool = False,
    device: str | torch.device = "cpu",
    batched: bool = True,
) -> tuple[Loader, Loader]:
    """(train_loader, test_loader). The train loader shuffles and augments, both reproducibly from
    `seed`, and drops a last partial batch (BatchNorm cannot train on a batch of one); the test
    loader only normalizes, in order. When ml.batch_augment covers `augmentation` (and `batched`),
    both hold the images on `device` and yield batches there; otherwise they are DataLoaders with
    `num_workers` workers over albumentations. `pipeline(train_loader)` is the effective pipeline."""
    device = torch.device(device)
    augment = None
    if batched:
        augment = BatchAugment.from_spec(augmentation, image_size=bundle.image_size, mean=bundle.mean, std=bundle.std)
    if augment is not None:
        train = TensorTrainLoader(bundle.train, augment, batch_size=batch_size, seed=seed, device=device)
        test = TensorEvalLoader(
            bundle.test, batch_size=EVAL_BATCH_FACTOR * batch_size, mean=bundle.mean, std=bundle.std, device=device
        )
        return train, test
    return _data_loaders(
        bundle,
        augmentation=augmentation,
        batch_size=batch_size,
        seed=seed,
        num_workers=num_workers,
        pin_memory=pin_memory,
    )


def make_eval_loader(like: Loader, images: ImageSet, *, mean: Sequence[float], std: Sequence[float]) -> Loader:
    """An evaluation loader over `images` of the kind `like` (a test loader from make_loaders) is:
    tensors on its device, or a DataLoader with its batch size and workers."""
    if isinstance(like, TensorEvalLoader):
        return TensorEvalLoader(images, batch_size=like.batch_size, mean=mean, std=std, device=like.images.device)
    assert isinstance(like, DataLoader), f"not a test loader: {type(like).__name__}"
    dataset = AugmentedImages(images, build_eval_transform(mean=mean, std=std))
    return DataLoader(
        dataset,
        batch_size=like.batch_size,
        shuffle=False,
        num_workers=like.num_workers,
        worker_init_fn=like.worker_init_fn,
        pin_memory=like.pin_memory,
    )


def epoch_seed(seed: int, epoch: int) -> int:
    """The seed of one epoch's shuffle and augmentations: a function of the job's seed and the epoch
    alone, so that epoch 3 draws the same whether or not the run was interrupted after epoch 2."""
    return int(np.random.SeedSequence([seed, epoch]).generate_state(1, dtype=np.uint64)[0] >> 1)


def start_epoch(loader: Loader, *, seed: int, epoch: int) -> None:
    """Seed `loader`'s shuffle and augmentations for `epoch` (call before iterating it): the order,
    crops, flips and holes of an epoch depend only on (seed, epoch). DataLoader workers are seeded
    from the loader's generator when each epoch starts (they are not persistent for this reason)."""
    state = epoch_seed(seed, epoch)
    if isinstance(loader, TensorTrainLoader):
        loader.generator.manual_seed(state)
    elif isinstance(loader, DataLoader) and loader.generator is not None:
        loader.generator.manual_seed(state)
        reseed(loader.dataset.transform, state % 2**32)
    else:
        raise TypeError(f"start_epoch takes a training loader; got {type(loader).__name__}")


def pipeline(loader: Loader) -> A.Compose:
    """The albumentations pipeline a loader applies (or reproduces, batched): for augmentation.json."""
    return loader.dataset.transform if isinstance(loader, DataLoader) else loader.transform


def _data_loaders(
    bundle: DatasetBundle, *, augmentation: Augmentation, batch_size: int, seed: int, num_workers: int, pin_memory: bool
) -> tuple[DataLoader, DataLoader]:
    train_transform = build_train_transform(
        augmentation, image_size=bundle.image_size, mean=bundle.mean, std=bundle.std, seed=seed
    )
    train_set = AugmentedImages(bundle.train, train_transform)
    workers = {
        "num_workers": num_workers,
        "persistent_workers": False,  # workers start each epoch, seeded from it (start_epoch): exact resumes
        "worker_init_fn": _seed_worker if num_workers > 0 else None,
        "pin_memory": pin_memory,
    }
    train_loader = DataLoader(
        train_set,
        batch_size=batch_size,
        shuffle=True,
        generator=torch.Generator().manual_seed(seed),
        drop_last=len(train_set) > batch_size,
        **workers,
    )
    test_set = AugmentedImages(bundle.test, build_eval_transform(mean=bundle.mean, std=bundle.std))
    test_loader = DataLoader(test_set, batch_size=EVAL_BATCH_FACTOR * batch_size, shuffle=False, **workers)
    return train_loader, test_loader


def _tensor(images: np.ndarray) -> torch.Tensor:
    """The cached read-only uint8 array as a tensor, without a copy: nothing here writes to it."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
        return torch.from_numpy(images)


def denormalize(x: torch.Tensor, *, mean: Sequence[float], std: Sequence[float]) -> np.ndarray:
    """The inverse of Normalize: float (B, C, H, W) (or (C, H, W)) to uint8 (B, H, W, C), for showing
    batches as images."""
    if x.ndim == 3:
        x = x.unsqueeze(0)
    if x.ndim != 4 or x.shape[1] != len(mean) or len(mean) != len(std):
        raise ValueError(
            f"denormalize expects (B, C, H, W) with C = len(mean) = len(std); got {tuple(x.shape)} "
            f"with {len(mean)} means and {len(std)} stds"
        )
    scale = torch.as_tensor(std, dtype=torch.float32).view(1, -1, 1, 1)
    shift = torch.as_tensor(mean, dtype=torch.float32).view(1, -1, 1, 1)
    pixels = (x.detach().float().cpu() * scale + shift) * 255.0
    return pixels.round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).contiguous().numpy()


def _seed_worker(worker_id: int) -> None:
    """Each DataLoader worker holds a copy of the pipeline with the same random state; give each one
    its own stream from torch's per-worker seed (the loader's seeded generator + the worker id)."""
    info = get_worker_info()
    assert info is not None and info.id == worker_id, "only called inside a DataLoader worker"
    reseed(info.dataset.transform, info.seed % 2**32)
