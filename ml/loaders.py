"""Loaders over a DatasetBundle: uint8 HWC images in, normalized float32 NCHW batches out,
reproducible from the job's seed (shuffle order and augmentations alike), all from one
`RunTransforms`. When it has a batched equivalent, the images are held as tensors on the model's
device and augmented there; otherwise the albumentations pipeline runs image by image in DataLoaders."""

from __future__ import annotations

import copy
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import albumentations as A
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, get_worker_info

from ml.augment import reseed
from ml.batch_augment import BatchAugment, pixels
from ml.data import DatasetBundle, ImageSet
from ml.normalization import Normalization
from ml.transforms import RunTransforms

__all__ = [
    "AugmentedImages",
    "EvalLoader",
    "ImageTrainLoader",
    "Loaders",
    "TensorEvalLoader",
    "TensorTrainLoader",
    "TrainLoader",
    "epoch_seed",
    "make_loaders",
]

EVAL_BATCH_FACTOR = 2  # evaluation keeps no activations for backward: twice the batch fits

Batch = tuple[torch.Tensor, torch.Tensor]


class AugmentedImages(Dataset[tuple[torch.Tensor, int]]):
    """(image, label) pairs of an ImageSet through an albumentations pipeline: float32 (C, H, W), int."""

    def __init__(self, images: ImageSet, transform: A.Compose) -> None:
        self.images = images
        self.transform = transform

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        image = self.transform(image=self.images.images[index])["image"]
        chw = np.ascontiguousarray(image.transpose(2, 0, 1), dtype=np.float32)
        return torch.from_numpy(chw), int(self.images.labels[index])


def epoch_seed(seed: int, epoch: int) -> int:
    """The seed of one epoch's shuffle and augmentations: a function of the job's seed and the epoch
    alone, so that epoch 3 draws the same whether or not the run was interrupted after epoch 2."""
    return int(np.random.SeedSequence([seed, epoch]).generate_state(1, dtype=np.uint64)[0] >> 1)


class TensorTrainLoader:
    """Shuffled, batched-augmented training batches from the uint8 images held as one tensor on
    `device`; a new shuffle and new augmentations each epoch, all from `seed`. Like the DataLoader it
    replaces: `len()` batches, the last partial one dropped unless it is the only one."""

    def __init__(
        self, images: ImageSet, augment: BatchAugment, *, batch_size: int, seed: int, device: torch.device
    ) -> None:
        self.augment = augment
        self.labels = torch.from_numpy(np.array(images.labels, dtype=np.int64)).to(device)
        self.source = pixels(_tensor(images.images).to(device), augment.normalization.cutout_fill)
        self.shape = (images.images.shape[3], *images.images.shape[1:3])  # (C, H, W)
        self.count, self.batch_size = len(images), batch_size
        self.drop_last = self.count > batch_size
        self.generator = torch.Generator().manual_seed(seed)

    def __len__(self) -> int:
        return self.count // self.batch_size if self.drop_last else 1

    def __iter__(self) -> Iterator[Batch]:
        order = torch.randperm(self.count, generator=self.generator).to(self.labels.device)
        for start in range(0, len(self) * self.batch_size, self.batch_size):
            indices = order[start : start + self.batch_size]
            yield self.augment.apply(self.source, self.shape, indices, self.generator), self.labels[indices]

    def start_epoch(self, *, seed: int, epoch: int) -> None:
        """Seed `epoch`'s shuffle and augmentations (call before iterating): they depend only on
        (seed, epoch), so a resumed run draws what an uninterrupted one does."""
        self.generator.manual_seed(epoch_seed(seed, epoch))


class ImageTrainLoader(DataLoader[tuple[torch.Tensor, int]]):
    """Shuffled training batches through the albumentations pipeline, image by image, in
    `num_workers` processes; the pipeline is this loader's own copy, seeded."""

    dataset: AugmentedImages

    def start_epoch(self, *, seed: int, epoch: int) -> None:
        """Seed `epoch`'s shuffle and augmentations (call before iterating): they depend only on
        (seed, epoch). Workers are seeded from the loader's generator when each epoch starts (they
        are not persistent for this reason)."""
        state = epoch_seed(seed, epoch)
        assert self.generator is not None, "make_loaders gives the training loader a generator"
        self.generator.manual_seed(state)
        reseed(self.dataset.transform, state % 2**32)


class TensorEvalLoader:
    """Batches in dataset order, only normalized, from the uint8 images held on `device`."""

    def __init__(
        self, images: ImageSet, *, batch_size: int, normalization: Normalization, device: torch.device
    ) -> None:
        self.images = _tensor(images.images).to(device)
        self.labels = torch.from_numpy(np.array(images.labels, dtype=np.int64)).to(device)
        self.batch_size, self.normalization = batch_size, normalization

    def __len__(self) -> int:
        return -(-len(self.labels) // self.batch_size)

    def __iter__(self) -> Iterator[Batch]:
        for start in range(0, len(self.labels), self.batch_size):
            batch = slice(start, start + self.batch_size)
            yield self.normalization.normalize(self.images[batch]), self.labels[batch]


TrainLoader = TensorTrainLoader | ImageTrainLoader
EvalLoader = TensorEvalLoader | DataLoader[tuple[torch.Tensor, int]]


@dataclass(frozen=True)
class Loaders:
    """A run's loaders: training (shuffled, augmented), test and validation (in order, normalized)."""

    train: TrainLoader
    test: EvalLoader
    validation: EvalLoader | None = None


def make_loaders(
    bundle: DatasetBundle,
    transforms: RunTransforms,
    *,
    batch_size: int,
    seed: int,
    num_workers: int = 0,
    pin_memory: bool = False,
    device: str | torch.device = "cpu",
    validation: ImageSet | None = None,
) -> Loaders:
    """The loaders of `bundle` (and of a held-out `validation` set). The train loader shuffles and
    augments, both reproducibly from `seed` (and each epoch's `start_epoch`), and drops a last
    partial batch (BatchNorm cannot train on a batch of one); evaluation batches are
    EVAL_BATCH_FACTOR times larger. With `transforms.batched`, the images are held on `device` and
    batches are made there; otherwise DataLoaders with `num_workers` workers run `transforms.train`."""
    device = torch.device(device)
    eval_size = EVAL_BATCH_FACTOR * batch_size
    train: TrainLoader
    if transforms.batched is not None:
        train = TensorTrainLoader(bundle.train, transforms.batched, batch_size=batch_size, seed=seed, device=device)

        def evaluation(images: ImageSet) -> EvalLoader:
            return TensorEvalLoader(images, batch_size=eval_size, normalization=transforms.normalization, device=device)

    else:
        workers: dict[str, Any] = {
            "num_workers": num_workers,
            "persistent_workers": False,  # workers start each epoch, seeded from it (start_epoch): exact resumes
            "worker_init_fn": _seed_worker if num_workers > 0 else None,
            "pin_memory": pin_memory,
        }
        pipeline = copy.deepcopy(transforms.train)  # this loader's own, reseeded every epoch
        reseed(pipeline, seed)
        train = ImageTrainLoader(
            AugmentedImages(bundle.train, pipeline),
            batch_size=batch_size,
            shuffle=True,
            generator=torch.Generator().manual_seed(seed),
            drop_last=len(bundle.train) > batch_size,
            **workers,
        )

        def evaluation(images: ImageSet) -> EvalLoader:
            dataset = AugmentedImages(images, transforms.eval)
            return DataLoader(dataset, batch_size=eval_size, shuffle=False, **workers)

    return Loaders(train, evaluation(bundle.test), None if validation is None else evaluation(validation))


def _tensor(images: np.ndarray) -> torch.Tensor:
    """The cached read-only uint8 array as a tensor, without a copy: nothing here writes to it."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
        return torch.from_numpy(images)


def _seed_worker(worker_id: int) -> None:
    """Each DataLoader worker holds a copy of the pipeline with the same random state; give each one
    its own stream from torch's per-worker seed (the loader's seeded generator + the worker id)."""
    info = get_worker_info()
    assert info is not None and info.id == worker_id, "only called inside a DataLoader worker"
    assert isinstance(info.dataset, AugmentedImages), "workers of make_loaders' training loader"
    reseed(info.dataset.transform, info.seed % 2**32)
