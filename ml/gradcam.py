"""GradCAM and GradCAM++ heat maps (pytorch-grad-cam) and their overlays on the input images.

Hooks are scoped: the CAM object registers its hooks when built and removes them when the `with`
block exits, and the model leaves with the train/eval modes, `requires_grad` flags and `.grad`
tensors it came with.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import torch
from PIL import Image
from pytorch_grad_cam import GradCAM, GradCAMPlusPlus
from pytorch_grad_cam.utils.image import show_cam_on_image
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
from torch import nn

from ml.models import gradcam_layer

METHODS = {"gradcam": GradCAM, "gradcam++": GradCAMPlusPlus}
IMAGE_WEIGHT = 0.5  # share of the image in the overlay; the heat map gets the rest


def check_method(method: str) -> None:
    if method not in METHODS:
        raise ValueError(f"unknown GradCAM method {method!r}; expected one of {sorted(METHODS)}")


def cam_for_batch(
    model: nn.Module, images: torch.Tensor, *, targets: list[int], method: str = "gradcam"
) -> np.ndarray:
    """Heat maps (N, H, W) float32 in [0, 1] of class `targets[i]` for normalized `images` (N, C, H, W)."""
    check_method(method)
    if images.ndim != 4:
        raise ValueError(f"images must be a batch (N, C, H, W); got shape {tuple(images.shape)}")
    if len(targets) != len(images):
        raise ValueError(f"one target per image: got {len(targets)} targets for {len(images)} images")
    if any(isinstance(t, bool) or not isinstance(t, (int, np.integer)) or t < 0 for t in targets):
        raise ValueError(f"targets must be class indices >= 0; got {targets!r}")
    device = next(model.parameters()).device
    # A clone outside inference mode: an inference tensor cannot take part in the backward pass.
    # oneDNN off for this backward: in torch 2.14.1 on CPU, an eval-mode backward after a training run in
    # the same process segfaults at small odd batch sizes (3, 25...: tests/ml/test_trainer.py has the case).
    # The native path is ~3x slower per image, which a CAM of a few dozen images can afford.
    with (torch.inference_mode(False), torch.enable_grad(), _preserved(model),
          torch.backends.mkldnn.flags(enabled=False)):
        batch = images.detach().to(device).clone()
        with METHODS[method](model=model, target_layers=[gradcam_layer(model)]) as cam:
            try:
                maps = cam(input_tensor=batch, targets=[ClassifierOutputTarget(int(t)) for t in targets])
            except IndexError as exc:  # BaseCAM.__exit__ would print and swallow an IndexError
                raise ValueError(f"a target in {list(targets)} is not a class index of this model: {exc}") from exc
    return np.clip(maps, 0.0, 1.0).astype(np.float32)


@contextmanager
def _preserved(model: nn.Module) -> Iterator[None]:
    """Let GradCAM switch to eval mode and compute gradients, then put everything back."""
    modes = {module: module.training for module in model.modules()}
    params = list(model.parameters())
    flags = [p.requires_grad for p in params]
    grads = [p.grad for p in params]
    try:
        for p in params:
            p.requires_grad_(True)  # a frozen model still needs gradients at its target layer
        yield
    finally:
        for module, training in modes.items():
            module.training = training
        for p, flag, grad in zip(params, flags, grads):
            p.requires_grad_(flag)
            p.grad = grad


def overlay(image: np.ndarray, cam: np.ndarray, *, size: int = 128) -> np.ndarray:
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
    return show_cam_on_image(base, mask, use_rgb=True, image_weight=IMAGE_WEIGHT)


def to_png_bytes(image: np.ndarray) -> bytes:
    """PNG encoding of a uint8 image (H, W), (H, W, 1) or (H, W, 3)."""
    if image.dtype != np.uint8 or image.ndim not in (2, 3) or (image.ndim == 3 and image.shape[2] not in (1, 3)):
        raise ValueError(f"image must be uint8 (H, W) or (H, W, C) with C in {{1, 3}}; got {image.dtype} {image.shape}")
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[:, :, 0]
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG")
    return buffer.getvalue()
