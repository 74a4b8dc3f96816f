"""The probe set a training run explains every epoch: chosen by seed or by index, its maps recorded
per epoch as the final model's GradCAM, the attention drift between epochs, the same drift after a
resume, and the faithfulness score, each against the library that defines it."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from pydantic import ValidationError
from pytorch_grad_cam.metrics.road import ROADCombined
from pytorch_grad_cam.utils.model_targets import ClassifierOutputSoftmaxTarget
from torch import nn

from ml.checkpoints import load_model
from ml.data import load_dataset
from ml.gradcam import explain
from ml.normalization import Normalization
from ml.probe_files import recorded_epochs
from ml.probes import FAITHFULNESS_PERCENTILES, PROBES_PER_CLASS, attention_drift, choose_probes, small_maps
from ml.specs import TrainSpec
from ml.trainer import train

SPEC = {
    "dataset": {"name": "fashion_mnist", "train_subset": 256, "test_subset": 64},
    "model": {"name": "resnet18", "width": 2},
    "epochs": 3,
    "batch_size": 64,
    "augmentation": "none",
    "optimizer": {"lr": 0.05},
    "scheduler": {"name": "one_cycle", "max_lr": 0.1},
    "gradcam_misclassified": 0,
    "compile": "off",
}


class Killed(RuntimeError):
    pass


class KillAfter:
    def __init__(self, epoch: int | None) -> None:
        self.epoch = epoch

    def on_progress(self, progress):
        pass

    def on_epoch(self, record):
        if record["epoch"] == self.epoch:
            raise Killed(f"killed after epoch {self.epoch}")

    def should_stop(self):
        return False


@pytest.fixture(scope="module", params=[False, True], ids=["plain", "test_time_flip"])
def run(request, small_fmnist_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[TrainSpec, Path, dict]:
    spec = TrainSpec.model_validate(SPEC | {"test_time_flip": request.param})
    out = tmp_path_factory.mktemp("probes")
    result = train(spec, data_dir=small_fmnist_dir, out_dir=out, device="cpu")
    return spec, out, result.metrics


def test_probes_are_two_test_images_a_class_drawn_from_the_seed() -> None:
    labels = np.random.default_rng(5).permutation(np.arange(200) % 10)
    chosen = choose_probes(labels, seed=3)
    assert len(chosen) == 10 * PROBES_PER_CLASS and len(set(chosen.tolist())) == len(chosen)
    assert np.bincount(labels[chosen], minlength=10).tolist() == [PROBES_PER_CLASS] * 10
    assert labels[chosen].tolist() == sorted(labels[chosen].tolist())  # ordered by class
    assert np.array_equal(choose_probes(labels, seed=3), chosen)
    assert not np.array_equal(choose_probes(labels, seed=4), chosen)
    many = np.arange(100) % 50  # 50 classes: one each, at most 32
    assert len(choose_probes(many, seed=0)) == 32


def test_probes_named_by_index_are_kept_and_checked() -> None:
    labels = np.arange(64) % 10
    assert choose_probes(labels, seed=0, indices=[7, 3, 60]).tolist() == [7, 3, 60]
    with pytest.raises(ValueError, match=r"probe_indices \[64\] are not test images.*has 64"):
        choose_probes(labels, seed=0, indices=[1, 64])


@pytest.mark.parametrize(
    ("indices", "message"),
    [
        (list(range(33)), "at most 32"),
        ([1, 2, 1], r"each test image once; \[1\] repeat"),
        ([-1], "greater than or equal to 0"),
        ([63, 64], r"below dataset.test_subset \(64\)"),
    ],
)
def test_the_spec_refuses_bad_probe_indices(indices: list[int], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        TrainSpec.model_validate(SPEC | {"probe_indices": indices})
    assert TrainSpec.model_validate(SPEC | {"probe_indices": [0, 63]}).probe_indices == [0, 63]


def test_every_epoch_records_the_probes_maps_as_the_models_gradcam(run, small_fmnist_dir: Path) -> None:
    spec, out, metrics = run
    folder = out / "probes"
    assert recorded_epochs(folder) == [1, 2, 3]
    saved = np.load(folder / "set.npz")
    test = load_dataset(spec.dataset, small_fmnist_dir).test
    assert np.array_equal(saved["indices"], choose_probes(test.labels, seed=spec.seed))
    assert np.array_equal(saved["images"], test.images[saved["indices"]])
    assert saved["classes"].tolist() == list(load_dataset(spec.dataset, small_fmnist_dir).classes)
    model, manifest = load_model(out / "checkpoints" / "last")  # epoch 3's model
    x = Normalization.of(manifest["mean"], manifest["std"]).normalize(torch.from_numpy(saved["images"]))
    logits, maps, predicted = explain(model, x, method="gradcam", flip=spec.test_time_flip)
    last = np.load(folder / "epoch_3.npz")
    assert last["maps"].dtype == np.uint8 and last["maps"].shape == (20, 28, 28)
    assert np.abs(last["maps"].astype(int) - small_maps(maps).astype(int)).max() <= 1  # float rounding only
    assert last["predicted"].tolist() == predicted
    probabilities = logits.softmax(1).numpy()
    assert np.allclose(last["confidence"], probabilities[np.arange(20), predicted], atol=1e-5)
    assert np.allclose(last["true_probability"], probabilities[np.arange(20), saved["labels"]], atol=1e-5)


def test_the_drift_is_numpys_mean_correlation_of_the_stored_maps(run) -> None:
    _, out, metrics = run
    drifts = [record["attention_drift"] for record in metrics["epochs"]]
    assert drifts[0] is None
    for epoch in (2, 3):
        before, after = (np.load(out / "probes" / f"epoch_{e}.npz")["maps"] for e in (epoch - 1, epoch))
        with np.errstate(invalid="ignore", divide="ignore"):
            each = [np.corrcoef(a.ravel(), b.ravel())[0, 1] for a, b in zip(before, after)]
        assert drifts[epoch - 1] == pytest.approx(float(np.nanmean(each)), abs=1e-6)
    assert json.loads((out / "metrics.json").read_text())["epochs"] == metrics["epochs"]


def test_the_drift_skips_constant_maps_and_needs_a_previous_epoch() -> None:
    maps = np.random.default_rng(0).integers(0, 256, size=(3, 4, 4), dtype=np.uint8)
    assert attention_drift(None, maps) is None
    assert attention_drift(maps, maps) == pytest.approx(1.0)
    flat = maps.copy()
    flat[1] = 0  # an all-zero map has no correlation: the mean of the other two
    assert attention_drift(maps, flat) == pytest.approx(1.0)
    assert attention_drift(np.zeros_like(maps), maps) is None


def test_the_faithfulness_is_pytorch_grad_cams_road_on_the_probes(run) -> None:
    spec, out, metrics = run
    score = metrics["faithfulness"]
    assert score["measure"] == "ROADCombined" and score["probes"] == 20
    assert json.loads((out / "metrics.json").read_text())["faithfulness"] == score
    model, manifest = load_model(out / "checkpoints" / "best")
    model.eval()
    images = np.load(out / "probes" / "set.npz")["images"]
    x = Normalization.of(manifest["mean"], manifest["std"]).normalize(torch.from_numpy(images))
    scored = Mirrored(model) if spec.test_time_flip else model
    for method in ("gradcam", "gradcam++"):
        _, maps, predicted = explain(model, x, method=method, flip=spec.test_time_flip)
        torch.manual_seed(spec.seed)
        road = ROADCombined(percentiles=list(FAITHFULNESS_PERCENTILES))
        direct = road(x, maps, [ClassifierOutputSoftmaxTarget(c) for c in predicted], scored)
        assert score[method] == pytest.approx(float(np.mean(direct)), abs=1e-6)


class Mirrored(nn.Module):
    """The test-time-flip model written out here: the mean of the logits of the images and their mirrors."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (self.model(x) + self.model(torch.flip(x, dims=[3]))) / 2


def test_a_resumed_run_records_the_same_maps_and_drift(small_fmnist_dir: Path, tmp_path: Path) -> None:
    spec = TrainSpec.model_validate(SPEC | {"probe_indices": [5, 0, 42, 17]})
    whole = train(spec, data_dir=small_fmnist_dir, out_dir=tmp_path / "whole", device="cpu")
    out = tmp_path / "killed"
    with pytest.raises(Killed):
        train(spec, data_dir=small_fmnist_dir, out_dir=out, callbacks=KillAfter(2), device="cpu")
    (out / "probes" / "epoch_4.npz").write_bytes((out / "probes" / "epoch_2.npz").read_bytes())  # a stale later one
    resumed = train(spec, data_dir=small_fmnist_dir, out_dir=out, callbacks=KillAfter(None), device="cpu", resume=True)
    assert [r["attention_drift"] for r in resumed.metrics["epochs"]] == [
        r["attention_drift"] for r in whole.metrics["epochs"]
    ]
    assert resumed.metrics["epochs"][2]["attention_drift"] is not None
    assert np.load(out / "probes" / "set.npz")["indices"].tolist() == [5, 0, 42, 17]
    assert recorded_epochs(out / "probes") == [1, 2, 3]
    for epoch in (1, 2, 3):
        ours, theirs = (np.load(o / "probes" / f"epoch_{epoch}.npz") for o in (out, tmp_path / "whole"))
        assert np.array_equal(ours["maps"], theirs["maps"]) and ours["maps"].shape == (4, 28, 28)
    assert resumed.metrics["faithfulness"] == whole.metrics["faithfulness"]
