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
