"""A run's augmentation and normalization, built once from the spec's `augmentation` and the
dataset's statistics, and handed to everything that needs them: the loaders, the trainer, the LR
finder and the report."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import albumentations as A
import numpy as np
import torch

from ml.augment import build_train_transform, describe
from ml.batch_augment import BatchAugment
from ml.data import DatasetBundle
from ml.normalization import Normalization
from ml.specs import Augmentation

__all__ = ["RunTransforms"]


@dataclass(frozen=True)
class RunTransforms:
    """The training pipeline (checked once), its batched equivalent (None: not covered, the
    albumentations pipeline runs image by image), the evaluation pipeline, the model's input
    normalization and albumentations' warnings about the spec's list."""

    train: A.Compose  # ends in (or holds the user's) Normalize; loaders run seeded copies of it
    eval: A.Compose  # Normalize only
    batched: BatchAugment | None
    normalization: Normalization  # a user's Normalize, else the dataset's statistics
    warnings: tuple[str, ...]

    @classmethod
    def build(
        cls,
        augmentation: Augmentation,
        *,
        image_size: int,
        mean: Sequence[float],
        std: Sequence[float],
        batched: bool = True,
    ) -> RunTransforms:
        """From a spec's augmentation, for uint8 (image_size, image_size, len(mean)) images whose
        dataset has per-channel `mean` and `std` (in [0, 1]). Raises ValueError naming the transform
        for a list that cannot run on such images. `batched` False leaves `batched` None whatever
        the augmentation (the image-by-image path, as a baseline)."""
        dataset = Normalization.of(mean, std)
        notes: list[str] = []
        train = build_train_transform(augmentation, image_size=image_size, normalization=dataset, notes=notes)
        normalize = next(t for t in train.transforms if isinstance(t, A.Normalize))
        normalization = Normalization.of_transform(normalize, channels=dataset.channels)
        equivalent = None
        if batched:
            equivalent = BatchAugment.equivalent(train, image_size=image_size, normalization=normalization)
        return cls(train, A.Compose([normalization.transform()]), equivalent, normalization, tuple(notes))

    @classmethod
    def for_bundle(cls, augmentation: Augmentation, bundle: DatasetBundle, *, batched: bool = True) -> RunTransforms:
        """`build` for a dataset bundle's images and statistics."""
        return cls.build(augmentation, image_size=bundle.image_size, mean=bundle.mean, std=bundle.std, batched=batched)

    @property
    def mean(self) -> tuple[float, ...]:
        return self.normalization.mean

    @property
    def std(self) -> tuple[float, ...]:
        return self.normalization.std

    @property
    def pipeline(self) -> A.Compose:
        """The albumentations pipeline training applies, or reproduces batched: the one described."""
        return self.batched.compose if self.batched is not None else self.train

    def normalize(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 (B, H, W, C) to the model's normalized float32 (B, C, H, W)."""
        return self.normalization.normalize(images)

    def denormalize(self, x: torch.Tensor) -> np.ndarray:
        """The model's normalized (B, C, H, W) back to uint8 (B, H, W, C), for plots."""
        return self.normalization.denormalize(x)

    def describe(self) -> dict[str, Any]:
        """augmentation.json: the effective pipeline as albumentations serializes it."""
        return describe(self.pipeline)
