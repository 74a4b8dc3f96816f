"""ml.gradcam: maps of the right shape and range, scoped hooks, the model left as it was found."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from gradcam_reference import reference_cam
from PIL import Image
from torch import nn

from ml.gradcam import METHODS, cam_for_batch, explain, overlay, to_png_bytes
from ml.models import build_model, flip_averaged, gradcam_layer
from ml.specs import MODELS, ModelSpec


def tiny(name: str, in_channels: int = 3) -> nn.Module:
    torch.manual_seed(0)
    return build_model(ModelSpec(name=name, width=8), in_channels=in_channels, num_classes=10).eval()


def batch(n: int = 3, channels: int = 3, size: int = 32) -> torch.Tensor:
    return torch.randn(n, channels, size, size, generator=torch.Generator().manual_seed(1))


def hook_count(model: nn.Module) -> int:
    kinds = ("_forward_hooks", "_backward_hooks", "_forward_pre_hooks", "_backward_pre_hooks")
    return sum(len(getattr(module, kind)) for module in model.modules() for kind in kinds)


@pytest.mark.parametrize("name", MODELS)
@pytest.mark.parametrize("method", sorted(METHODS))
def test_maps_have_input_size_and_unit_range(name: str, method: str) -> None:
    maps = cam_for_batch(tiny(name), batch(), targets=[0, 1, 2], method=method)
    assert maps.shape == (3, 32, 32) and maps.dtype == np.float32
    assert maps.min() >= 0.0 and maps.max() <= 1.0
    assert maps.max() > 0.5  # min-max scaled per image: not an empty map


@pytest.mark.parametrize("name", MODELS)
def test_grayscale_28px_inputs(name: str) -> None:
    maps = cam_for_batch(tiny(name, in_channels=1), batch(2, channels=1, size=28), targets=[3, 4])
    assert maps.shape == (2, 28, 28)


@pytest.mark.parametrize("name", MODELS)
@pytest.mark.parametrize("method", sorted(METHODS))
def test_different_targets_give_different_maps(name: str, method: str) -> None:
    model, images = tiny(name), batch()
    first = cam_for_batch(model, images, targets=[0, 0, 0], method=method)
    again = cam_for_batch(model, images, targets=[0, 0, 0], method=method)
    other = cam_for_batch(model, images, targets=[5, 5, 5], method=method)
    np.testing.assert_allclose(first, again, atol=1e-6)
    assert np.abs(first - other).max() > 0.05


def test_no_hooks_leak_after_many_uses() -> None:
    model = tiny("custom_resnet")
    assert hook_count(model) == 0
    for i in range(20):
        cam_for_batch(model, batch(1), targets=[i % 10], method=sorted(METHODS)[i % 2])
    assert hook_count(model) == 0
    assert len(gradcam_layer(model)._forward_hooks) == 0


def test_no_hooks_leak_when_a_target_is_out_of_range() -> None:
    model = tiny("resnet18")
    with pytest.raises(ValueError, match="not a class index"):
        cam_for_batch(model, batch(1), targets=[10])
    assert hook_count(model) == 0


def test_model_modes_flags_and_grads_are_restored() -> None:
    model = tiny("resnet18").train()
    model.layer1.eval()  # a frozen stage keeps its own mode
    for p in model.layer1.parameters():
        p.requires_grad_(False)
    grad = torch.full_like(model.fc.weight, 7.0)
    model.fc.weight.grad = grad
    modes = {m: m.training for m in model.modules()}
    cam_for_batch(model, batch(2), targets=[1, 2])
    assert {m: m.training for m in model.modules()} == modes
    assert not any(p.requires_grad for p in model.layer1.parameters())
    assert all(p.requires_grad for p in model.layer4.parameters())
    assert model.fc.weight.grad is grad and model.fc.bias.grad is None


def test_works_inside_inference_mode_and_on_a_frozen_model() -> None:
    model = tiny("custom_resnet").requires_grad_(False)
    with torch.inference_mode():
        images = batch(2)
        maps = cam_for_batch(model, images, targets=[1, 2])
    assert maps.shape == (2, 32, 32) and maps.max() > 0.5
    assert not any(p.requires_grad for p in model.parameters())


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"method": "scorecam"}, ValueError, r"method 'scorecam'; expected one of \['gradcam', 'gradcam\+\+'\]"),
        ({"targets": [0]}, ValueError, "1 targets for 2 images"),
        ({"targets": [0, -1]}, ValueError, "class indices >= 0"),
    ],
)
def test_bad_arguments_are_refused(kwargs: dict, error: type, match: str) -> None:
    with pytest.raises(error, match=match):
        cam_for_batch(tiny("resnet18"), batch(2), **{"targets": [0, 1], **kwargs})


@pytest.mark.parametrize(("channels", "size"), [(1, 128), (3, 128), (3, 64)])
def test_overlay_size_and_dtype(channels: int, size: int) -> None:
    image = np.random.default_rng(0).integers(0, 256, (32, 32, channels), dtype=np.uint8)
    cam = np.linspace(0, 1, 32 * 32, dtype=np.float32).reshape(32, 32)
    out = overlay(image, cam, size=size)
    assert out.shape == (size, size, 3) and out.dtype == np.uint8
    # the heat map (JET) is red where the cam is hot, blue where it is cold
    assert out[-1, -1, 0] > out[-1, -1, 2] and out[0, 0, 2] > out[0, 0, 0]


def test_overlay_refuses_float_images() -> None:
    with pytest.raises(ValueError, match="image must be uint8"):
        overlay(np.zeros((32, 32, 3), dtype=np.float32), np.zeros((32, 32), dtype=np.float32))


@pytest.mark.parametrize("shape", [(20, 30), (20, 30, 1), (20, 30, 3)])
def test_png_bytes_decode(shape: tuple[int, ...]) -> None:
    image = np.random.default_rng(0).integers(0, 256, shape, dtype=np.uint8)
    decoded = np.asarray(Image.open(io.BytesIO(to_png_bytes(image))))
    assert np.array_equal(decoded.reshape(shape), image)


# --- the fast path (backward stopped at the CAM layer) against pytorch-grad-cam itself ----------


@pytest.mark.parametrize("name", MODELS)
@pytest.mark.parametrize("method", sorted(METHODS))
@pytest.mark.parametrize(("channels", "size"), [(3, 32), (1, 28)])
def test_fast_maps_equal_the_librarys(name: str, method: str, channels: int, size: int) -> None:
    model, images = tiny(name, in_channels=channels), batch(4, channels=channels, size=size)
    targets = [0, 7, 3, 9]
    fast = cam_for_batch(model, images, targets=targets, method=method)
    reference = reference_cam(model, images, targets=targets, method=method)
    assert fast.shape == reference.shape == (4, size, size)
    np.testing.assert_allclose(fast, reference, atol=1e-4)


@pytest.mark.parametrize("method", sorted(METHODS))
def test_explain_without_targets_explains_the_prediction_with_the_models_logits(method: str) -> None:
    model, images = tiny("resnet18"), batch(5)
    logits, maps, chosen = explain(model, images, method=method)
    with torch.inference_mode():
        expected = model(images)
    torch.testing.assert_close(logits, expected, atol=1e-5, rtol=1e-4)
    assert chosen == expected.argmax(dim=1).tolist()
    np.testing.assert_allclose(maps, reference_cam(model, images, targets=chosen, method=method), atol=1e-4)


def test_explain_leaves_no_grads_and_the_modes_as_they_were() -> None:
    model = tiny("custom_resnet").train()
    model.layer1.eval()
    modes = {m: m.training for m in model.modules()}
    explain(model, batch(2), targets=[1, 2])
    assert {m: m.training for m in model.modules()} == modes
    assert all(p.grad is None for p in model.parameters())
    assert hook_count(model) == 0


def test_explain_refuses_a_target_beyond_the_classes() -> None:
    with pytest.raises(ValueError, match=r"not a class index of this model \(10 classes\)"):
        explain(tiny("custom_resnet"), batch(2), targets=[1, 10])


@pytest.mark.parametrize("name", MODELS)
@pytest.mark.parametrize("size", [8, 12, 15, 16])
def test_tiny_images_get_maps_from_a_layer_with_spatial_extent(name: str, size: int) -> None:
    """At 8 px ResNet18's layer4 is 1x1, below 16 px CustomResNet's layer3: one number per map, which
    min-max scaling would turn into a blank map. An earlier layer with at least 2x2 pixels is used instead,
    and the maps still equal pytorch-grad-cam's on that layer."""
    model, images = tiny(name), batch(size=size)
    maps = cam_for_batch(model, images, targets=[0, 1, 2])
    assert maps.shape == (3, size, size)
    assert any(m.max() - m.min() > 0.5 for m in maps)  # on a 1x1 layer every map is blank
    seen = []
    handle = gradcam_layer(model, size).register_forward_hook(lambda module, args, out: seen.append(out.shape))
    model(images)
    handle.remove()
    assert min(seen[0][-2:]) >= 2
    np.testing.assert_allclose(maps, reference_cam(model, images, targets=[0, 1, 2]), atol=1e-5)


# --- test-time flip: pytorch-grad-cam's aug_smooth with a horizontal flip alone ------------------


@pytest.mark.parametrize("name", MODELS)
@pytest.mark.parametrize("method", sorted(METHODS))
@pytest.mark.parametrize(("channels", "size"), [(3, 32), (1, 28)])
def test_flip_maps_equal_the_librarys_aug_smooth(name: str, method: str, channels: int, size: int) -> None:
    model, images = tiny(name, in_channels=channels), batch(4, channels=channels, size=size)
    targets = [0, 7, 3, 9]
    fast = cam_for_batch(model, images, targets=targets, method=method, flip=True)
    reference = reference_cam(model, images, targets=targets, method=method, flip=True)
    np.testing.assert_allclose(fast, reference, atol=1e-4)
    assert np.abs(fast - cam_for_batch(model, images, targets=targets, method=method)).max() > 0.05


def test_flip_explains_the_class_of_the_averaged_logits_in_one_pass(monkeypatch) -> None:
    """(CustomResNet's random weights predict one class for all noise, mirrored or not: ResNet18's.)"""
    model, images = tiny("resnet18"), batch(32)
    with torch.no_grad():
        model.fc.weight.mul_(200)  # decisive logits: the mirror changes some predictions
    with torch.inference_mode():
        averaged = flip_averaged(model, images, model(images))
    passes = []
    features = model.forward_features
    monkeypatch.setattr(model, "forward_features", lambda x: passes.append(len(x)) or features(x))
    logits, maps, chosen = explain(model, images, flip=True)
    assert passes == [64]  # the images and their mirror images, one batch
    torch.testing.assert_close(logits, averaged, atol=1e-5, rtol=1e-4)
    assert chosen == averaged.argmax(dim=1).tolist()
    np.testing.assert_allclose(maps, reference_cam(model, images, targets=chosen, flip=True), atol=1e-4)
    _, _, plain = explain(model, images)
    assert plain != chosen, "some image whose class the mirror changes (else the test proves little)"


# --- where a map lies: the layer's pixel (i, j) over input pixels [8i, 8i + 8) x [8j, 8j + 8) -----


@pytest.mark.parametrize("name", MODELS)
@pytest.mark.parametrize("size", [28, 32, 36, 20])
@pytest.mark.parametrize("column", ["first", "last"])
def test_a_layer_pixel_lights_the_input_pixels_it_stands_for(name: str, size: int, column: str, monkeypatch) -> None:
    """One column of the CAM layer active: the map's half-maximum edges are that column's 8 px block
    (stride 8). At 28 px CustomResNet's max pools floor to 3 columns (pixels 0-23, the rest of the map
    0) and ResNet18's padded stride-2 convolutions round up to 4 (the last one's block 24-31 cut at 27):
    stretched over 28 px, a column's edges moved by a pixel or more, the last one's by 4."""
    model = tiny(name)
    side = (size // 8) if name == "custom_resnet" else -(-size // 8)
    j = 0 if column == "first" else side - 1
    active = torch.zeros(1, model.fc.in_features, side, side)
    active[:, :, :, j] = 1.0
    monkeypatch.setattr(model, "forward_features", lambda x: active.expand(len(x), -1, -1, -1).clone())
    with torch.no_grad():
        model.fc.weight.fill_(1.0)
    (cam,) = cam_for_batch(model, batch(1, size=size), targets=[0])
    covered = min(8 * side, size)
    profile = cam[0]  # the same in every row the layer covers
    np.testing.assert_allclose(cam[:covered], np.broadcast_to(profile, (covered, size)), atol=1e-6)
    assert np.flatnonzero(profile >= 0.5).tolist() == list(range(8 * j, min(8 * j + 8, size)))
    assert not cam[covered:].any() and not cam[:, covered:].any()  # pixels no layer pixel stands for
