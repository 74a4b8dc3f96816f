"""ml.reports: the GradCAM grids explain what the model predicted, with its mirror images when it
predicts with them (test-time flip); examples.json holds every test image, with overlays for a capped set."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from ml import examples, reports
from ml.examples import Examples, overlay_indices
from ml.examples import load as load_examples
from ml.examples import save as save_examples
from ml.gradcam import cam_for_batch, overlay, overlay_size
from ml.models import build_model
from ml.normalization import Normalization
from ml.reports import Report, write_report
from ml.specs import ModelSpec, TrainSpec
from ml.trainer import train

CLASSES = [f"c{i}" for i in range(10)]


@pytest.mark.parametrize("test_time_flip", [False, True])
def test_gradcam_grids_are_flip_averaged_when_the_model_predicts_with_the_mirror(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, test_time_flip: bool
) -> None:
    torch.manual_seed(0)
    model = build_model(ModelSpec(name="resnet18", width=8), in_channels=3, num_classes=len(CLASSES)).eval()
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (6, 32, 32, 3), dtype=np.uint8)
    labels, predictions = np.array([0, 1, 2, 3, 4, 5]), np.array([0, 1, 2, 9, 9, 9])
    normalization = Normalization.of([0.5] * 3, [0.25] * 3)
    report = Report(
        out_dir=tmp_path,
        epochs=[],
        step_lrs=[],
        classes=CLASSES,
        test_images=images,
        test_labels=labels,
        predictions=predictions,
        samples=(normalization.normalize(torch.from_numpy(images)), torch.from_numpy(labels)),
        normalization=normalization,
        gradcam_count=3,
        test_time_flip=test_time_flip,
    )
    grids: dict[str, np.ndarray] = {}
    monkeypatch.setattr(
        reports.plots, "plot_image_grid", lambda tiles, titles, path, **kwargs: grids.update({Path(path).name: tiles})
    )
    write_report(report, model)
    x = normalization.normalize(torch.from_numpy(images))

    def tiles(indices: list[int], targets: list[int], flip: bool) -> np.ndarray:
        cams = cam_for_batch(model, x[indices], targets=targets, flip=flip)
        return np.stack([overlay(images[i], cam, size=overlay_size(32)) for i, cam in zip(indices, cams)])

    wrong, right = [3, 4, 5], [0, 1, 2]
    expected = {
        "gradcam_misclassified.png": (wrong, [9, 9, 9]),
        "gradcam_misclassified_true.png": (wrong, [3, 4, 5]),
        "gradcam_correct.png": (right, [0, 1, 2]),
    }
    for name, (indices, targets) in expected.items():
        assert np.array_equal(grids[name], tiles(indices, targets, flip=test_time_flip)), name
        assert not np.array_equal(grids[name], tiles(indices, targets, flip=not test_time_flip)), name


def tiny_report(tmp_path: Path, *, n: int = 40, test_time_flip: bool = False, seed: int = 0) -> Report:
    """A report of n random 28x28 grey test images, about half of them misclassified, with probabilities."""
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, (n, 28, 28, 1), dtype=np.uint8)
    labels = rng.integers(0, len(CLASSES), n)
    predictions = np.where(rng.random(n) < 0.5, labels, (labels + 1 + rng.integers(0, 9, n)) % len(CLASSES))
    confidence = rng.uniform(0.1, 1.0, n)
    true_probability = np.where(predictions == labels, confidence, rng.uniform(0.0, 0.1, n))
    normalization = Normalization.of([0.5], [0.25])
    return Report(
        out_dir=tmp_path,
        epochs=[],
        step_lrs=[],
        classes=CLASSES,
        test_images=images,
        test_labels=labels,
        predictions=predictions,
        samples=(normalization.normalize(torch.from_numpy(images[:8])), torch.from_numpy(labels[:8])),
        normalization=normalization,
        test_time_flip=test_time_flip,
        confidence=confidence,
        true_probability=true_probability,
    )


@pytest.mark.parametrize("test_time_flip", [False, True])
def test_examples_json_holds_every_test_image_and_overlays_for_the_capped_set(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, test_time_flip: bool
) -> None:
    monkeypatch.setattr(examples, "MAX_MISCLASSIFIED_OVERLAYS", 5)
    monkeypatch.setattr(examples, "CORRECT_OVERLAYS_EACH_END", 2)
    monkeypatch.setattr(reports, "CAM_BATCH", 4)  # several batches
    torch.manual_seed(0)
    model = build_model(ModelSpec(name="resnet18", width=4), in_channels=1, num_classes=len(CLASSES)).eval()
    report = tiny_report(tmp_path, test_time_flip=test_time_flip)
    written, _ = write_report(report, model)
    assert tmp_path / "examples.json" in written and (tmp_path / "misclassified.png").is_file()  # the grids stay

    data = json.loads((tmp_path / "examples.json").read_text())
    assert data["count"] == 40 and data["classes"] == CLASSES and data["test_time_flip"] is test_time_flip
    assert data["true"] == report.test_labels.tolist() and data["pred"] == report.predictions.tolist()
    assert data["correct"] == (report.predictions == report.test_labels).astype(int).tolist()
    assert data["confidence"] == pytest.approx(report.confidence, abs=1e-4)
    assert data["true_probability"] == pytest.approx(report.true_probability, abs=1e-4)
    wrong = np.flatnonzero(report.predictions != report.test_labels)
    right = np.flatnonzero(report.predictions == report.test_labels)
    assert report.confidence is not None
    top_wrong = wrong[np.argsort(-report.confidence[wrong])[:5]]
    by_confidence = right[np.argsort(-report.confidence[right])]
    expected = sorted({*top_wrong, *by_confidence[:2], *by_confidence[-2:]})
    assert data["overlays"] == expected
    assert sorted(int(p.stem) for p in (tmp_path / "examples").glob("*.png")) == expected

    x = report.normalization.normalize(torch.from_numpy(report.test_images))
    index = top_wrong[0]
    cam = cam_for_batch(model, x[[index]], targets=[int(report.predictions[index])], flip=test_time_flip)[0]
    tile = np.asarray(Image.open(tmp_path / "examples" / f"{index}.png").convert("RGB"))
    assert tile.shape == (reports.EXAMPLE_OVERLAY_SIZE, reports.EXAMPLE_OVERLAY_SIZE, 3)
    assert np.array_equal(tile, overlay(report.test_images[index], cam, size=reports.EXAMPLE_OVERLAY_SIZE))


def test_a_second_report_leaves_only_its_own_overlays(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    model = build_model(ModelSpec(name="resnet18", width=4), in_channels=1, num_classes=len(CLASSES)).eval()
    monkeypatch.setattr(examples, "MAX_MISCLASSIFIED_OVERLAYS", 30)
    write_report(tiny_report(tmp_path, seed=0), model)
    monkeypatch.setattr(examples, "MAX_MISCLASSIFIED_OVERLAYS", 1)
    write_report(tiny_report(tmp_path, seed=1), model)
    listed = json.loads((tmp_path / "examples.json").read_text())["overlays"]
    assert sorted(int(p.stem) for p in (tmp_path / "examples").glob("*.png")) == listed


def test_overlay_indices_take_the_most_confident_mistakes_and_both_ends_of_the_correct() -> None:
    true = np.array([0, 0, 0, 0, 0, 0, 0, 0])
    pred = np.array([1, 1, 1, 0, 0, 0, 0, 0])
    confidence = np.array([0.5, 0.9, 0.7, 0.1, 0.99, 0.5, 0.3, 0.8])
    assert overlay_indices(true, pred, confidence, misclassified=2, correct_each_end=1).tolist() == [1, 2, 3, 4]
    assert overlay_indices(true, pred, confidence, misclassified=0, correct_each_end=9).tolist() == [3, 4, 5, 6, 7]


def test_examples_select_filters_sorts_and_round_trips(tmp_path: Path) -> None:
    table = Examples(
        classes=["a", "b", "c"],
        true=np.array([0, 1, 2, 0, 1, 2]),
        pred=np.array([0, 2, 2, 1, 2, 0]),
        confidence=np.array([0.9, 0.6, 0.8, 0.7, 0.95, 0.6]),
        true_probability=np.array([0.9, 0.1, 0.8, 0.2, 0.01, 0.3]),
        overlays=np.array([1, 4]),
    )
    assert table.select(kind="misclassified", sort="-confidence").tolist() == [4, 3, 1, 5]  # ties: index order
    assert table.select(kind="misclassified", sort="confidence").tolist() == [1, 5, 3, 4]
    assert table.select(kind="correct", sort="index").tolist() == [0, 2]
    assert table.select(kind="all", true_class=1, pred_class=2, sort="index").tolist() == [1, 4]
    assert table.confusion().tolist() == [[1, 1, 0], [0, 0, 2], [1, 0, 1]]
    assert table.has_overlay(4) and not table.has_overlay(0) and not table.has_overlay(99)
    loaded = load_examples(save_examples(table, tmp_path / "examples.json"))
    assert (
        loaded.select(kind="all", sort="-confidence").tolist() == table.select(kind="all", sort="-confidence").tolist()
    )
    assert loaded.classes == table.classes and loaded.overlays.tolist() == [1, 4]
    with pytest.raises(ValueError, match="format"):
        Examples.from_json(table.to_json() | {"format": 99})
    with pytest.raises(ValueError, match="class index"):
        Examples.from_json(table.to_json() | {"pred": [0, 1, 2, 3, 0, 0]})


def test_a_training_run_writes_examples_of_its_best_model(small_fmnist_dir: Path, tmp_path: Path) -> None:
    spec = TrainSpec.model_validate(
        {
            "dataset": {"name": "fashion_mnist", "train_subset": 200, "test_subset": 60},
            "model": {"name": "resnet18", "width": 4},
            "epochs": 1,
            "batch_size": 32,
            "optimizer": {"lr": 0.05},
            "scheduler": {"name": "none"},
            "compile": "off",
        }
    )
    result = train(spec, data_dir=small_fmnist_dir, out_dir=tmp_path, device="cpu")
    table = load_examples(tmp_path / "examples.json")
    assert len(table.true) == 60 and table.correct.mean() == pytest.approx(result.metrics["best"]["test_acc"])
    assert np.all((table.confidence >= 1 / len(CLASSES) - 1e-4) & (table.confidence <= 1))
    assert np.all(table.true_probability[table.correct] == table.confidence[table.correct])
    assert np.all(table.true_probability[~table.correct] <= table.confidence[~table.correct])
    assert all((tmp_path / "examples" / f"{i}.png").is_file() for i in table.overlays)
    assert tmp_path / "examples.json" in result.artifacts
