"""Augmentation presets built from a job spec's `augmentation` with albumentations: "default" (the
CIFAR recipe: pad-and-crop, flip, the paper's Cutout), "none", or the user's list of transforms (any
albumentations transform, or "Cutout": ml.cutout), each checked against the transform's own
signature before it is built."""

from __future__ import annotations

import copy
import inspect
import random
import re
import warnings
from typing import TYPE_CHECKING, Any

import albumentations as A
import cv2
import numpy as np
from pydantic import ValidationError

from ml.cutout import Cutout

if TYPE_CHECKING:  # torch: the API validates specs with this module and never loads torch
    from ml.normalization import Normalization

__all__ = [
    "TRANSFORMS",
    "build_train_transform",
    "check_sizes",
    "default_transforms",
    "describe",
    "reseed",
    "validate_transforms",
]

PAD = 4  # px on each side before the random crop back to size at 32 px: the classic CIFAR recipe


def default_pad(image_size: int) -> int:
    """The default preset's padding for image_size inputs: PAD at 32 px (and 28), in proportion
    otherwise (8 px at 64, 2 at 16), at least 1; rounded half up."""
    return max(1, int(image_size * PAD / 32 + 0.5))


def default_hole(image_size: int) -> int:
    """The default preset's Cutout length: half the side (16 px at 32 px, the paper's CIFAR-10 size)."""
    return image_size // 2


# Exported transforms a job cannot use, and why: they need targets other than the image
# (bboxes, masks, metadata, reference images), take callables, or turn the image into something else.
EXCLUDED = {
    "BasicTransform": "it is an abstract base",
    "DualTransform": "it is an abstract base",
    "ImageOnlyTransform": "it is an abstract base",
    "Transform3D": "it is for volumes",
    "AtLeastOneBBoxRandomCrop": "it needs bboxes",
    "BBoxSafeRandomCrop": "it needs bboxes",
    "RandomSizedBBoxSafeCrop": "it needs bboxes",
    "RandomCropNearBBox": "it needs a cropping_bbox",
    "MaskDropout": "it needs a mask",
    "CropNonEmptyMaskIfExists": "it needs a mask",
    "ConstrainedCoarseDropout": "it needs a mask or bboxes",
    "FDA": "it needs reference images",
    "HistogramMatching": "it needs reference images",
    "PixelDistributionAdaptation": "it needs reference images",
    "Mosaic": "it needs metadata",
    "OverlayElements": "it needs metadata",
    "TextImage": "it needs a font and metadata",
    "Lambda": "it takes callables",
    "ToTensorV2": "the loader makes the tensors",
    "ToTensor3D": "it is for volumes",
}


def _public_transforms() -> dict[str, type[A.BasicTransform]]:
    found = {}
    for name in dir(A):
        cls = getattr(A, name)
        if inspect.isclass(cls) and issubclass(cls, A.BasicTransform) and not issubclass(cls, A.Transform3D):
            found[name] = cls
    return {name: cls for name, cls in sorted(found.items()) if name not in EXCLUDED}


# name -> class, what a spec's {"name": ...} may say: albumentations' own, and the paper's Cutout
TRANSFORMS: dict[str, type[A.BasicTransform]] = dict(sorted({**_public_transforms(), "Cutout": Cutout}.items()))
# Warnings albumentations gives about a valid transform (deprecated, superseded by another, an alias,
# slow): reported with the job. Any other warning is about a bad argument and refuses the list.
ADVISORY = re.compile(r"deprecat|please use|consider using|is an alias|is very slow", re.IGNORECASE)


# Arguments that set a size in pixels: of an image, a pad, a crop, a hole or a kernel (PadIfNeeded's
# min_height, Resize's height, RandomResizedCrop's size, CoarseDropout's hole_height_range, Cutout's
# length, a blur's blur_limit, ElasticTransform's sigma, Defocus's radius...). None may exceed
# MAX_SIZE_FACTOR times the dataset's image side: the default preset pads by 1/8 of it and cuts holes of 1/2.
SIZE_ARGUMENT = re.compile(r"height|width|size|pad|px|crop|hole|length|kernel|blur_limit|sigma|radius")
MAX_SIZE_FACTOR = 4


def check_sizes(transforms: list[dict[str, Any]], *, side: int) -> None:
    """Raise ValueError naming the transform and the argument when a size argument (SIZE_ARGUMENT) is
    beyond MAX_SIZE_FACTOR x `side`: checked on the spec, before any transform is built or run."""
    limit = MAX_SIZE_FACTOR * side
    for index, item in enumerate(transforms):
        if not isinstance(item, dict):
            continue  # validate_transforms says what is wrong with it
        for name, value in item.items():
            if name == "name" or not SIZE_ARGUMENT.search(name):
                continue
            if any(number > limit for number in _numbers(value)):
                raise ValueError(
                    f"augmentation[{index}] {item.get('name')}: {name}={value!r} is far beyond the dataset's "
                    f"{side} px images; at most {limit} px ({MAX_SIZE_FACTOR}x their side)"
                )


def _numbers(value: Any) -> list[float]:
    """The numbers in an argument: itself, or those in a list/tuple (nested), booleans excluded."""
    if isinstance(value, bool):
        return []
    if isinstance(value, int | float):
        return [abs(value)]
    if isinstance(value, list | tuple):
        return [number for item in value for number in _numbers(item)]
    return []


def validate_transforms(transforms: list[dict[str, Any]]) -> list[str]:
    """Raise ValueError naming the transform and argument for anything `build_train_transform`
    would refuse to build from this list; return albumentations' advice about the valid rest (e.g.
    "ShiftScaleRotate is a special case of Affine ..."), one line per warning."""
    notes: list[str] = []
    _build_list(transforms, notes=notes)
    return notes


def _build_list(
    items: list[dict[str, Any]], *, notes: list[str] | None, channels: int | None = None
) -> list[A.BasicTransform]:
    built = [_build_transform(item, index=index, notes=notes) for index, item in enumerate(items)]
    _check_normalize(built, channels=channels)
    return built


def _check_normalize(transforms: list[A.BasicTransform], *, channels: int | None) -> None:
    """A user's Normalize becomes the model's normalization everywhere (evaluation, GradCAM, the
    checkpoint, /predict), so it must be one fixed per-channel mean and std applied to every image
    (one value, or one per channel when `channels` is known)."""
    found = [(i, t) for i, t in enumerate(transforms) if isinstance(t, A.Normalize)]
    if len(found) > 1:
        raise ValueError(
            f"augmentation has {len(found)} Normalize transforms (at {[i for i, _ in found]}); "
            "give at most one: it is the model's input normalization"
        )
    for index, transform in found:
        if index != len(transforms) - 1:
            raise ValueError(
                f"augmentation[{index}] Normalize must be the last transform (at {len(transforms) - 1}): the "
                "transforms after it would get normalized floats, and pixel ones clip them to [0, 255]"
            )
        if transform.normalization != "standard" or transform.max_pixel_value is None:
            raise ValueError(
                f"augmentation[{index}] Normalize: normalization {transform.normalization!r} depends on each "
                "image's own statistics and cannot be reproduced at evaluation and /predict; use 'standard' "
                "(fixed mean and std), or leave Normalize out to use the dataset's statistics"
            )
        if transform.p != 1:
            raise ValueError(
                f"augmentation[{index}] Normalize: p must be 1 (the model's input normalization "
                f"applies to every image); got {transform.p}"
            )
        sizes = {np.atleast_1d(np.asarray(v)).size for v in (transform.mean, transform.std)}
        if channels is not None and not sizes <= {1, channels}:
            raise ValueError(
                f"augmentation[{index}] Normalize: mean and std need 1 or {channels} values for {channels}-channel "
                f"images; got mean={transform.mean}, std={transform.std}"
            )


def build_train_transform(
    augmentation: str | list[dict[str, Any]],
    *,
    image_size: int,
    normalization: Normalization,
    notes: list[str] | None = None,
) -> A.Compose:
    """The training pipeline for uint8 (image_size, image_size, C) images: a preset, or the user's
    list checked (validate_transforms, whose advice goes to `notes`) and tried on such images. It
    holds one Normalize: the user's, else `normalization`'s (the dataset's statistics), last. Its
    random state is albumentations' own: `reseed` it."""
    normalize = normalization.transform()
    if augmentation == "default":
        transforms = [*default_transforms(image_size=image_size, normalization=normalization), normalize]
    elif augmentation == "none":
        transforms = [normalize]
    elif isinstance(augmentation, list):
        transforms = _build_list(augmentation, notes=notes, channels=normalization.channels)
        if not any(isinstance(t, A.Normalize) for t in transforms):
            transforms.append(normalize)
    else:
        raise ValueError(f"augmentation must be 'default', 'none' or a list of transforms; got {augmentation!r}")
    compose = A.Compose(transforms)
    if isinstance(augmentation, list):
        _check_runs(compose, shape=(image_size, image_size, normalization.channels))
    return compose


def default_transforms(*, image_size: int, normalization: Normalization) -> list[A.BasicTransform]:
    """Pad-and-crop (default_pad: 4 px at 32 px), horizontal flip and the paper's Cutout on every
    image (ml.cutout: a square of half the image's side, 16x16 at 32 px, centred anywhere in the
    image and clipped at its borders, filled with the mean so that it normalizes to 0): both scale
    with the image size."""
    hole, pad = default_hole(image_size), default_pad(image_size)
    return [
        A.PadIfNeeded(
            min_height=image_size + 2 * pad, min_width=image_size + 2 * pad, border_mode=cv2.BORDER_REFLECT_101
        ),
        A.RandomCrop(image_size, image_size),
        A.HorizontalFlip(p=0.5),
        Cutout(num_holes=1, length=hole, fill=tuple(float(v) for v in normalization.cutout_fill), p=1.0),
    ]


def reseed(compose: A.Compose, seed: int) -> None:
    """Give every transform of `compose` one shared random stream started from `seed`.

    Not `A.Compose(seed=...)`: that gives each transform its own generator with the same seed, so
    HorizontalFlip(p=0.5) and VerticalFlip(p=0.5) would always fire together."""
    compose.set_random_state(np.random.default_rng(seed), random.Random(seed))


def describe(compose: A.Compose) -> dict[str, Any]:
    """The pipeline as albumentations serializes it (JSON-ready), for augmentation.json."""
    serialized: dict[str, Any] = A.to_dict(compose)
    return serialized


def _build_transform(item: Any, *, index: int, notes: list[str] | None = None) -> A.BasicTransform:
    if not isinstance(item, dict) or not isinstance(item.get("name"), str):
        raise ValueError(
            f'augmentation[{index}] must be an object like {{"name": "HorizontalFlip", "p": 0.5}}; got {item!r}'
        )
    name = item["name"]
    cls = TRANSFORMS.get(name)
    if cls is None:
        why = f" ({name} cannot be used here: {EXCLUDED[name]})" if name in EXCLUDED else ""
        raise ValueError(f"unknown augmentation transform {name!r}{why}; expected one of {list(TRANSFORMS)}")
    arguments = {key: value for key, value in item.items() if key != "name"}
    allowed = _init_parameters(cls)
    unknown = sorted(set(arguments) - set(allowed))
    if unknown:
        raise ValueError(f"augmentation transform {name!r} has no argument(s) {unknown}; it takes {allowed}")
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")  # albumentations 2 only warns about many bad arguments
            transform = cls(**arguments)
    except (TypeError, ValueError) as exc:  # albumentations re-raises pydantic's errors as ValueError
        cause = exc if isinstance(exc, ValidationError) else exc.__cause__
        detail = _pydantic_message(cause) if isinstance(cause, ValidationError) else str(exc)
        raise ValueError(f"augmentation transform {name!r}: {detail}") from None
    for warning in caught:
        message = str(warning.message)
        if not ADVISORY.search(message) and not issubclass(warning.category, (DeprecationWarning, FutureWarning)):
            raise ValueError(f"augmentation transform {name!r}: {message}")
        if notes is not None:
            notes.append(f"augmentation[{index}] {name}: {message}")
    return transform


def _init_parameters(cls: type[A.BasicTransform]) -> list[str]:
    """The named keyword arguments of `cls`: a `**kwargs` does not mean any name is welcome."""
    parameters = inspect.signature(cls.__init__).parameters.values()
    kinds = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    return [p.name for p in parameters if p.kind in kinds and p.name != "self"]


def _pydantic_message(exc: ValidationError) -> str:
    """One line per argument: "p: Input should be less than or equal to 1 (got 2)"."""
    lines = []
    for error in exc.errors():
        where = ".".join(str(part) for part in error["loc"]) or "arguments"
        got = f" (got {error['input']!r})" if error["loc"] and error["type"] != "missing" else ""
        lines.append(f"{where}: {error['msg']}{got}")
    return "; ".join(lines)


def _check_runs(compose: A.Compose, *, shape: tuple[int, int, int]) -> None:
    """Apply each transform once (forced) to a copy on a random image of `shape`, so that a list that
    fails on these images (e.g. an RGB-only transform on grayscale) or changes their size is refused
    now, naming the transform, rather than in the middle of an epoch."""
    probe = copy.deepcopy(compose)
    image = np.random.default_rng(0).integers(0, 256, size=shape, dtype=np.uint8)
    data = image
    for transform in probe.transforms:
        name = type(transform).__name__
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("error")
                warnings.filterwarnings("ignore", message=f".*({ADVISORY.pattern})")  # matched case-insensitively
                data = transform(image=data, force_apply=True)["image"]
        except (ValueError, TypeError, KeyError, IndexError, NotImplementedError, cv2.error, Warning) as exc:
            raise ValueError(f"augmentation transform {name!r} fails on {shape} images: {exc}") from None
    if not isinstance(data, np.ndarray) or data.shape != shape:
        found = getattr(data, "shape", type(data).__name__)
        raise ValueError(
            f"augmentation must keep images at {shape} (H, W, C), the model's input; it makes "
            f"them {found} (add a Resize or crop to {shape[0]}x{shape[1]} to a list that changes sizes)"
        )
