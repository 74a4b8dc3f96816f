"""ml.augment: the presets, the user's transform lists and how they are validated."""

from __future__ import annotations

import json

import albumentations as A
import cv2
import numpy as np
import pytest
from pydantic import ValidationError

from ml import augment
from ml.augment import TRANSFORMS, default_transforms, describe, reseed, validate_transforms
from ml.cutout import Cutout
from ml.normalization import Normalization
from ml.specs import LRFinderSpec, TrainSpec
from ml.transforms import RunTransforms

RGB = {"mean": (0.49, 0.48, 0.45), "std": (0.25, 0.24, 0.26)}
GRAY = {"mean": (0.29,), "std": (0.35,)}


def build_train_transform(augmentation, *, image_size: int, mean, std, seed: int | None = None) -> A.Compose:
    compose = augment.build_train_transform(
        augmentation, image_size=image_size, normalization=Normalization.of(mean, std)
    )
    if seed is not None:
        reseed(compose, seed)
    return compose


def random_image(size: int, channels: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(size, size, channels), dtype=np.uint8)


def normalized(image: np.ndarray, mean, std) -> np.ndarray:
    return ((image.astype(np.float32) / 255 - np.float32(mean)) / np.float32(std)).astype(np.float32)


@pytest.mark.parametrize(("size", "stats"), [(32, RGB), (28, GRAY)])
def test_default_pipeline_shape_and_steps(size, stats):
    compose = build_train_transform("default", image_size=size, **stats, seed=0)
    names = [type(t).__name__ for t in compose.transforms]
    assert names == ["PadIfNeeded", "RandomCrop", "HorizontalFlip", "Cutout", "Normalize"]
    pad = compose.transforms[0]
    assert (pad.min_height, pad.min_width, pad.border_mode) == (size + 8, size + 8, cv2.BORDER_REFLECT_101)
    for seed in range(5):
        out = compose(image=random_image(size, len(stats["mean"]), seed))["image"]
        assert out.shape == (size, size, len(stats["mean"])) and out.dtype == np.float32
        assert out.min() > -3 and out.max() < 3


@pytest.mark.parametrize(("size", "stats", "hole"), [(32, RGB, 16), (28, GRAY, 14)])
def test_cutout_is_a_square_hole_of_half_the_side_filled_with_the_mean(size, stats, hole):
    cutout = default_transforms(image_size=size, normalization=Normalization.of(**stats))[3]
    assert isinstance(cutout, Cutout) and (cutout.num_holes, cutout.length, cutout.p) == (1, hole, 1.0)
    reseed(A.Compose([cutout]), 0)
    image = np.zeros((size, size, len(stats["mean"])), np.uint8)
    fill = np.round(np.float32(stats["mean"]) * 255).astype(np.uint8)
    sides = set()
    for _ in range(200):
        in_hole = np.all(cutout(image=image)["image"] == fill, axis=-1)
        rows, cols = np.nonzero(in_hole)
        side = (rows.max() - rows.min() + 1, cols.max() - cols.min() + 1)
        assert in_hole.sum() == side[0] * side[1], "one rectangle: the square clipped at the borders"
        sides |= set(side)
    assert sides == set(range(hole // 2, hole + 1)), "clipped to half the side in a corner, whole inside"


def test_none_is_exactly_normalize():
    image = random_image(32, 3)
    out = build_train_transform("none", image_size=32, **RGB)(image=image)["image"]
    np.testing.assert_allclose(out, normalized(image, **RGB), atol=1e-5)
    evaluated = RunTransforms.build("none", image_size=32, **RGB).eval(image=image)["image"]
    np.testing.assert_allclose(evaluated, out, atol=1e-6)


def test_a_list_runs_in_order_and_gets_the_dataset_normalize():
    image = random_image(32, 3)
    compose = build_train_transform([{"name": "HorizontalFlip", "p": 1.0}], image_size=32, **RGB)
    assert [type(t).__name__ for t in compose.transforms] == ["HorizontalFlip", "Normalize"]
    np.testing.assert_allclose(compose(image=image)["image"], normalized(image[:, ::-1], **RGB), atol=1e-5)


def test_a_list_with_its_own_normalize_keeps_it():
    own = {"name": "Normalize", "mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5]}
    compose = build_train_transform([{"name": "VerticalFlip", "p": 1.0}, own], image_size=32, **RGB)
    assert [type(t).__name__ for t in compose.transforms] == ["VerticalFlip", "Normalize"]
    image = random_image(32, 3)
    np.testing.assert_allclose(compose(image=image)["image"], image[::-1] / 127.5 - 1, atol=1e-5)


def test_grayscale_custom_list():
    transforms = [{"name": "Affine", "rotate": [-10, 10], "p": 1.0}, {"name": "RandomBrightnessContrast"}]
    out = build_train_transform(transforms, image_size=28, **GRAY, seed=1)(image=random_image(28, 1))["image"]
    assert out.shape == (28, 28, 1) and out.dtype == np.float32


def test_seeded_pipelines_repeat_and_transforms_draw_independently():
    image = random_image(32, 3)
    first = build_train_transform("default", image_size=32, **RGB, seed=7)
    second = build_train_transform("default", image_size=32, **RGB, seed=7)
    for _ in range(5):
        np.testing.assert_array_equal(first(image=image)["image"], second(image=image)["image"])
    flips = A.Compose([A.HorizontalFlip(p=0.5), A.VerticalFlip(p=0.5)])
    reseed(flips, 0)  # A.Compose(seed=0) would flip both or neither, every time
    outcomes = {"none": image, "h": image[:, ::-1], "v": image[::-1], "both": image[::-1, ::-1]}
    seen = set()
    for _ in range(100):
        out = flips(image=image)["image"]
        seen |= {name for name, expected in outcomes.items() if np.array_equal(out, expected)}
    assert seen == set(outcomes), "transforms with the same p must draw independently"


@pytest.mark.filterwarnings("ignore:Argument\\(s\\) 'padding':UserWarning")  # albumentations' own quirk
def test_describe_is_json_and_round_trips():
    compose = build_train_transform("default", image_size=32, **RGB)
    text = json.dumps(describe(compose))
    rebuilt = A.from_dict(json.loads(text))
    assert json.loads(json.dumps(describe(rebuilt))) == json.loads(text)
    names = [t["__class_fullname__"] for t in json.loads(text)["transform"]["transforms"]]
    assert names[-2:] == ["ml.cutout.Cutout", "Normalize"]
    assert isinstance(rebuilt.transforms[3], Cutout) and rebuilt.transforms[3].length == 16


@pytest.mark.parametrize(
    ("transforms", "expected"),
    [
        ([{"name": "Fo"}], r"unknown augmentation transform 'Fo'; expected one of \[.*'HorizontalFlip'"),
        ([{"name": "Lambda"}], r"'Lambda'.*callables"),
        (
            [{"name": "HorizontalFlip", "prob": 0.5}],
            r"'HorizontalFlip' has no argument\(s\) \['prob'\]; it takes \['p'\]$",
        ),
        ([{"name": "HorizontalFlip", "p": 2}], r"'HorizontalFlip': p: .*less than or equal to 1 \(got 2\)"),
        ([{"name": "Resize", "height": 32}], r"'Resize': width: Field required"),
        ([{"name": "Blur", "blur_limit": [2, 4]}], r"'Blur': .*Values less than 3 are not allowed"),  # only a warning
        ([{"name": "CoarseDropout", "max_holes": 8}], r"'CoarseDropout' has no argument\(s\) \['max_holes'\]"),
        (["HorizontalFlip"], r"augmentation\[0\] must be an object"),
        ([{"p": 0.5}], r"augmentation\[0\] must be an object"),
    ],
)
def test_validate_transforms_names_what_is_wrong(transforms, expected):
    with pytest.raises(ValueError, match=expected):
        validate_transforms(transforms)


def test_validate_accepts_what_builds():
    validate_transforms(
        [
            {"name": "HorizontalFlip"},
            {"name": "CoarseDropout", "hole_height_range": [8, 8], "hole_width_range": [8, 8], "p": 1},
        ]
    )
    assert "HorizontalFlip" in TRANSFORMS and "ToTensorV2" not in TRANSFORMS and "Compose" not in TRANSFORMS
    assert all(issubclass(cls, A.BasicTransform) for cls in TRANSFORMS.values())


@pytest.mark.parametrize("spec_class", [TrainSpec, LRFinderSpec])
@pytest.mark.parametrize(("item", "named"), [({"name": "Nope"}, "Nope"), ({"name": "Blur", "prob": 1}, "prob")])
def test_specs_refuse_bad_augmentation(spec_class, item, named):
    with pytest.raises(ValidationError) as caught:
        spec_class.model_validate({"dataset": {"name": "cifar10"}, "augmentation": [item]})
    assert named in str(caught.value) and caught.value.errors()[0]["loc"][0] == "augmentation"


@pytest.mark.parametrize(
    ("transforms", "expected"),
    [
        ([{"name": "RandomFog"}], r"'RandomFog' fails on \(28, 28, 1\) images"),
        ([{"name": "Resize", "height": 20, "width": 20}], r"keep images at \(28, 28, 1\).*\(20, 20, 1\)"),
        ([{"name": "ToRGB"}], r"keep images at \(28, 28, 1\).*\(28, 28, 3\)"),
    ],
)
def test_build_refuses_a_list_that_cannot_run_on_grayscale_28px(transforms, expected):
    with pytest.raises(ValueError, match=expected):
        build_train_transform(transforms, image_size=28, **GRAY)


def test_unknown_preset_is_refused():
    with pytest.raises(ValueError, match="'default', 'none' or a list"):
        build_train_transform("strong", image_size=32, **RGB)


SHIFT_SCALE_ROTATE = {"name": "ShiftScaleRotate", "shift_limit": 0.0625, "scale_limit": 0.1, "rotate_limit": 15}


def test_a_deprecated_but_valid_transform_is_accepted_and_its_warning_returned():
    notes = validate_transforms([{"name": "HorizontalFlip"}, SHIFT_SCALE_ROTATE])
    assert notes == [
        "augmentation[1] ShiftScaleRotate: ShiftScaleRotate is a special case of Affine transform. "
        "Please use Affine transform instead."
    ]
    compose = build_train_transform([SHIFT_SCALE_ROTATE], image_size=32, **RGB)
    assert [type(t).__name__ for t in compose.transforms] == ["ShiftScaleRotate", "Normalize"]
    assert validate_transforms([{"name": "HorizontalFlip"}]) == []


def test_a_bad_argument_warning_is_still_refused_next_to_a_deprecated_transform():
    with pytest.raises(ValueError, match=r"'Blur': .*Values less than 3 are not allowed"):
        validate_transforms([SHIFT_SCALE_ROTATE, {"name": "Blur", "blur_limit": [2, 4]}])


@pytest.mark.parametrize(
    ("item", "expected"),
    [
        ({"name": "Normalize", "mean": 0.9, "std": 0.05}, ((0.9, 0.9, 0.9), (0.05, 0.05, 0.05))),
        ({"name": "Normalize", "mean": [0.1, 0.2, 0.3], "std": [0.5, 0.5, 0.5]}, ((0.1, 0.2, 0.3), (0.5,) * 3)),
        ({"name": "Normalize", "mean": 51, "std": 102, "max_pixel_value": 1.0}, ((0.2,) * 3, (0.4,) * 3)),
    ],
)
def test_the_users_normalize_is_the_models_normalization(item, expected):
    def normalization(augmentation) -> tuple[tuple[float, ...], tuple[float, ...]]:
        transforms = RunTransforms.build(augmentation, image_size=32, **RGB)
        return transforms.mean, transforms.std

    mean, std = normalization([{"name": "HorizontalFlip"}, item])
    assert mean == pytest.approx(expected[0]) and std == pytest.approx(expected[1])
    assert normalization("default") == (tuple(RGB["mean"]), tuple(RGB["std"]))
    assert normalization([{"name": "HorizontalFlip"}]) == (tuple(RGB["mean"]), tuple(RGB["std"]))


@pytest.mark.parametrize(
    ("transforms", "expected"),
    [
        (
            [{"name": "Normalize", "normalization": "image"}],
            r"augmentation\[0\] Normalize: normalization 'image' "
            r"depends on each image's own statistics",
        ),
        ([{"name": "Normalize", "p": 0.5}], r"augmentation\[0\] Normalize: p must be 1 .*got 0.5"),
        ([{"name": "Normalize"}, {"name": "Normalize"}], r"2 Normalize transforms \(at \[0, 1\]\)"),
        (
            [{"name": "Normalize"}, {"name": "RandomBrightnessContrast"}],
            r"augmentation\[0\] Normalize must be the last transform \(at 1\).*clip them",
        ),
    ],
)
def test_a_normalize_that_cannot_hold_at_evaluation_is_refused(transforms, expected):
    with pytest.raises(ValueError, match=expected):
        validate_transforms(transforms)
