"""The label audit: stratified folds that cover the training set once; every image scored by the fold
model that never saw it; the issues are cleanlab's on those out-of-fold probabilities and find labels
planted wrong; a redelivery keeps the finished folds; a cancel stops it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from cleanlab.filter import find_label_issues
from conftest import class_images
from datasets import write_idx

from ml.audit import FOLDS_FOLDER, MODEL_FOLDER, SCORES_FILE, audit, fold_indices, weak_models_warning
from ml.calibration import softmax
from ml.checkpoints import load_model
from ml.normalization import Normalization
from ml.progress import NullCallbacks
from ml.specs import AuditSpec

PLANTED = 12  # training images given a wrong label on purpose


@pytest.fixture(scope="module")
def planted_dir(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, np.ndarray]:
    """Fashion-MNIST-format files of 600 learnable training images (conftest.class_images), PLANTED of
    them relabelled to the next class; the planted indices."""
    data_dir = tmp_path_factory.mktemp("planted")
    raw = data_dir / "FashionMNIST" / "raw"
    raw.mkdir(parents=True)
    images, labels = class_images(600, size=28, seed=0)
    planted = np.random.default_rng(7).choice(len(labels), size=PLANTED, replace=False)
    labels[planted] = (labels[planted] + 1) % 10
    test_images, test_labels = class_images(100, size=28, seed=1)
    write_idx(raw / "train-images-idx3-ubyte.gz", images[..., 0])
    write_idx(raw / "train-labels-idx1-ubyte.gz", labels)
    write_idx(raw / "t10k-images-idx3-ubyte.gz", test_images[..., 0])
    write_idx(raw / "t10k-labels-idx1-ubyte.gz", test_labels)
    return data_dir, np.sort(planted)


def spec(**overrides: Any) -> AuditSpec:
    body = {
        "dataset": {"name": "fashion_mnist"},
        "model": {"name": "custom_resnet", "width": 4},
        "epochs": 3,
        "batch_size": 64,
        "optimizer": {"lr": 0.05},
        "scheduler": {"name": "none"},
        "augmentation": "none",
        "folds": 3,
        "compile": "off",
    }
    return AuditSpec.model_validate(body | overrides)


def test_folds_cover_every_image_once_stratified_by_class() -> None:
    labels = np.repeat(np.arange(4), [40, 20, 12, 8])
    held = fold_indices(labels, 4, seed=3)
    assert sorted(np.concatenate(held).tolist()) == list(range(len(labels)))
    for fold in held:
        assert np.bincount(labels[fold], minlength=4).tolist() == [10, 5, 3, 2]
    assert [f.tolist() for f in fold_indices(labels, 4, seed=3)] == [f.tolist() for f in held]  # from the seed
    with pytest.raises(ValueError, match="class 3 has 8 training images, fewer than the 10 folds"):
        fold_indices(labels, 10, seed=0)


def test_an_audit_that_flags_too_many_images_says_its_models_are_weak() -> None:
    assert weak_models_warning(30, 1000, 0.91) == []
    (warning,) = weak_models_warning(3987, 12000, 0.479)
    assert warning.startswith("3987 of 12000 training images (33%) are flagged") and "train each fold longer" in warning


def test_the_spec_holds_out_its_folds_only() -> None:
    for field, value in (("validation_split", 0.1), ("target_accuracy", 0.9)):
        with pytest.raises(ValueError, match=f"{field} must be null in an audit"):
            spec(**{field: value})
    for folds in (1, 11):
        with pytest.raises(ValueError, match="folds"):
            spec(folds=folds)
    fold_spec = spec(probe_indices=[1, 2]).fold_spec()
    assert "folds" not in fold_spec.model_dump() and fold_spec.gradcam_misclassified == 0


class Cancelling(NullCallbacks):
    """Asks to stop once the second fold reports."""

    def __init__(self) -> None:
        self.folds: list[int] = []

    def on_progress(self, progress: dict[str, Any]) -> None:
        if "fold" in progress:
            self.folds.append(progress["fold"])
            assert progress["phase"].startswith(f"fold {progress['fold']} of 3")

    def should_stop(self) -> bool:
        return 2 in self.folds


@pytest.mark.slow
def test_an_audit_scores_every_image_out_of_fold_and_finds_the_planted_labels(
    planted_dir: tuple[Path, np.ndarray], tmp_path: Path
) -> None:
    data_dir, planted = planted_dir
    result = audit(spec(), data_dir=data_dir, out_dir=tmp_path, device="cpu", num_workers=0)
    assert result.stop_reason == "completed" and result.metrics["scored"] == result.metrics["images"] == 600
    assert [f["fold"] for f in result.metrics["folds"]] == [1, 2, 3]

    # each fold's scores are its own model's logits for exactly its held-out images
    logits = np.zeros((600, 10), dtype=np.float32)
    seen = []
    labels = None
    for fold in range(1, 4):
        saved = np.load(tmp_path / FOLDS_FOLDER / str(fold) / SCORES_FILE)
        model, manifest = load_model(tmp_path / FOLDS_FOLDER / str(fold) / MODEL_FOLDER)
        images, labels = class_images(600, size=28, seed=0)
        x = Normalization.of(manifest["mean"], manifest["std"]).normalize(torch.from_numpy(images[saved["held"]]))
        with torch.no_grad():
            np.testing.assert_allclose(model.eval()(x).numpy(), saved["logits"], rtol=1e-4, atol=1e-4)
        logits[saved["held"]] = saved["logits"]
        seen.append(saved["held"])
    assert sorted(np.concatenate(seen).tolist()) == list(range(600))

    # the issues are cleanlab's on the out-of-fold probabilities, with the planted labels among them
    issues = json.loads((tmp_path / "label_issues.json").read_text())
    given = np.array(labels)
    given[planted] = (given[planted] + 1) % 10
    expected = np.flatnonzero(find_label_issues(given, softmax(logits), n_jobs=1))
    assert issues["set"] == "train" and sorted(i["index"] for i in issues["issues"]) == expected.tolist()
    found = {i["index"] for i in issues["issues"]}
    assert len(found & set(planted.tolist())) >= PLANTED - 2, (sorted(found), planted)
    top = [i["index"] for i in issues["issues"][:PLANTED]]
    assert len(set(top) & set(planted.tolist())) >= PLANTED // 2  # ranked first
    assert result.metrics["label_issues"] == len(issues["issues"])
    overlays = tmp_path / "label_issues" / f"{issues['issues'][0]['index']}_given.png"
    assert overlays.is_file()


@pytest.mark.slow
def test_a_redelivered_audit_keeps_its_finished_folds_and_a_cancel_stops_it(
    planted_dir: tuple[Path, np.ndarray], tmp_path: Path
) -> None:
    data_dir, _ = planted_dir
    small = spec(epochs=1, dataset={"name": "fashion_mnist", "train_subset": 300})
    callbacks = Cancelling()
    stopped = audit(small, data_dir=data_dir, out_dir=tmp_path, device="cpu", callbacks=callbacks, num_workers=0)
    assert stopped.stop_reason == "cancelled" and len(stopped.metrics["folds"]) == 1
    assert not (tmp_path / "label_issues.json").exists()

    resumed = audit(small, data_dir=data_dir, out_dir=tmp_path, device="cpu", num_workers=0)
    assert resumed.stop_reason == "completed"
    assert [f.get("resumed", False) for f in resumed.metrics["folds"]] == [True, False, False]
    assert (tmp_path / "label_issues.json").is_file()
