"""What a training run and an LR range test set up alike, in one order: the data (with a held-out
validation set), the seeds, the augmentation and normalization (`RunTransforms`, built once), the
loaders, the model on its device in its memory layout, and SGD."""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import torch
from torch import nn

from ml.data import DatasetBundle, ImageSet, hold_out, load_dataset
from ml.loaders import Loaders, make_loaders
from ml.models import build_model
from ml.progress import Callbacks, download_progress
from ml.runtime import default_num_workers, memory_format, seed_everything
from ml.specs import LRFinderSpec, SGDSpec, TrainSpec
from ml.transforms import RunTransforms

__all__ = ["RunSetup", "build_optimizer", "load_data", "set_up"]


@dataclass(frozen=True)
class RunSetup:
    """A run ready to train: everything below is built once, from the spec."""

    bundle: DatasetBundle  # its mean and std are the model's input normalization (transforms.normalization)
    validation: ImageSet | None  # held out of bundle.train
    transforms: RunTransforms
    loaders: Loaders
    model: nn.Module  # uncompiled, on `device`, in memory_format(device)
    optimizer: torch.optim.SGD
    device: torch.device


def load_data(
    spec: TrainSpec | LRFinderSpec, data_dir: Path, *, callbacks: Callbacks
) -> tuple[DatasetBundle, ImageSet | None]:
    """The spec's dataset (downloads reported as progress) and, for a training spec with a
    validation_split, its validation set, held out of the training images."""
    on_download = download_progress(callbacks, spec.dataset.name)
    bundle = load_dataset(spec.dataset, Path(data_dir), on_download=on_download)
    if not isinstance(spec, TrainSpec) or spec.validation_split is None:
        return bundle, None
    rest, validation = hold_out(bundle.train, spec.validation_split, seed=spec.seed)
    return replace(bundle, train=rest), validation


def set_up(
    spec: TrainSpec | LRFinderSpec,
    bundle: DatasetBundle,
    *,
    lr: float,
    device: torch.device,
    num_workers: int | None = None,
    validation: ImageSet | None = None,
) -> RunSetup:
    """Seeds, transforms, loaders, model and optimizer (at `lr`) for `spec` on `bundle`.
    num_workers: data-loading processes for an augmentation that runs image by image; None =
    ml.runtime.default_num_workers. Pinned memory on CUDA."""
    seed_everything(spec.seed)
    transforms = RunTransforms.for_bundle(spec.augmentation, bundle)
    bundle = replace(bundle, mean=transforms.mean, std=transforms.std)
    loaders = make_loaders(
        bundle,
        transforms,
        batch_size=spec.batch_size,
        seed=spec.seed,
        num_workers=default_num_workers(device) if num_workers is None else num_workers,
        pin_memory=device.type == "cuda",
        device=device,
        validation=validation,
    )
    model = build_model(spec.model, in_channels=bundle.in_channels, num_classes=bundle.num_classes)
    model = model.to(device).to(memory_format=memory_format(device))
    optimizer = build_optimizer(model, spec.optimizer, lr=lr, device=device)
    return RunSetup(bundle, validation, transforms, loaders, model, optimizer, device)


def build_optimizer(model: nn.Module, spec: SGDSpec, *, lr: float, device: torch.device) -> torch.optim.SGD:
    """SGD over `model`'s parameters: one fused kernel on CUDA, multi-tensor (foreach) on the CPU."""
    return torch.optim.SGD(
        model.parameters(),
        lr=lr,
        momentum=spec.momentum,
        weight_decay=spec.weight_decay,
        nesterov=spec.nesterov,
        **({"fused": True} if device.type == "cuda" else {"foreach": True}),
    )
