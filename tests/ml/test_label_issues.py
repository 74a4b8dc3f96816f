"""Likely label errors: the ranking is cleanlab's own on the same probabilities, a planted mislabelled
image comes first, the file round-trips, and the overlays of the first issues are written for both the
given and the predicted class."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from cleanlab.filter import find_label_issues
from PIL import Image

from ml import label_issues
from ml.calibration import softmax
from ml.models import build_model
from ml.normalization import Normalization
from ml.specs import ModelSpec
from ml.trust import write_overlays

CLASSES = ["a", "b", "c", "d"]


def noisy(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Labels and a model's probabilities that mostly agree with them, with 10% of the labels flipped."""
    rng = np.random.default_rng(seed)
    truth = rng.integers(0, len(CLASSES), n)
    logits = rng.normal(0, 1.0, size=(n, len(CLASSES)))
    logits[np.arange(n), truth] += 3.0
    labels = truth.copy()
    flipped = rng.random(n) < 0.1
    labels[flipped] = (truth[flipped] + rng.integers(1, len(CLASSES), flipped.sum())) % len(CLASSES)
    return labels, softmax(logits)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_the_ranking_is_cleanlabs(seed: int) -> None:
    labels, probabilities = noisy(600, seed)
    ranked, scores = label_issues.rank(labels, probabilities)
    expected = find_label_issues(labels, probabilities, return_indices_ranked_by="self_confidence")
    assert len(ranked) > 20 and ranked.tolist() == expected.tolist()
    assert np.allclose(scores, probabilities[np.arange(600), labels])  # self-confidence: p(given class)


def test_a_planted_mislabelled_image_comes_first(tmp_path: Path) -> None:
    labels, probabilities = noisy(400, 7)
    clean = probabilities.argmax(1)
    labels = clean.copy()  # every label agrees with the model...
    probabilities[123] = [0.001, 0.997, 0.001, 0.001]
    labels[123] = 3  # ...but this one, which the model is sure is a "b"
    found = label_issues.find(labels, probabilities, CLASSES, set_name="test")
    assert found.index[0] == 123 and found.given[0] == 3 and found.predicted[0] == 1
    assert found.given_probability[0] == pytest.approx(0.001) and found.score[0] == pytest.approx(0.001)
    assert np.all(np.diff(found.score) >= 0) and found.overlays == min(label_issues.TOP_OVERLAYS, len(found.index))
    loaded = label_issues.load(label_issues.save(found, tmp_path / label_issues.FILE_NAME))
    assert loaded.index.tolist() == found.index.tolist() and loaded.set_name == "test"
    assert loaded.classes == CLASSES and loaded.predicted.tolist() == found.predicted.tolist()
    assert loaded.has_overlay(123) and not loaded.has_overlay(0 if 0 not in found.index else -1)


def test_one_class_has_no_issues() -> None:
    labels = np.zeros(20, dtype=np.int64)
    probabilities = np.tile([0.9, 0.1], (20, 1))
    ranked, scores = label_issues.rank(labels, probabilities)
    assert ranked.tolist() == [] and scores.shape == (20,)


def test_the_first_issues_get_overlays_of_both_classes(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(60, 28, 28, 1), dtype=np.uint8)
    labels, probabilities = noisy(60, 3)
    found = label_issues.find(labels, probabilities, CLASSES, set_name="validation")
    assert 0 < found.overlays == len(found.index) <= label_issues.TOP_OVERLAYS
    model = build_model(ModelSpec(name="resnet18", width=4), in_channels=1, num_classes=len(CLASSES)).eval()
    (tmp_path / label_issues.OVERLAY_FOLDER).mkdir()
    stale = tmp_path / label_issues.OVERLAY_FOLDER / "999_given.png"
    stale.write_bytes(b"old")
    write_overlays(tmp_path, [(model, Normalization.of([0.5], [0.25]))], found, images)
    written = sorted(p.name for p in (tmp_path / label_issues.OVERLAY_FOLDER).iterdir())
    expected = sorted(label_issues.overlay_name(int(i), t) for i in found.index for t in label_issues.TARGETS)
    assert written == expected
    with Image.open(tmp_path / label_issues.OVERLAY_FOLDER / expected[0]) as image:
        assert image.size == (96, 96)
