"""validation_split: a stratified part of the training set held out; selection, ReduceLROnPlateau and
target_accuracy read it, the test set only measures the chosen model."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from ml.checkpoints import load_manifest
from ml.data import ImageSet, hold_out
from ml.specs import TrainSpec
from ml.trainer import Trainer, train


def spec(**overrides) -> TrainSpec:
    base = {
        "dataset": {"name": "fashion_mnist", "train_subset": 200, "test_subset": 50},
        "model": {"name": "custom_resnet", "width": 2},
        "epochs": 3,
        "batch_size": 32,
        "augmentation": "none",
        "optimizer": {"lr": 0.05},
        "scheduler": {"name": "none"},
        "gradcam_misclassified": 0,
        "validation_split": 0.2,
    }
    return TrainSpec.model_validate(base | overrides)


def test_hold_out_is_stratified_disjoint_and_seeded():
    labels = np.repeat(np.arange(4), [40, 30, 20, 10])
    images = ImageSet(np.arange(100, dtype=np.uint8).reshape(100, 1, 1, 1), labels)
    rest, held = hold_out(images, 0.2, seed=3)
    assert np.bincount(held.labels).tolist() == [8, 6, 4, 2] and len(rest) == 80
    assert set(held.images.ravel()).isdisjoint(rest.images.ravel())
    assert np.array_equal(hold_out(images, 0.2, seed=3)[1].images, held.images)
    assert not np.array_equal(hold_out(images, 0.2, seed=4)[1].images, held.images)  # drawn, not the first ones


@pytest.fixture
def scripted(monkeypatch: pytest.MonkeyPatch):
    """Test accuracy rises 0.1, 0.2, 0.3 while validation accuracy falls 0.5, 0.4, 0.3."""
    evaluate = Trainer.evaluate

    def fake(self: Trainer, model=None, *, validation: bool = False):
        loss, _, predictions = evaluate(self, model, validation=validation)
        epoch = min(len(self.epochs), 2)
        return loss, ([0.5, 0.4, 0.3] if validation else [0.1, 0.2, 0.3])[epoch], predictions

    monkeypatch.setattr(Trainer, "evaluate", fake)


def test_selection_and_scheduling_read_the_validation_set(small_fmnist_dir: Path, tmp_path: Path, scripted) -> None:
    s = spec(scheduler={"name": "reduce_on_plateau", "patience": 0, "threshold": 0.0})
    metrics = train(s, data_dir=small_fmnist_dir, out_dir=tmp_path, device="cpu").metrics
    assert metrics["selected_on"] == "validation"
    assert metrics["best"] == {"epoch": 1, "val_acc": 0.5, "test_acc": 0.1}  # test alone would pick epoch 3
    assert metrics["last"] == {"epoch": 3, "val_acc": 0.3, "test_acc": 0.3}
    assert load_manifest(tmp_path / "checkpoints" / "best")["selected_on"] == "validation"
    assert [e["lr"] for e in metrics["epochs"]] == pytest.approx([0.05, 0.05, 0.005])  # falling val accuracy
    assert {"val_loss", "val_acc", "test_loss", "test_acc"} <= set(metrics["epochs"][0])


def test_target_accuracy_reads_the_validation_set(small_fmnist_dir: Path, tmp_path: Path, scripted) -> None:
    result = train(spec(target_accuracy=0.45), data_dir=small_fmnist_dir, out_dir=tmp_path, device="cpu")
    assert result.stop_reason == "target_accuracy" and len(result.metrics["epochs"]) == 1


def test_without_a_split_nothing_changes(small_fmnist_dir: Path, tmp_path: Path, scripted) -> None:
    metrics = train(spec(validation_split=None), data_dir=small_fmnist_dir, out_dir=tmp_path, device="cpu").metrics
    assert metrics["selected_on"] == "test" and metrics["best"] == {"epoch": 3, "test_acc": 0.3}
    assert metrics["last"] == metrics["best"] and metrics["test_time_flip"] is False
    assert "val_acc" not in metrics["epochs"][0]


def test_the_held_out_images_are_not_trained_on(small_fmnist_dir: Path, tmp_path: Path) -> None:
    result = train(spec(epochs=1), data_dir=small_fmnist_dir, out_dir=tmp_path, device="cpu")
    assert result.metrics["epochs"][0]["val_acc"] is not None
    steps = (200 - 40) // 32  # 40 of 200 held out: 5 batches of 32, not 6
    assert len(json.loads((tmp_path / "lr_steps.json").read_text())) == steps
