"""The documented recipes validate, and examples/ holds exactly them."""

import json
from pathlib import Path

import pytest

from ml.presets import EXAMPLE_FILES, PRESETS
from ml.specs import LRFinderSpec, TrainSpec

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


@pytest.mark.parametrize("preset", PRESETS, ids=lambda p: p["name"])
def test_preset_is_a_valid_train_spec_and_its_example_file_matches(preset) -> None:
    TrainSpec.model_validate(preset["spec"])
    example = json.loads((EXAMPLES / f"{EXAMPLE_FILES[preset['name']]}.json").read_text())
    assert example == preset["spec"]


def test_every_example_file_validates() -> None:
    files = sorted(EXAMPLES.glob("*.json"))
    assert len(files) >= 4
    for path in files:
        body = json.loads(path.read_text())
        (LRFinderSpec if "num_iter" in body else TrainSpec).model_validate(body)


@pytest.mark.parametrize("name", ["fashion_mnist_cpu", "cifar10_cpu"])
def test_the_cpu_presets_augment_on_the_batched_path(name) -> None:
    # their time budgets assume it: an albumentations DataLoader costs 10-14% of an epoch on 2 cores
    from ml.transforms import RunTransforms

    spec = TrainSpec.model_validate(next(p["spec"] for p in PRESETS if p["name"] == name))
    size, channels = (28, 1) if spec.dataset.name == "fashion_mnist" else (32, 3)
    stats = {"mean": [0.5] * channels, "std": [0.25] * channels}
    assert RunTransforms.build(spec.augmentation, image_size=size, **stats).batched is not None
