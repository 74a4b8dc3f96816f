"""The documented recipes validate, and examples/ holds exactly them."""

import json
import re
from pathlib import Path

import pytest

from ml.presets import EXAMPLE_FILES, PRESETS
from ml.specs import AuditSpec, LRFinderSpec, TrainSpec

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
        kind = LRFinderSpec if "num_iter" in body else AuditSpec if "folds" in body else TrainSpec
        kind.model_validate(body)


@pytest.mark.parametrize("name", ["fashion_mnist_cpu", "cifar10_cpu"])
def test_the_cpu_presets_augment_on_the_batched_path(name) -> None:
    # their time budgets assume it: an albumentations DataLoader costs 10-14% of an epoch on 2 cores
    from ml.transforms import RunTransforms

    spec = TrainSpec.model_validate(next(p["spec"] for p in PRESETS if p["name"] == name))
    size, channels = (28, 1) if spec.dataset.name == "fashion_mnist" else (32, 3)
    stats = {"mean": [0.5] * channels, "std": [0.25] * channels}
    assert RunTransforms.build(spec.augmentation, image_size=size, **stats).batched is not None


README = EXAMPLES.parent / "README.md"
BENCH_README = EXAMPLES.parent / "bench" / "README.md"


@pytest.mark.parametrize("preset", PRESETS, ids=lambda p: p["name"])
def test_every_figure_says_what_it_is_and_the_readme_says_the_same(preset) -> None:
    figure = preset["figure"]
    assert figure["status"] in ("measured", "target") and 0 < figure["test_acc"] < 1
    assert f"--preset {preset['name']}" in figure["command"] or preset["name"] == "fashion_mnist_cpu"
    stated = re.findall(r"(?<![\d.])[89]\d(?:\.\d+)?%", preset["description"])
    assert not stated, f"the figure, not the description, states the accuracy: {stated}"
    row = next(line for line in README.read_text().splitlines() if line.startswith(f"| `{preset['name']}` |"))
    assert f"{100 * figure['test_acc']:g}%, {figure['status']}" in row, row
    if figure["status"] == "measured":  # the runs behind it are in bench/README.md, to the digit
        assert f"{100 * figure['test_acc']:.2f}%" in BENCH_README.read_text()


def test_recipes_that_decide_on_accuracy_hold_out_a_validation_split() -> None:
    for preset in PRESETS:
        spec = TrainSpec.model_validate(preset["spec"])
        if spec.scheduler.name == "reduce_on_plateau" or spec.target_accuracy is not None:
            assert spec.validation_split, f"{preset['name']} would choose and measure on the test set"
