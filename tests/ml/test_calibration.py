"""Calibration: the ECE and its bins against torchmetrics' own metric on the same probabilities, the
temperature fit against a known T, the temperature applied only when a validation split fitted it, the
manifest that carries it, and a tiny real run that leaves all of it."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from torchmetrics.classification import MulticlassCalibrationError

from ml.calibration import N_BINS, applied_temperature, calibration, fit_temperature, reliability, softmax
from ml.checkpoints import CheckpointError, load_manifest, load_model, save_checkpoint, update_manifest
from ml.models import build_model
from ml.specs import ModelSpec, TrainSpec
from ml.trainer import train


def synthetic(n: int, k: int, *, temperature: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Logits whose labels are drawn from softmax(logits / temperature): `temperature` calibrates them."""
    rng = np.random.default_rng(seed)
    base = rng.normal(0, 2.0, size=(n, k))
    probabilities = softmax(base)
    labels = np.array([rng.choice(k, p=p) for p in probabilities])
    return (base * temperature).astype(np.float32), labels


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_ece_equals_torchmetrics_and_the_bins_add_up_to_it(seed: int) -> None:
    logits, labels = synthetic(2000, 7, temperature=2.0, seed=seed)
    probabilities = softmax(logits)
    measured = reliability(probabilities, labels, set_name="test")
    metric = MulticlassCalibrationError(num_classes=7, n_bins=15, norm="l1")
    expected = float(metric(torch.as_tensor(probabilities, dtype=torch.float32), torch.as_tensor(labels)))
    assert measured["ece"] == pytest.approx(expected, abs=1e-6) and measured["set"] == "test"
    bins = measured["bins"]
    assert len(bins) == N_BINS and sum(b["count"] for b in bins) == 2000
    assert bins[0]["lower"] == 0 and bins[-1]["upper"] == 1
    gap = sum(b["count"] / 2000 * abs(b["accuracy"] - b["confidence"]) for b in bins if b["count"])
    assert gap == pytest.approx(expected, abs=1e-4)  # the bins are torchmetrics' bins
    for b in bins:
        assert (b["confidence"] is None) == (b["count"] == 0)
        if b["count"]:
            assert b["lower"] <= b["confidence"] <= b["upper"] and 0 <= b["accuracy"] <= 1


@pytest.mark.parametrize("true_temperature", [0.5, 1.0, 2.5])
def test_the_temperature_fit_recovers_a_known_temperature(true_temperature: float) -> None:
    logits, labels = synthetic(20000, 5, temperature=true_temperature, seed=3)
    assert fit_temperature(logits, labels) == pytest.approx(true_temperature, rel=0.05)


def test_the_temperature_is_applied_only_when_a_validation_split_fitted_it() -> None:
    test_logits, test_labels = synthetic(3000, 5, temperature=2.0, seed=4)
    val_logits, val_labels = synthetic(3000, 5, temperature=3.0, seed=5)  # another T: which set fitted shows
    without = calibration(test_logits, test_labels)
    assert without["temperature"]["applied"] is False and without["temperature"]["fitted_on"] == "test"
    assert without["temperature"]["value"] == pytest.approx(2.0, rel=0.07) and without["validation"] is None
    held = calibration(test_logits, test_labels, (val_logits, val_labels))
    assert held["temperature"] | {"value": 0} == {"value": 0, "applied": True, "fitted_on": "validation"}
    assert held["temperature"]["value"] == pytest.approx(3.0, rel=0.07)
    assert held["validation"]["set"] == "validation" and held["set"] == "test"
    # overconfident logits: dividing by the fitted T lowers the ECE on the test set
    assert without["calibrated"]["ece"] < without["ece"] / 2


def manifest_folder(tmp_path: Path, **extra) -> Path:
    model = build_model(ModelSpec(name="resnet18", width=4), in_channels=1, num_classes=2)
    manifest = {
        "model": {"name": "resnet18", "width": 4},
        "in_channels": 1,
        "num_classes": 2,
        "image_size": 28,
        "classes": ["a", "b"],
        "mean": [0.5],
        "std": [0.25],
    }
    return save_checkpoint(tmp_path / "ckpt", model=model, manifest=manifest | extra)


def test_the_manifest_carries_the_temperature_and_old_ones_still_load(tmp_path: Path) -> None:
    folder = manifest_folder(tmp_path)
    assert "temperature" not in load_manifest(folder)
    assert applied_temperature(load_manifest(folder))[0] is None  # an old checkpoint: none, and why
    fitted = {"value": 1.7, "applied": True, "fitted_on": "validation"}
    update_manifest(folder, temperature=fitted)
    assert load_manifest(folder)["temperature"] == fitted and applied_temperature(load_manifest(folder)) == (1.7, "")
    load_model(folder)  # the weights' hash still holds
    unapplied = fitted | {"applied": False, "fitted_on": "test"}
    update_manifest(folder, temperature=unapplied)
    value, why = applied_temperature(load_manifest(folder))
    assert value is None and "no validation split" in why
    for bad in ({"value": -1.0, "applied": True, "fitted_on": "test"}, {"value": 1.0}, 2.0):
        with pytest.raises(CheckpointError, match="temperature must be"):
            update_manifest(folder, temperature=bad)
    assert load_manifest(folder)["temperature"] == unapplied  # a refused update leaves the file as it was


@pytest.mark.parametrize("split", [0.2, None])
def test_a_finished_run_reports_calibration_and_stores_the_temperature(
    small_fmnist_dir: Path, tmp_path: Path, split: float | None
) -> None:
    spec = TrainSpec.model_validate(
        {
            "dataset": {"name": "fashion_mnist", "train_subset": 200, "test_subset": 60},
            "model": {"name": "custom_resnet", "width": 2},
            "epochs": 1,
            "batch_size": 32,
            "augmentation": "none",
            "optimizer": {"lr": 0.05},
            "scheduler": {"name": "none"},
            "gradcam_misclassified": 0,
            "validation_split": split,
            "test_time_flip": True,
        }
    )
    result = train(spec, data_dir=small_fmnist_dir, out_dir=tmp_path, device="cpu", num_workers=0)
    measured = result.metrics["calibration"]
    on_disk = json.loads((tmp_path / "metrics.json").read_text())["calibration"]
    assert on_disk == measured and sum(b["count"] for b in measured["bins"]) == 60
    assert (measured["validation"] is not None) == (split is not None)
    assert measured["temperature"]["applied"] == (split is not None)
    assert load_manifest(tmp_path / "checkpoints" / "best")["temperature"] == measured["temperature"]
    assert {p.name for p in result.artifacts} >= {"reliability.png", "label_issues.json"}
    issues = json.loads((tmp_path / "label_issues.json").read_text())
    assert issues["set"] == ("validation" if split else "test") and issues["scored"] == (40 if split else 60)
