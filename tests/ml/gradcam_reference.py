"""pytorch-grad-cam itself (hooks, a full backward): the reference that ml.gradcam.explain is held to.
Test code only: production computes the same maps without hooks (ml.gradcam.explain)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import numpy as np
import torch
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
from torch import nn

from ml.gradcam import METHODS, check_method, check_targets
from ml.models import gradcam_layer


def reference_cam(
    model: nn.Module, images: torch.Tensor, *, targets: Sequence[int], method: str = "gradcam"
) -> np.ndarray:
    """`cam_for_batch` by pytorch-grad-cam itself (hooks, a full backward): the reference `explain` is held to."""
    check_method(method)
    check_targets(targets, len(images))
    device = next(model.parameters()).device
    # A clone outside inference mode: an inference tensor cannot take part in the backward pass.
    # oneDNN off for this full backward: the torch 2.14.1 CPU defect of ml.runtime.memory_format.
    with (
        torch.inference_mode(False),
        torch.enable_grad(),
        _preserved(model),
        torch.backends.mkldnn.flags(enabled=False),
    ):
        batch = images.detach().to(device).clone()
        with METHODS[method](model=model, target_layers=[gradcam_layer(model, min(images.shape[-2:]))]) as cam:
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
