"""The augmentations the trainer can run batched on tensors, on the model's device: the "default"
preset (reflect pad-and-crop, horizontal flip, Cutout), the same with CoarseDropout's hole at p 0.5 in
place of Cutout, "none", and a lone HorizontalFlip. Each batch is one gather from the uint8 training
set, held as one flat tensor: shuffling, cropping, flipping and Cutout only move the index, then one
pass converts and normalizes. The random choices are drawn as albumentations draws them
(tests/ml/test_batch_augment.py compares the distributions), from a CPU `torch.Generator`, so a seed
gives the same batches on every device."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import albumentations as A
import cv2
import torch

from ml.augment import PAD, build_train_transform, default_hole, default_pad, describe
from ml.cutout import Cutout
from ml.normalization import Normalization

__all__ = ["BatchAugment", "effect", "pixels"]


@dataclass(frozen=True)
class BatchAugment:
    """What one batched pipeline does; `compose` is the albumentations pipeline it reproduces, the one
    `augmentation.json` describes. The hole is one square of half the side (ml.augment.default_hole)
    filled with the mean: the paper's Cutout (ml.cutout: centred anywhere, clipped at the borders), or
    with `hole_inside` CoarseDropout's (wholly inside the image)."""

    crop: bool  # reflect-101 pad by `pad` px per side, then a random crop back to size
    flip_p: float  # probability of a horizontal flip
    cutout_p: float  # probability of the hole
    normalization: Normalization
    compose: A.Compose = field(compare=False)  # equal plans are equal whatever Compose object they carry
    pad: int = PAD  # px per side when `crop`: ml.augment.default_pad of the image size
    hole_inside: bool = False  # CoarseDropout's placement rather than Cutout's

    @classmethod
    def equivalent(cls, compose: A.Compose, *, image_size: int, normalization: Normalization) -> BatchAugment | None:
        """The batched equivalent of the training pipeline `compose` (normalized by `normalization`),
        or None when the batched path does not cover it (then the albumentations DataLoader runs it).
        Covered: what "default", "none", a lone HorizontalFlip (any p), the default's pad-and-crop
        and flip (any p) without Cutout, or with CoarseDropout's half-side hole filled with the mean at
        p 0.5 in place of Cutout do, compared by `effect`, not by how they were written."""
        if image_size <= default_pad(image_size):  # reflect-101 padding needs more pixels than it pads
            return None
        target = effect(compose, channels=normalization.channels)
        pad = default_pad(image_size)
        for spec, plan in _candidates(compose, image_size=image_size, pad=pad, normalization=normalization):
            same = build_train_transform(spec, image_size=image_size, normalization=normalization)
            if effect(same, channels=normalization.channels) == target:
                return cls(normalization=normalization, compose=same, pad=pad, **plan)
        return None

    def apply(
        self, source: torch.Tensor, shape: tuple[int, ...], indices: torch.Tensor, generator: torch.Generator
    ) -> torch.Tensor:
        """Augmented, normalized float32 contiguous (B, C, H, W) images `indices` (B,) of `source`.

        `source` is `pixels(images, normalization.cutout_fill)`: N images of (C, H, W) = `shape`
        flattened, then Cutout's fill, one value per channel. The random draws come from `generator`
        (CPU) and are moved to the device: a few bytes per batch. One index per output value, one
        gather (CPU gathers are fast on flat uint8 and slow on 4-d tensors), then one pass to normalize."""
        channels, height, width = shape
        batch, device = len(indices), source.device
        plane, image = height * width, channels * height * width
        draws = self._draws(batch, height, width, generator)
        pad = self.pad if self.crop else 0
        rows = _axis(draws["dy"], height, pad=pad).to(device, non_blocking=True)  # (B, H) source rows
        cols = _axis(draws["dx"], width, pad=pad, flip=draws["flip"]).to(device, non_blocking=True)
        channel = torch.arange(channels, device=device).view(1, -1, 1) * plane
        row_start = (indices.view(-1, 1, 1) * image + channel + rows.unsqueeze(1) * width).unsqueeze(3)
        flat = row_start + cols.view(batch, 1, 1, width)  # (B, C, H, W) into source
        if self.cutout_p > 0:
            holes, fills = _holes(draws, shape, fill_start=source.numel() - channels)
            flat.view(-1).put_(holes.to(device, non_blocking=True), fills.to(device, non_blocking=True))
        values = source.take(flat)
        return self.normalization.normalize_planar(values)

    def _draws(self, batch: int, height: int, width: int, generator: torch.Generator) -> dict[str, torch.Tensor]:
        """The per-sample random choices, drawn as albumentations draws them: crop offsets uniform in
        [0, 2 * pad], flips and the hole each with their own probability, and the hole's top-left
        corner (hy, hx): for Cutout (ml.cutout) the centre uniform over the image less half the side,
        so the corner may lie outside; with `hole_inside` uniform over the positions that keep the
        whole hole inside (CoarseDropout 2.0.8)."""
        span = 2 * self.pad + 1 if self.crop else 1
        hole = default_hole(height), default_hole(width)
        if self.hole_inside:
            first, last = (0, 0), (height - hole[0], width - hole[1])
        else:
            first, last = (-(hole[0] // 2), -(hole[1] // 2)), (height - 1 - hole[0] // 2, width - 1 - hole[1] // 2)
        return {
            "dy": torch.randint(span, (batch,), generator=generator),
            "dx": torch.randint(span, (batch,), generator=generator),
            "flip": torch.rand(batch, generator=generator) < self.flip_p,
            "cut": torch.rand(batch, generator=generator) < self.cutout_p,
            "hy": torch.randint(first[0], last[0] + 1, (batch,), generator=generator),
            "hx": torch.randint(first[1], last[1] + 1, (batch,), generator=generator),
        }


Plan = tuple[str | list[dict[str, Any]], dict[str, Any]]  # a spec, and the BatchAugment fields that do what it does


def _candidates(compose: A.Compose, *, image_size: int, pad: int, normalization: Normalization) -> list[Plan]:
    """The covered pipelines to compare `compose` with, each a spec and the plan that reproduces it:
    "none", "default", and, only when `compose` has the transforms they need (a list is built and
    tried on an image), the default with CoarseDropout's hole in place of Cutout, a lone flip of
    `compose`'s p, and the default's crop with that flip and no hole."""
    crop = [
        {
            "name": "PadIfNeeded",
            "min_height": image_size + 2 * pad,
            "min_width": image_size + 2 * pad,
            "border_mode": cv2.BORDER_REFLECT_101,
        },
        {"name": "RandomCrop", "height": image_size, "width": image_size},
    ]
    hole = default_hole(image_size)
    coarse_dropout = {
        "name": "CoarseDropout",
        "num_holes_range": [1, 1],
        "hole_height_range": [hole, hole],
        "hole_width_range": [hole, hole],
        "fill": [float(v) for v in normalization.cutout_fill],
        "p": 0.5,
    }
    candidates: list[Plan] = [
        ("none", {"crop": False, "flip_p": 0.0, "cutout_p": 0.0}),
        ("default", {"crop": True, "flip_p": 0.5, "cutout_p": 1.0}),
    ]
    if any(isinstance(t, A.CoarseDropout) for t in compose.transforms):
        plan = {"crop": True, "flip_p": 0.5, "cutout_p": 0.5, "hole_inside": True}
        candidates.append(([*crop, {"name": "HorizontalFlip", "p": 0.5}, coarse_dropout], plan))
    flips = [t.p for t in compose.transforms if isinstance(t, A.HorizontalFlip) and t.p > 0]
    for p in flips[:1]:  # a lone flip, and the default without Cutout (short schedules: cifar10_cpu)
        candidates += [
            ([{"name": "HorizontalFlip", "p": p}], {"crop": False, "flip_p": p, "cutout_p": 0.0}),
            ([*crop, {"name": "HorizontalFlip", "p": p}], {"crop": True, "flip_p": p, "cutout_p": 0.0}),
        ]
    return candidates


IGNORED = {"fill_mask"}  # arguments that only touch masks: a classification job has none


def effect(compose: A.Compose, *, channels: int) -> list[dict[str, Any]]:
    """What a pipeline does to (image_size, image_size, channels) images, as comparable data: each
    transform's serialized arguments with the ways of writing one thing made one (tuples and lists,
    a scalar fill, mean or std and one per channel), arguments that cannot act
    dropped (mask fills; a border's fill unless the border is constant; RandomCrop's padding
    arguments unless it pads), and transforms that never fire (p = 0) left out."""
    steps = []
    for transform in compose.transforms:
        if transform.p == 0:
            continue
        arguments = json.loads(json.dumps(describe(transform)["transform"]))  # tuples -> lists
        for name in IGNORED & arguments.keys():
            del arguments[name]
        if arguments.get("border_mode") not in (None, cv2.BORDER_CONSTANT) or arguments.get("pad_if_needed") is False:
            arguments.pop("fill", None)
        if arguments.get("pad_if_needed") is False:
            for name in ("border_mode", "pad_position"):
                arguments.pop(name, None)
        if isinstance(transform, A.CoarseDropout | Cutout):
            arguments = _cutout_effect(arguments, channels=channels)
        if isinstance(transform, A.Normalize):  # one mean and std for all channels, or one per channel
            for name in ("mean", "std"):
                value = arguments[name]
                arguments[name] = [float(value)] * channels if isinstance(value, (int, float)) else value
        steps.append(arguments)
    return steps


def _cutout_effect(arguments: dict[str, Any], *, channels: int) -> dict[str, Any]:
    """CoarseDropout's or Cutout's fill as one float per channel, however it was written."""
    fill = arguments.get("fill")
    if isinstance(fill, (int, float)):
        arguments["fill"] = [float(fill)] * channels
    elif isinstance(fill, list):
        arguments["fill"] = [float(v) for v in fill]
    return arguments


def pixels(images: torch.Tensor, fill: tuple[int, ...]) -> torch.Tensor:
    """uint8 (N, H, W, C) images as the flat planar source `BatchAugment.apply` gathers from: each
    image (C, H, W), then Cutout's `fill`, one uint8 value per channel (Normalization.cutout_fill)."""
    values = torch.tensor(fill, dtype=torch.uint8, device=images.device)
    return torch.cat([images.permute(0, 3, 1, 2).reshape(-1), values])


def _axis(offset: torch.Tensor, size: int, *, pad: int, flip: torch.Tensor | None = None) -> torch.Tensor:
    """(B, size) source coordinates along one axis: output i reads padded coordinate offset + i (or
    offset + size - 1 - i when flipped), mapped back into the image by reflect-101 (cv2's default
    border: -1 -> 1, size -> size - 2)."""
    steps = torch.arange(size)
    if flip is not None:
        steps = torch.where(flip.view(-1, 1), steps.flip(0), steps)
    if not pad:
        return steps.expand(len(offset), size)
    padded = offset.view(-1, 1) + steps - pad
    return torch.where(padded < 0, -padded, torch.where(padded >= size, 2 * (size - 1) - padded, padded))


def _holes(
    draws: dict[str, torch.Tensor], shape: tuple[int, ...], *, fill_start: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """The positions in the (B, C, H, W) batch inside the holes of the samples the hole applies to,
    and the source position of each channel's fill value for them. A hole is clipped at the borders
    by clamping its rows and columns: one before the image becomes row 0, which the hole covers
    already, so the positions put are the clipped square's (some twice, with the same value)."""
    channels, height, width = shape
    hit = torch.nonzero(draws["cut"]).view(-1, 1, 1, 1)
    side = torch.arange(default_hole(height)).view(1, 1, -1, 1), torch.arange(default_hole(width)).view(1, 1, 1, -1)
    channel = torch.arange(channels).view(1, -1, 1, 1)
    rows = (draws["hy"][hit] + side[0]).clamp(0, height - 1)
    cols = (draws["hx"][hit] + side[1]).clamp(0, width - 1)
    holes = ((hit * channels + channel) * height + rows) * width + cols
    return holes.reshape(-1), (fill_start + channel).expand_as(holes).reshape(-1)
