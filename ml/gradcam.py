"""GradCAM and GradCAM++ heat maps and their overlays on the input images.

`explain` computes pytorch-grad-cam's maps with the backward pass stopped at the CAM layer, no hooks
and no `.grad` written; the model leaves with the train/eval modes, `requires_grad` flags and
`.grad` tensors it came with. A map is drawn over the input pixels its layer's pixels stand for
(`place`), flip-averaged for a model evaluated with test-time flip (`explain(flip=True)`).
tests/ml/gradcam_reference.py holds it to pytorch-grad-cam itself.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import cv2
import numpy as np
import torch
from PIL import Image
from pytorch_grad_cam import GradCAM, GradCAMPlusPlus
from pytorch_grad_cam.utils.image import scale_cam_image, show_cam_on_image
from torch import nn

from ml.models import cam_stride, mirror_mean, split_at_cam_layer

METHODS = {"gradcam": GradCAM, "gradcam++": GradCAMPlusPlus}
IMAGE_WEIGHT = 0.5  # share of the image in the overlay; the heat map gets the rest
# zlib level 1 with run-length matching, every row filtered by the average of its neighbours (an
# upscaled overlay is smooth): 0.41 ms for a 128 px overlay where libpng's default choice of filter per
# row took 0.71 and PIL's defaults 1.4, for files 15% larger than the former's (the overlay is the
# slowest part of a /predict?gradcam=true after the model)
PNG_OPTIONS = [
    cv2.IMWRITE_PNG_COMPRESSION,
    1,
    cv2.IMWRITE_PNG_STRATEGY,
    cv2.IMWRITE_PNG_STRATEGY_RLE,
    cv2.IMWRITE_PNG_FILTER,
    cv2.IMWRITE_PNG_FILTER_AVG,
]
GRADCAM_PP_EPS = 1e-6  # GradCAMPlusPlus.get_cam_weights's eps in the denominator of alpha


def check_method(method: str) -> None:
    if method not in METHODS:
        raise ValueError(f"unknown GradCAM method {method!r}; expected one of {sorted(METHODS)}")


def check_targets(targets: Sequence[int | None], n: int, *, allow_none: bool = False) -> None:
    """One class index >= 0 per image (or None, "its predicted class", where `allow_none`)."""
    if len(targets) != n:
        raise ValueError(f"one target per image: got {len(targets)} targets for {n} images")
    if any(
        not (t is None and allow_none) and (isinstance(t, bool) or not isinstance(t, (int, np.integer)) or t < 0)
        for t in targets
    ):
        raise ValueError(f"targets must be class indices >= 0; got {targets!r}")


def _check_images(images: torch.Tensor) -> None:
    if images.ndim != 4:
        raise ValueError(f"images must be a batch (N, C, H, W); got shape {tuple(images.shape)}")


def cam_for_batch(
    model: nn.Module, images: torch.Tensor, *, targets: Sequence[int], method: str = "gradcam", flip: bool = False
) -> np.ndarray:
    """Heat maps (N, H, W) float32 in [0, 1] of class `targets[i]` for normalized `images` (N, C, H, W);
    with `flip`, averaged with their mirror images' (explain)."""
    check_targets(targets, len(images))
    return explain(model, images, targets=targets, method=method, flip=flip)[1]


def explain(
    model: nn.Module,
    images: torch.Tensor,
    *,
    targets: Sequence[int | None] | None = None,
    method: str = "gradcam",
    flip: bool = False,
) -> tuple[torch.Tensor, np.ndarray, list[int]]:
    """(logits (N, K) float32, maps (N, H, W) float32 in [0, 1], the class of each map) in one forward pass.

    `targets` None explains each image's predicted class; so does a None among the targets (a batch
    gathered from requests that asked for different targets). The maps equal pytorch-grad-cam's but the
    backward pass stops at the CAM layer: the conv stack runs once, without autograd, and only the head
    (pool + linear) is differentiated, which also keeps the backward away from the CPU convolutions
    of the oneDNN defect (ml.runtime.memory_format).

    `flip` (TrainSpec.test_time_flip) runs the images with their mirror images as one batch of 2N: the
    logits are the two's average (ml.models.mirror_mean, as in evaluation), a predicted class is the
    averaged logits', and each map is the mean of the image's map and its mirror image's map mirrored
    back, both for that class and each scaled to [0, 1] first: pytorch-grad-cam's aug_smooth with a
    horizontal flip as its only augmentation."""
    check_method(method)
    _check_images(images)
    if targets is not None:
        check_targets(targets, len(images), allow_none=True)
    n, size = len(images), min(images.shape[-2:])
    features, head = split_at_cam_layer(model, image_size=size)
    device = next(model.parameters()).device
    with torch.inference_mode(False), _eval_mode(model):
        x = images.detach().to(device)
        x = torch.cat([x, x.flip(3)]) if flip else x.clone()  # a copy outside inference mode either way
        with torch.no_grad():
            activations = features(x)
        activations.requires_grad_(True)
        with torch.enable_grad():
            outputs = head(activations)
            logits = mirror_mean(outputs[:n], outputs[n:]) if flip else outputs.float()
            predicted = logits.argmax(dim=1).tolist()
            chosen = predicted if targets is None else [p if t is None else int(t) for p, t in zip(predicted, targets)]
            if any(t >= logits.shape[1] for t in chosen):
                raise ValueError(f"a target in {chosen} is not a class index of this model ({logits.shape[1]} classes)")
            index = torch.as_tensor(chosen * (2 if flip else 1), device=outputs.device)
            scores = outputs.gather(1, index[:, None]).sum()
            (grads,) = torch.autograd.grad(scores, activations)
    stride = cam_stride(model, size)
    maps = _maps(method, activations.detach().float().cpu().numpy(), grads.float().cpu().numpy(), x.shape, stride)
    if flip:  # aug_smooth: each augmentation's scaled map de-augmented, then their mean, not scaled again
        maps = (maps[:n] + maps[n:, :, ::-1]) / 2
    return logits.detach(), maps, chosen


def _maps(method: str, activations: np.ndarray, grads: np.ndarray, shape: torch.Size, stride: int) -> np.ndarray:
    """pytorch-grad-cam's arithmetic on (activations, gradients) of one layer, step for step, with the
    layer's map drawn where its pixels come from (`place`)."""
    if method == "gradcam":
        weights = grads.mean(axis=(2, 3))
    else:  # GradCAM++, Equation 19 of arXiv:1710.11063, as GradCAMPlusPlus.get_cam_weights
        grads_2 = grads**2
        sums = activations.sum(axis=(2, 3))[:, :, None, None]
        aij = np.where(grads != 0, grads_2 / (2 * grads_2 + sums * grads_2 * grads + GRADCAM_PP_EPS), 0)
        weights = (np.maximum(grads, 0) * aij).sum(axis=(2, 3))
    cam = np.maximum((weights[:, :, None, None] * activations).sum(axis=1), 0)
    covered = (cam.shape[-1] * stride, cam.shape[-2] * stride)  # (width, height) as OpenCV takes them
    scaled = scale_cam_image(cam, covered)  # BaseCAM.compute_cam_per_layer
    aggregated = scale_cam_image(np.maximum(scaled, 0))  # BaseCAM.aggregate_multi_layers
    if covered != (shape[-1], shape[-2]):  # placed; scaled again, as a crop may have cut off the extremes
        aggregated = scale_cam_image(place(aggregated, (shape[-2], shape[-1])))
    maps: np.ndarray = np.clip(aggregated, 0.0, 1.0)
    return maps.astype(np.float32)


def place(maps: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Maps (N, h, w) of a layer upscaled by its stride s, on (N, H, W) inputs: cropped or zero-padded
    at the bottom and right to (N, H, W), so that the layer's pixel (i, j) lies on the input pixels
    [s*i, s*(i+1)) x [s*j, s*(j+1)). Where s divides H and W that is the map itself, stretched by
    pytorch-grad-cam as it is; otherwise a stretched map would be misplaced: CustomResNet's max pools
    floor 28 px to a 3x3 map of pixels 0-23 (here the rest is 0), ResNet18's padded stride-2
    convolutions round 28 px up to a 4x4 map whose last pixels stand for 24-31 (here cropped at 27)."""
    height, width = shape
    out = np.zeros((len(maps), height, width), dtype=np.float32)
    h, w = min(height, maps.shape[1]), min(width, maps.shape[2])
    out[:, :h, :w] = maps[:, :h, :w]
    return out


@contextmanager
def _eval_mode(model: nn.Module) -> Iterator[None]:
    """Eval mode (BN with running statistics, as pytorch-grad-cam uses), then each module's own mode back."""
    modes = {module: module.training for module in model.modules()}
    model.eval()
    try:
        yield
    finally:
        for module, training in modes.items():
            module.training = training


OVERLAY_SIZE = 128  # px: a 32x32 input is upscaled 4x so that a person can see what the map points at


def overlay_size(image_size: int) -> int:
    """The side of an overlay for image_size inputs (report grids and /predict alike): OVERLAY_SIZE,
    or the image's own size when it is larger."""
    return max(OVERLAY_SIZE, image_size)


def overlay(image: np.ndarray, cam: np.ndarray, *, size: int = OVERLAY_SIZE) -> np.ndarray:
    """The heat map `cam` (H', W') in [0, 1] over `image` (H, W, C) uint8, C in {1, 3}: (size, size, 3) uint8.

    The image is upscaled first so that a 32x32 one stays readable; the map is resized to match."""
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] not in (1, 3):
        raise ValueError(f"image must be uint8 (H, W, C) with C in {{1, 3}}; got {image.dtype} {image.shape}")
    if cam.ndim != 2:
        raise ValueError(f"cam must be a 2-D map (H, W); got shape {cam.shape}")
    if size < 1:
        raise ValueError(f"size must be a positive number of pixels; got {size}")
    rgb = image if image.shape[2] == 3 else np.repeat(image, 3, axis=2)
    big = Image.fromarray(rgb).resize((size, size), Image.Resampling.BICUBIC)
    heat = Image.fromarray(np.ascontiguousarray(cam, dtype=np.float32)).resize((size, size), Image.Resampling.BILINEAR)
    mask = np.clip(np.asarray(heat), 0.0, 1.0)
    base = np.asarray(big, dtype=np.float32) / 255.0
    blended: np.ndarray = show_cam_on_image(base, mask, use_rgb=True, image_weight=IMAGE_WEIGHT)
    return blended


def to_png_bytes(image: np.ndarray) -> bytes:
    """PNG encoding of a uint8 image (H, W), (H, W, 1) or (H, W, 3): fast zlib settings, lossless all the same."""
    if image.dtype != np.uint8 or image.ndim not in (2, 3) or (image.ndim == 3 and image.shape[2] not in (1, 3)):
        raise ValueError(f"image must be uint8 (H, W) or (H, W, C) with C in {{1, 3}}; got {image.dtype} {image.shape}")
    if image.ndim == 3 and image.shape[2] == 3:
        image = image[:, :, ::-1]  # OpenCV writes BGR
    ok, encoded = cv2.imencode(".png", np.ascontiguousarray(image), PNG_OPTIONS)
    if not ok:  # pragma: no cover - OpenCV reports no reason
        raise ValueError(f"OpenCV could not encode an image of shape {image.shape} as PNG")
    return encoded.tobytes()
