"""DataLoaders over a DatasetBundle: albumentations on uint8 HWC images in, normalized float32 NCHW
batches out, reproducible from the job's seed (shuffle order and augmentations alike)."""

from __future__ import annotations

from typing import Sequence

import albumentations as A
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, get_worker_info

from ml.augment import build_eval_transform, build_train_transform, reseed
from ml.data import DatasetBundle, ImageSet
from ml.specs import Augmentation

__all__ = ["AugmentedImages", "denormalize", "make_loaders"]

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


def make_loaders(
    bundle: DatasetBundle, *, augmentation: Augmentation, batch_size: int, seed: int, num_workers: int = 0,
    pin_memory: bool = False,
) -> tuple[DataLoader, DataLoader]:  # fmt: skip
    """(train_loader, test_loader). The train loader shuffles and augments, both reproducibly from
    `seed`, and drops a last partial batch (BatchNorm cannot train on a batch of one); the test
    loader only normalizes, in order."""
    train_transform = build_train_transform(
        augmentation, image_size=bundle.image_size, mean=bundle.mean, std=bundle.std, seed=seed
    )
    train_set = AugmentedImages(bundle.train, train_transform)
    workers = {
        "num_workers": num_workers,
        "persistent_workers": num_workers > 0,  # workers keep their random streams across epochs
        "worker_init_fn": _seed_worker if num_workers > 0 else None,
        "pin_memory": pin_memory,
    }
    train_loader = DataLoader(
        train_set, batch_size=batch_size, shuffle=True, generator=torch.Generator().manual_seed(seed),
        drop_last=len(train_set) > batch_size, **workers,
    )  # fmt: skip
    test_set = AugmentedImages(bundle.test, build_eval_transform(mean=bundle.mean, std=bundle.std))
    test_loader = DataLoader(test_set, batch_size=EVAL_BATCH_FACTOR * batch_size, shuffle=False, **workers)
    return train_loader, test_loader


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
