"""The two classifiers: the CIFAR ResNet18 and the ResNet9 ("custom_resnet") of the OneCycle recipe.

Both take any square input of 16 px or more with 1 or 3 channels: the stem keeps the resolution,
three stride-2 stages (or max pools) divide it by 8, and an adaptive pool closes the network.
"""

from __future__ import annotations

from collections.abc import Callable

from torch import Tensor, nn

from ml.specs import MODEL_INFO, MODELS, ModelSpec  # MODEL_INFO re-exported: the catalogue


def conv_bn_relu(in_ch: int, out_ch: int, *, pool: bool = False) -> nn.Sequential:
    """3x3 conv (no bias: the BN has one), an optional 2x2 max pool, BN, ReLU."""
    layers: list[nn.Module] = [nn.Conv2d(in_ch, out_ch, kernel_size=3, padding=1, bias=False)]
    if pool:
        layers.append(nn.MaxPool2d(2))
    layers += [nn.BatchNorm2d(out_ch), nn.ReLU(inplace=True)]
    return nn.Sequential(*layers)


class BasicBlock(nn.Module):
    """Two 3x3 conv-BN with an identity shortcut, or a 1x1 conv-BN one when the shape changes."""

    def __init__(self, in_ch: int, out_ch: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_ch, out_ch, kernel_size=3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_ch)
        self.conv2 = nn.Conv2d(out_ch, out_ch, kernel_size=3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_ch)
        self.relu = nn.ReLU(inplace=True)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_ch != out_ch:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_ch, out_ch, kernel_size=1, stride=stride, bias=False), nn.BatchNorm2d(out_ch)
            )

    def forward(self, x: Tensor) -> Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        activated: Tensor = self.relu(out + self.shortcut(x))
        return activated


class ResNet18(nn.Module):
    """kuangliu/pytorch-cifar ResNet18 (ml.specs.MODEL_INFO["resnet18"])."""

    def __init__(self, *, in_channels: int, num_classes: int, width: int = 64) -> None:
        super().__init__()
        self.stem = conv_bn_relu(in_channels, width)
        self.layer1 = self._stage(width, width, stride=1)
        self.layer2 = self._stage(width, 2 * width, stride=2)
        self.layer3 = self._stage(2 * width, 4 * width, stride=2)
        self.layer4 = self._stage(4 * width, 8 * width, stride=2)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(8 * width, num_classes)

    @staticmethod
    def _stage(in_ch: int, out_ch: int, *, stride: int) -> nn.Sequential:
        return nn.Sequential(BasicBlock(in_ch, out_ch, stride), BasicBlock(out_ch, out_ch, 1))

    STRIDES: tuple[int, ...] = (1, 1, 2, 4, 8)  # input px per output px of each stage: layer2-4 have stride 2

    def stages(self) -> list[nn.Module]:
        """The feature stages in order; forward_head follows the last."""
        return [self.stem, self.layer1, self.layer2, self.layer3, self.layer4]

    @staticmethod
    def sides(image_size: int) -> list[int]:
        """The side of each stage's output for image_size inputs: layer2-4 halve it (stride 2, padding 1)."""
        halve: Callable[[int], int] = lambda side: (side - 1) // 2 + 1  # noqa: E731
        return [image_size, image_size, halve(image_size), halve(halve(image_size)), halve(halve(halve(image_size)))]

    def forward_features(self, x: Tensor) -> Tensor:
        """Up to and including GradCAM's layer (layer4): (N, 8w, S/8, S/8)."""
        features: Tensor = self.layer4(self.layer3(self.layer2(self.layer1(self.stem(x)))))
        return features

    def forward_head(self, features: Tensor) -> Tensor:
        logits: Tensor = self.fc(self.pool(features).flatten(1))
        return logits

    def forward(self, x: Tensor) -> Tensor:
        return self.forward_head(self.forward_features(x))


class ResidualStage(nn.Module):
    """conv-pool-BN-ReLU, then (optionally) x + two conv-BN-ReLU of x.

    One module so that its output, the stage plus its residual, is a hookable layer (GradCAM's)."""

    def __init__(self, in_ch: int, out_ch: int, *, residual: bool) -> None:
        super().__init__()
        self.conv = conv_bn_relu(in_ch, out_ch, pool=True)
        self.res: nn.Module | None = None
        if residual:
            self.res = nn.Sequential(conv_bn_relu(out_ch, out_ch), conv_bn_relu(out_ch, out_ch))

    def forward(self, x: Tensor) -> Tensor:
        x = self.conv(x)
        return x if self.res is None else x + self.res(x)


class CustomResNet(nn.Module):
    """The ResNet9 of the OneCycle recipe (ml.specs.MODEL_INFO["custom_resnet"])."""

    def __init__(self, *, in_channels: int, num_classes: int, width: int = 64) -> None:
        super().__init__()
        self.prep = conv_bn_relu(in_channels, width)
        self.layer1 = ResidualStage(width, 2 * width, residual=True)
        self.layer2 = ResidualStage(2 * width, 4 * width, residual=False)
        self.layer3 = ResidualStage(4 * width, 8 * width, residual=True)
        self.pool = nn.AdaptiveMaxPool2d(1)  # adaptive: 28 px inputs end at 3x3, 32 px at 4x4
        self.fc = nn.Linear(8 * width, num_classes)

    STRIDES: tuple[int, ...] = (1, 2, 4, 8)  # input px per output px of each stage: layer1-3 max-pool by 2

    def stages(self) -> list[nn.Module]:
        """The feature stages in order; forward_head follows the last."""
        return [self.prep, self.layer1, self.layer2, self.layer3]

    @staticmethod
    def sides(image_size: int) -> list[int]:
        """The side of each stage's output for image_size inputs: layer1-3 halve it (max-pool 2)."""
        return [image_size, image_size // 2, image_size // 4, image_size // 8]

    def forward_features(self, x: Tensor) -> Tensor:
        """Up to and including GradCAM's layer (layer3 with its residual): (N, 8w, S/8, S/8)."""
        features: Tensor = self.layer3(self.layer2(self.layer1(self.prep(x))))
        return features

    def forward_head(self, features: Tensor) -> Tensor:
        logits: Tensor = self.fc(self.pool(features).flatten(1))
        return logits

    def forward(self, x: Tensor) -> Tensor:
        return self.forward_head(self.forward_features(x))


_BUILDERS: dict[str, type[nn.Module]] = {"resnet18": ResNet18, "custom_resnet": CustomResNet}
assert set(_BUILDERS) == set(MODELS) == set(MODEL_INFO)


def build_model(spec: ModelSpec, *, in_channels: int, num_classes: int) -> nn.Module:
    """A freshly initialised model of `spec.name` at `spec.width`, on the CPU, in train mode."""
    if spec.name not in _BUILDERS:
        raise ValueError(f"unknown model {spec.name!r}; expected one of {sorted(_BUILDERS)}")
    for name, value in (("in_channels", in_channels), ("num_classes", num_classes)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive int; got {value!r}")
    return _BUILDERS[spec.name](in_channels=in_channels, num_classes=num_classes, width=spec.width)


def count_parameters(model: nn.Module) -> int:
    """The number of trainable and frozen parameters (buffers such as BN statistics excluded)."""
    return sum(p.numel() for p in model.parameters())


def flip_averaged(model: nn.Module, images: Tensor, logits: Tensor) -> Tensor:
    """Test-time flip (TrainSpec.test_time_flip): `logits`, the model's for `images` (N, C, H, W), averaged
    with its logits for their mirror images. One definition for evaluation and /predict, so that a
    checkpoint predicts what its reported accuracy measured. In float32 whatever autocast produced (bf16
    on CUDA): averaged and compared in bf16, close logits would round together and swap or tie."""
    return mirror_mean(logits, model(images.flip(3)))


def mirror_mean(logits: Tensor, mirrored: Tensor) -> Tensor:
    """The test-time flip's logits: those of the images and of their mirror images averaged, in float32."""
    return (logits.float() + mirrored.float()) / 2


def unwrap(model: nn.Module) -> nn.Module:
    """The module under a `torch.compile` wrapper (`_orig_mod`), or the model itself."""
    return getattr(model, "_orig_mod", model)


CAM_MIN_SIDE = 2  # px of the CAM layer's output: a 1x1 map is one number, and min-max scaling blanks it


def split_at_cam_layer(
    model: nn.Module, image_size: int | None = None
) -> tuple[Callable[[Tensor], Tensor], Callable[[Tensor], Tensor]]:
    """(features, head) with head(features(x)) == model(x), features ending at
    `gradcam_layer(model, image_size)`.

    Bound methods of the unwrapped module when that is the last stage: a `torch.compile` wrapper's
    compiled graph is not split."""
    inner, index = _known(model), cam_stage(model, image_size)
    stages = inner.stages()
    if index == len(stages) - 1:
        return inner.forward_features, inner.forward_head

    def features(x: Tensor) -> Tensor:
        for stage in stages[: index + 1]:
            x = stage(x)
        return x

    def head(x: Tensor) -> Tensor:
        for stage in stages[index + 1 :]:
            x = stage(x)
        return inner.forward_head(x)

    return features, head


def cam_stage(model: nn.Module, image_size: int | None = None) -> int:
    """The index in `stages()` of GradCAM's layer: the last stage, or for inputs so small that its
    output would be under CAM_MIN_SIDE (ResNet18 at 8 px, CustomResNet below 16 px) the last one
    with a spatial extent. None: the last stage, whatever the size."""
    inner = _known(model)
    last = len(inner.stages()) - 1
    if image_size is None:
        return last
    usable = [i for i, side in enumerate(inner.sides(image_size)) if side >= CAM_MIN_SIDE]
    if not usable:
        raise ValueError(
            f"{image_size} px images are too small to explain: no layer of {type(inner).__name__} keeps "
            f"{CAM_MIN_SIDE}x{CAM_MIN_SIDE} pixels"
        )
    return usable[-1]


def cam_stride(model: nn.Module, image_size: int | None = None) -> int:
    """Input pixels per pixel of GradCAM's layer for `image_size` inputs (cam_stage): its pixel (i, j)
    stands for the input's stride x stride block at (stride*i, stride*j)."""
    inner = _known(model)
    return inner.STRIDES[cam_stage(model, image_size)]


def gradcam_layer(model: nn.Module, image_size: int | None = None) -> nn.Module:
    """GradCAM's target layer: the last block at the lowest resolution that keeps a spatial extent
    for `image_size` inputs (cam_stage)."""
    stage = _known(model).stages()[cam_stage(model, image_size)]
    return stage[-1] if isinstance(stage, nn.Sequential) else stage  # ResNet18: layer4's last block


def _known(model: nn.Module) -> ResNet18 | CustomResNet:
    inner = unwrap(model)
    if isinstance(inner, (ResNet18, CustomResNet)):
        return inner
    raise ValueError(
        f"no GradCAM layer known for {type(inner).__name__}; expected one of "
        f"{sorted(cls.__name__ for cls in _BUILDERS.values())}"
    )
