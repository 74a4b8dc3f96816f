"""The model's input normalization, the one place it is written: (x / 255 - mean) / std per channel,
with mean and std in [0, 1] pixel units. Training (batched or through albumentations), evaluation,
the checkpoint's manifest, GradCAM, samples.png and /predict all use a `Normalization`; so does the
Cutout hole, filled with the mean so that it normalizes to 0."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import albumentations as A
import numpy as np
import torch

__all__ = ["Normalization"]

MAX_PIXEL = 255.0  # uint8 pixels: x / 255 is in [0, 1], the unit of mean and std


@dataclass(frozen=True)
class Normalization:
    """Per-channel mean and std, in [0, 1] pixel units."""

    mean: tuple[float, ...]
    std: tuple[float, ...]

    @classmethod
    def of(cls, mean: Sequence[float], std: Sequence[float]) -> Normalization:
        """From any sequences of numbers (a manifest's lists, numpy arrays); one value per channel each."""
        if len(mean) != len(std) or not len(mean):
            raise ValueError(f"need one mean and one std per channel; got mean={list(mean)}, std={list(std)}")
        return cls(tuple(float(m) for m in mean), tuple(float(s) for s in std))

    @classmethod
    def of_transform(cls, transform: A.Normalize, *, channels: int) -> Normalization:
        """What an albumentations "standard" Normalize does to `channels`-channel images, in [0, 1] pixel
        units: its mean and std scaled from its max_pixel_value, one per channel. A mean or std of
        another length is refused when the pipeline is built (ml.augment.build_train_transform)."""
        scale = float(transform.max_pixel_value) / MAX_PIXEL
        pair = [np.atleast_1d(np.asarray(v, dtype=float)) * scale for v in (transform.mean, transform.std)]
        mean, std = (np.broadcast_to(v, (channels,)) for v in pair)
        return cls.of(mean.tolist(), std.tolist())

    @property
    def channels(self) -> int:
        return len(self.mean)

    @property
    def cutout_fill(self) -> tuple[int, ...]:
        """The mean in uint8 pixel values: what a Cutout hole is filled with, so that it normalizes to 0."""
        return tuple(round(m * MAX_PIXEL) for m in self.mean)

    def transform(self) -> A.Normalize:
        """The albumentations step: uint8 HWC in, float32 HWC out."""
        return A.Normalize(mean=self.mean, std=self.std, max_pixel_value=MAX_PIXEL)

    def normalize(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 (B, H, W, C) to float32 contiguous (B, C, H, W), on the images' device: the eval
        transform, batched. Contiguous, not channels_last: see ml.runtime.memory_format."""
        return self.normalize_planar(images.permute(0, 3, 1, 2))

    def normalize_planar(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 (B, C, H, W), any strides, to normalized float32 with the standard NCHW strides. Not
        `.contiguous()`: with one channel a permuted NHWC batch already counts as contiguous, yet its
        strides (HW, 1, W, 1) send CPU convolutions down oneDNN's channels_last path (the defect of
        ml.runtime.memory_format)."""
        out = torch.empty(images.shape, dtype=torch.float32, device=images.device)
        out.copy_(images)
        scale = torch.tensor([1 / (MAX_PIXEL * s) for s in self.std], device=images.device).view(1, -1, 1, 1)
        shift = torch.tensor([-m / s for m, s in zip(self.mean, self.std)], device=images.device).view(1, -1, 1, 1)
        return out.mul_(scale).add_(shift)

    def denormalize(self, x: torch.Tensor) -> np.ndarray:
        """The inverse: normalized float (B, C, H, W) (or (C, H, W)) to uint8 (B, H, W, C) on the CPU,
        for showing batches as images."""
        if x.ndim == 3:
            x = x.unsqueeze(0)
        if x.ndim != 4 or x.shape[1] != self.channels:
            raise ValueError(
                f"denormalize expects (B, C, H, W) with C = {self.channels} channels; got {tuple(x.shape)}"
            )
        scale = torch.as_tensor(self.std, dtype=torch.float32).view(1, -1, 1, 1)
        shift = torch.as_tensor(self.mean, dtype=torch.float32).view(1, -1, 1, 1)
        pixels = (x.detach().float().cpu() * scale + shift) * MAX_PIXEL
        array: np.ndarray = pixels.round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).contiguous().numpy()
        return array
