"""ml.cutout: the paper's Cutout (centre uniform over the image, square clipped at the borders, every
image), its arguments as a spec names them, and its place in augmentation.json."""

from __future__ import annotations

import json

import albumentations as A
import numpy as np
import pytest
from pydantic import ValidationError

from ml.augment import build_train_transform, reseed, validate_transforms
from ml.cutout import Cutout
from ml.normalization import Normalization
from ml.specs import TrainSpec

FILL = 7  # a value the zero images below never hold


def holes(cutout: Cutout, *, size: int, n: int, channels: int = 1) -> np.ndarray:
    """(n, size, size) bool: the pixels `cutout` filled in n seeded draws on zero images."""
    reseed(A.Compose([cutout]), 0)
    image = np.zeros((size, size, channels), np.uint8)
    return np.stack([np.all(cutout(image=image)["image"] == FILL, axis=-1) for _ in range(n)])


def test_the_masking_frequencies_are_the_papers():
    """16 px holes on 32 px images: a hole covers row 0 for centres 0..8 (9 of 32), a middle row for
    16 of 32, and 14 rows on average, so pixel (0, 0) is masked with chance 81/1024, the centre with
    1/4, and 14 x 14 = 196 px on average (CoarseDropout inside the image at p 0.5: 1/578, 0.44, 128)."""
    masked = holes(Cutout(length=16, fill=FILL), size=32, n=4000)
    area = masked.sum(axis=(1, 2))
    assert area.min() >= 8 * 8 and area.max() == 16 * 16, "every image, the hole clipped to 8..16 px a side"
    assert abs(area.mean() - 196) < 3, f"mean masked area {area.mean():.1f} px; 196 expected"
    frequency = masked.mean(axis=0)
    assert abs(frequency[0, 0] - 81 / 1024) < 0.02, f"pixel (0, 0) masked {frequency[0, 0]:.3f}; 0.079 expected"
    assert abs(frequency[-1, -1] - 64 / 1024) < 0.02, "pixel (31, 31): centres 24..31 on each axis"
    assert abs(frequency[8:24, 8:24].mean() - 0.25) < 0.01, "the middle: 16 of 32 centres on each axis"


def test_length_holes_fill_and_probability():
    whole = holes(Cutout(length=5, fill=FILL), size=32, n=300).sum(axis=(1, 2))
    assert whole.max() == 25 and whole.min() >= 3 * 3, "an odd length keeps its side: 5 rows, not 4"
    three = holes(Cutout(num_holes=3, length=4, fill=FILL), size=32, n=300).sum(axis=(1, 2))
    assert three.max() == 3 * 16 and three.min() >= 4, "three holes, overlapping or clipped at times"
    rgb = Cutout(length=32, fill=(1, 2, 3))(image=np.zeros((8, 8, 3), np.uint8))["image"]
    assert np.all(rgb == (1, 2, 3)), "one fill per channel; a hole of 4x the side covers all"
    never = holes(Cutout(length=16, fill=FILL, p=0), size=32, n=50)
    assert not never.any() and Cutout().p == 1.0 and (Cutout().num_holes, Cutout().length) == (1, 16)


def test_augmentation_json_describes_it_and_reads_back():
    compose = build_train_transform(
        [{"name": "Cutout", "num_holes": 2, "length": 8, "fill": [1, 2, 3]}],
        image_size=32,
        normalization=Normalization.of((0.5,) * 3, (0.25,) * 3),
    )
    text = json.dumps(A.to_dict(compose))
    saved = json.loads(text)["transform"]["transforms"][0]
    assert saved == {"__class_fullname__": "ml.cutout.Cutout", "p": 1.0, "num_holes": 2, "length": 8, "fill": [1, 2, 3]}
    rebuilt = A.from_dict(json.loads(text))
    assert json.loads(json.dumps(A.to_dict(rebuilt))) == json.loads(text)
    image = np.random.default_rng(0).integers(0, 256, size=(32, 32, 3), dtype=np.uint8)
    reseed(compose, 3)
    reseed(rebuilt, 3)
    np.testing.assert_array_equal(compose(image=image)["image"], rebuilt(image=image)["image"])


@pytest.mark.parametrize(
    ("item", "expected"),
    [
        (
            {"length": 200},
            r"augmentation\[0\] Cutout: length=200 is far beyond the dataset's 32 px images; at most 128",
        ),
        ({"length": 0}, r"'Cutout': length: Input should be greater than or equal to 1 \(got 0\)"),
        ({"num_holes": 0}, r"'Cutout': num_holes: Input should be greater than or equal to 1 \(got 0\)"),
        ({"p": 1.5}, r"'Cutout': p: Input should be less than or equal to 1 \(got 1.5\)"),
        ({"size": 8}, r"'Cutout' has no argument\(s\) \['size'\]; it takes \['num_holes', 'length', 'fill', 'p'\]"),
    ],
)
def test_a_spec_names_what_is_wrong_with_its_cutout(item, expected):
    with pytest.raises(ValidationError, match=expected) as caught:
        TrainSpec.model_validate({"dataset": {"name": "cifar10"}, "augmentation": [{"name": "Cutout", **item}]})
    assert caught.value.errors()[0]["loc"][0] == "augmentation"


def test_a_spec_may_name_it_and_a_fill_must_fit_the_channels():
    spec = TrainSpec.model_validate({"dataset": {"name": "cifar10"}, "augmentation": [{"name": "Cutout", "length": 8}]})
    assert spec.augmentation == [{"name": "Cutout", "length": 8}] and validate_transforms(spec.augmentation) == []
    with pytest.raises(ValueError, match=r"'Cutout' fails on \(32, 32, 3\) images: .*channels"):
        build_train_transform(
            [{"name": "Cutout", "fill": [1, 2]}], image_size=32, normalization=Normalization.of((0.5,) * 3, (0.2,) * 3)
        )
