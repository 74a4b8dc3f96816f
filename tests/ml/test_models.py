"""ml.models: exact parameter counts, shapes over inputs, a fit that learns, the GradCAM layer."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from ml.models import MODEL_INFO, build_model, count_parameters, flip_averaged, gradcam_layer, split_at_cam_layer
from ml.specs import MODELS, ModelSpec


def tiny(name: str, *, in_channels: int = 3, num_classes: int = 10, width: int = 8) -> nn.Module:
    torch.manual_seed(0)
    return build_model(ModelSpec(name=name, width=width), in_channels=in_channels, num_classes=num_classes)


@pytest.mark.parametrize(("name", "expected"), [("resnet18", 11_173_962), ("custom_resnet", 6_573_130)])
def test_parameter_count_at_width_64(name: str, expected: int) -> None:
    with torch.device("meta"):  # shapes only: no memory, no initialisation time
        model = build_model(ModelSpec(name=name, width=64), in_channels=3, num_classes=10)
    assert count_parameters(model) == expected
    assert MODEL_INFO[name]["parameters"] == expected


def test_catalogue_covers_every_model() -> None:
    assert set(MODEL_INFO) == set(MODELS)
    assert all(isinstance(info["description"], str) and info["description"] for info in MODEL_INFO.values())


@pytest.mark.parametrize("name", MODELS)
@pytest.mark.parametrize("in_channels", [1, 3])
@pytest.mark.parametrize("size", [16, 28, 32])
def test_forward_shape(name: str, in_channels: int, size: int) -> None:
    model = tiny(name, in_channels=in_channels, num_classes=7)
    logits = model(torch.randn(2, in_channels, size, size))
    assert logits.shape == (2, 7)
    assert torch.isfinite(logits).all()


@pytest.mark.parametrize("name", MODELS)
def test_convs_have_no_bias_and_the_linear_has_one(name: str) -> None:
    model = tiny(name)
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    assert convs and all(conv.bias is None for conv in convs)
    assert len(linears) == 1 and linears[0].bias is not None


@pytest.mark.parametrize("name", MODELS)
def test_two_step_fit_lowers_the_loss(name: str) -> None:
    model = tiny(name)
    torch.manual_seed(1)
    images, labels = torch.randn(16, 3, 32, 32), torch.arange(16) % 10
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    loss_fn = nn.CrossEntropyLoss()
    losses = []
    for _ in range(3):  # two updates, the loss measured before each and after the last
        loss = loss_fn(model(images), labels)
        losses.append(loss.item())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert losses[0] > losses[1] > losses[2]
    assert losses[2] < 0.9 * losses[0]


@pytest.mark.parametrize("name", MODELS)
def test_gradcam_layer_is_4x4_for_32px(name: str) -> None:
    model = tiny(name).eval()
    seen = []
    handle = gradcam_layer(model).register_forward_hook(lambda module, args, out: seen.append(out.shape))
    try:
        model(torch.randn(1, 3, 32, 32))
    finally:
        handle.remove()
    assert seen == [torch.Size([1, 64, 4, 4])]  # 8x the width 8, at 32 / 8 px


def test_custom_resnet_gradcam_layer_outputs_layer3_plus_residual() -> None:
    model = tiny("custom_resnet").eval()
    layer = gradcam_layer(model)
    x = torch.randn(1, 32, 8, 8)  # layer3's input: 4x the width 8
    with torch.no_grad():
        stage = layer.conv(x)
        assert torch.allclose(layer(x), stage + layer.res(stage))


def test_gradcam_layer_unwraps_a_compiled_model() -> None:
    model = tiny("resnet18")
    compiled = torch.compile(model)  # only wraps: compilation waits for the first call
    assert gradcam_layer(compiled) is model.layer4[-1]


def test_gradcam_layer_rejects_unknown_models() -> None:
    with pytest.raises(ValueError, match="no GradCAM layer known for Linear"):
        gradcam_layer(nn.Linear(2, 2))


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [({"in_channels": 0}, "in_channels must be a positive int; got 0"), ({"num_classes": 1.5}, "num_classes")],
)
def test_build_model_rejects_bad_sizes(kwargs: dict, match: str) -> None:
    args = {"in_channels": 3, "num_classes": 10, **kwargs}
    with pytest.raises(ValueError, match=match):
        build_model(ModelSpec(name="resnet18", width=4), **args)


@pytest.mark.parametrize("name", MODELS)
def test_split_at_cam_layer_is_the_model_cut_at_the_gradcam_layer(name: str) -> None:
    model = tiny(name).eval()
    features, head = split_at_cam_layer(model)
    seen = []
    handle = gradcam_layer(model).register_forward_hook(lambda module, args, out: seen.append(out))
    x = torch.randn(3, 3, 32, 32)
    try:
        with torch.no_grad():
            activations = features(x)
            assert torch.equal(activations, seen[0])  # features end at the hooked layer's output
            assert torch.equal(head(activations), model(x))
    finally:
        handle.remove()


def test_split_at_cam_layer_unwraps_a_compiled_model_and_rejects_unknown_ones() -> None:
    model = tiny("custom_resnet")
    features, head = split_at_cam_layer(torch.compile(model))
    assert features == model.forward_features and head == model.forward_head
    with pytest.raises(ValueError, match="no GradCAM layer known for Linear"):
        split_at_cam_layer(nn.Linear(2, 2))


def test_test_time_flip_averages_in_float32_whatever_autocast_gave() -> None:
    """On CUDA autocast gives bf16 logits: their average and argmax are taken in float32."""
    model = tiny("custom_resnet").eval()
    images = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        logits = model(images).to(torch.bfloat16)
        averaged = flip_averaged(model, images, logits)
        expected = (logits.float() + model(images.flip(3)).float()) / 2
    assert averaged.dtype == torch.float32
    assert torch.equal(averaged, expected)
