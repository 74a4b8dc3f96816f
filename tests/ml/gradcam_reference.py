"""pytorch-grad-cam itself (hooks, a full backward): the reference that ml.gradcam.explain is held to.
Test code only: production computes the same maps without hooks (ml.gradcam.explain)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import numpy as np
import torch
import ttach as tta
from pytorch_grad_cam.base_cam import BaseCAM
from pytorch_grad_cam.utils.image import scale_cam_image
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
from torch import nn

from ml.gradcam import METHODS, check_method, check_targets
from ml.models import gradcam_layer


def reference_cam(
    model: nn.Module, images: torch.Tensor, *, targets: Sequence[int], method: str = "gradcam", flip: bool = False
) -> np.ndarray:
    """`cam_for_batch` by pytorch-grad-cam itself (hooks, a full backward): the reference `explain` is held to.
    `flip`: its aug_smooth with a horizontal flip as the only augmentation."""
    check_method(method)
    check_targets(targets, len(images))
    device = next(model.parameters()).device
    layer = gradcam_layer(model, min(images.shape[-2:]))
    # A clone outside inference mode: an inference tensor cannot take part in the backward pass.
    # oneDNN off for this full backward: the torch 2.14.1 CPU defect of ml.runtime.memory_format.
    with (
        torch.inference_mode(False),
        torch.enable_grad(),
        _preserved(model),
        torch.backends.mkldnn.flags(enabled=False),
    ):
        batch = images.detach().to(device).clone()
        placed = _placed(METHODS[method], _stride(model, layer, batch))
        with placed(model=model, target_layers=[layer]) as cam:
            cam.tta_transforms = tta.Compose([tta.HorizontalFlip()])  # GradCAM.__init__ does not pass it on
            try:
                maps = cam(
                    input_tensor=batch, targets=[ClassifierOutputTarget(int(t)) for t in targets], aug_smooth=flip
                )
            except IndexError as exc:  # BaseCAM.__exit__ would print and swallow an IndexError
                raise ValueError(f"a target in {list(targets)} is not a class index of this model: {exc}") from exc
    clipped: np.ndarray = np.clip(maps, 0.0, 1.0).astype(np.float32)
    return clipped


PROBE_SIDE = 64  # px: a side every stage of both models divides exactly, to measure a layer's stride


def _stride(model: nn.Module, layer: nn.Module, images: torch.Tensor) -> int:
    """Input pixels per pixel of `layer`, measured on a PROBE_SIDE input (not read from ml.models)."""
    seen: list[torch.Size] = []
    handle = layer.register_forward_hook(lambda module, args, out: seen.append(out.shape))
    try:
        model.eval()
        with torch.no_grad():
            model(images.new_zeros(1, images.shape[1], PROBE_SIDE, PROBE_SIDE))
    finally:
        handle.remove()
    return PROBE_SIDE // seen[0][-1]


def _placed(method: type[BaseCAM], stride: int) -> type[BaseCAM]:
    """`method` with its layer's map upscaled by the layer's stride instead of stretched over the input,
    then cropped or zero-padded at the bottom and right to the input's size and scaled to [0, 1] again:
    where the stride divides the input that is pytorch-grad-cam's map itself."""

    class Placed(method):  # type: ignore[misc]
        def get_target_width_height(self, input_tensor: torch.Tensor) -> tuple[int, int]:
            height, width = self.activations_and_grads.activations[0].shape[-2:]
            return width * stride, height * stride

        def forward(
            self, input_tensor: torch.Tensor, targets: list[nn.Module], eigen_smooth: bool = False
        ) -> np.ndarray:
            maps = super().forward(input_tensor, targets, eigen_smooth)
            height, width = input_tensor.shape[-2:]
            maps = maps[:, :height, :width]
            padding = ((0, 0), (0, height - maps.shape[1]), (0, width - maps.shape[2]))
            placed: np.ndarray = scale_cam_image(np.pad(maps, padding))
            return placed

    return Placed


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
