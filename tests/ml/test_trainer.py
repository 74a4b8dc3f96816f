"""The training loop on real Fashion-MNIST subsets with tiny models."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from ml.checkpoints import load_manifest
from ml.specs import TrainSpec
from ml.trainer import train

PNG_ARTIFACTS = [
    "samples.png",
    "accuracy.png",
    "loss.png",
    "lr.png",
    "confusion_matrix.png",
    "misclassified.png",
    "gradcam_misclassified.png",
    "gradcam_misclassified_true.png",
    "gradcam_correct.png",
    "reliability.png",
]


def spec(**overrides) -> TrainSpec:
    base = {
        "dataset": {"name": "fashion_mnist", "train_subset": 400, "test_subset": 100},
        "model": {"name": "resnet18", "width": 4},
        "epochs": 1,
        "batch_size": 64,
        "optimizer": {"lr": 0.05},
        "scheduler": {"name": "none"},
        "gradcam_misclassified": 4,
    }
    base.update(overrides)
    return TrainSpec.model_validate(base)


class StopAfter:
    """Callbacks whose stop flag turns on after `polls` polls."""

    def __init__(self, polls: int) -> None:
        self.polls, self.progress, self.epochs = polls, [], []

    def on_progress(self, progress):
        self.progress.append(progress)

    def on_epoch(self, record):
        self.epochs.append(record)

    def should_stop(self):
        self.polls -= 1
        return self.polls < 0


@pytest.mark.slow  # learns real Fashion-MNIST: minutes on 2 cores
def test_two_epochs_on_fashion_mnist_learn_well_above_chance(fmnist_data_dir: Path, tmp_path: Path) -> None:
    s = spec(
        dataset={"name": "fashion_mnist", "train_subset": 1000, "test_subset": 300},
        model={"name": "resnet18", "width": 8},
        epochs=2,
        batch_size=32,
        scheduler={"name": "one_cycle", "max_lr": 0.05},
        augmentation="none",
    )
    callbacks = StopAfter(10**9)
    result = train(s, data_dir=fmnist_data_dir, out_dir=tmp_path, callbacks=callbacks, device="cpu")

    assert result.stop_reason == "completed"
    epochs = result.metrics["epochs"]
    assert [e["epoch"] for e in epochs] == [1, 2] and callbacks.epochs == epochs
    assert epochs[-1]["test_acc"] > 0.6, epochs  # chance is 0.1; seeds 0-3 end at 0.71-0.75
    assert epochs[-1]["train_loss"] < epochs[0]["train_loss"]
    for record in epochs:
        assert set(record) == {
            "epoch",
            "lr",
            "train_loss",
            "train_acc",
            "test_loss",
            "test_acc",
            "seconds",
            "images_per_second",
            "attention_drift",
        }
        assert record["images_per_second"] > 0
    assert result.metrics["best"]["test_acc"] == max(e["test_acc"] for e in epochs)
    per_class = result.metrics["per_class_accuracy"]
    assert list(per_class) == [
        "T-shirt/top",
        "Trouser",
        "Pullover",
        "Dress",
        "Coat",
        "Sandal",
        "Shirt",
        "Sneaker",
        "Bag",
        "Ankle boot",
    ]
    assert all(0 <= v <= 1 for v in per_class.values())
    fractions = [p["fraction"] for p in callbacks.progress]
    assert fractions == sorted(fractions) and fractions[-1] == 1.0

    on_disk = json.loads((tmp_path / "metrics.json").read_text())
    assert on_disk["epochs"] == epochs and on_disk["per_class_accuracy"] == per_class
    for name in PNG_ARTIFACTS:
        with Image.open(tmp_path / name) as image:
            assert image.format == "PNG" and min(image.size) >= 200, name
    assert {p.name for p in result.artifacts} == set(PNG_ARTIFACTS) | {"examples.json", "label_issues.json"}
    assert json.loads((tmp_path / "examples.json").read_text())
    manifest = load_manifest(result.best_checkpoint)
    assert manifest["epoch"] == result.metrics["best"]["epoch"] and manifest["in_channels"] == 1
    assert manifest["classes"][9] == "Ankle boot" and manifest["spec"]["epochs"] == 2
    assert json.loads((tmp_path / "augmentation.json").read_text())["transform"]


def test_cancel_keeps_finished_epochs_and_best_checkpoint(small_fmnist_dir: Path, tmp_path: Path) -> None:
    polls_per_epoch = 400 // 64 // 10 + 2  # one poll at step 10 or the last step, one after the epoch
    callbacks = StopAfter(polls_per_epoch)
    result = train(spec(epochs=5), data_dir=small_fmnist_dir, out_dir=tmp_path, callbacks=callbacks, device="cpu")
    assert result.stop_reason == "cancelled"
    assert 1 <= len(result.metrics["epochs"]) < 5
    assert result.best_checkpoint is not None and (result.best_checkpoint / "model.safetensors").is_file()
    assert (tmp_path / "accuracy.png").is_file()


def test_cancel_before_any_epoch_leaves_no_checkpoint(small_fmnist_dir: Path, tmp_path: Path) -> None:
    result = train(
        spec(epochs=3, batch_size=16), data_dir=small_fmnist_dir, out_dir=tmp_path, callbacks=StopAfter(0), device="cpu"
    )
    assert result.stop_reason == "cancelled"
    assert result.metrics["epochs"] == [] and result.best_checkpoint is None


def test_target_accuracy_stops_early(small_fmnist_dir: Path, tmp_path: Path) -> None:
    # one correct test image in 100 is enough: the run stops after the epoch that reaches it
    result = train(spec(epochs=4, target_accuracy=0.01), data_dir=small_fmnist_dir, out_dir=tmp_path, device="cpu")
    assert result.stop_reason == "target_accuracy" and len(result.metrics["epochs"]) == 1


def test_same_seed_same_run(small_fmnist_dir: Path, tmp_path: Path) -> None:
    s = spec(dataset={"name": "fashion_mnist", "train_subset": 200, "test_subset": 50}, gradcam_misclassified=0)
    a = train(s, data_dir=small_fmnist_dir, out_dir=tmp_path / "a", device="cpu").metrics["epochs"][0]
    b = train(s, data_dir=small_fmnist_dir, out_dir=tmp_path / "b", device="cpu").metrics["epochs"][0]
    keys = ["train_loss", "train_acc", "test_loss", "test_acc"]
    assert [a[k] for k in keys] == [b[k] for k in keys]


def test_diverging_loss_is_a_clear_error(small_fmnist_dir: Path, tmp_path: Path, monkeypatch) -> None:
    class ExplodingLoss(torch.nn.CrossEntropyLoss):  # what a far too high LR does, without the wait
        def forward(self, logits, target):
            return super().forward(logits, target) * float("inf")

    monkeypatch.setattr("ml.trainer.nn.CrossEntropyLoss", ExplodingLoss)
    with pytest.raises(FloatingPointError, match="diverged.*epoch 1.*lower the learning rate"):
        train(spec(), data_dir=small_fmnist_dir, out_dir=tmp_path, device="cpu")


@pytest.mark.parametrize(
    "scheduler, check",
    [
        ({"name": "one_cycle", "max_lr": 0.2, "peak_epoch": 1}, lambda lrs: np.argmax(lrs) in range(5, 7)),
        ({"name": "cyclic", "base_lr": 0.001, "max_lr": 0.1, "step_size_up": 3}, lambda lrs: max(lrs) > 10 * min(lrs)),
        ({"name": "none"}, lambda lrs: set(lrs) == {0.05}),
    ],
)
def test_schedulers_shape_the_lr(small_fmnist_dir: Path, tmp_path: Path, scheduler, check) -> None:
    s = spec(epochs=2, scheduler=scheduler, gradcam_misclassified=0)
    result = train(s, data_dir=small_fmnist_dir, out_dir=tmp_path, device="cpu")
    step_lrs = json.loads((tmp_path / "lr_steps.json").read_text())
    assert len(step_lrs) == 2 * (400 // 64)
    assert check(step_lrs), step_lrs
    assert [e["lr"] for e in result.metrics["epochs"]] == [step_lrs[0], step_lrs[400 // 64]]


def test_reduce_on_plateau_steps_on_test_accuracy(small_fmnist_dir: Path, tmp_path: Path) -> None:
    # threshold 1.0 (abs): no epoch after the first can count as better, so with patience 0 the
    # LR drops 10x after epoch 2
    s = spec(
        dataset={"name": "fashion_mnist", "train_subset": 200, "test_subset": 50},
        epochs=3,
        scheduler={"name": "reduce_on_plateau", "patience": 0, "threshold": 1.0},
        gradcam_misclassified=0,
    )
    epochs = train(s, data_dir=small_fmnist_dir, out_dir=tmp_path, device="cpu").metrics["epochs"]
    assert [e["lr"] for e in epochs] == pytest.approx([0.05, 0.05, 0.005])


def test_auto_lr_must_be_resolved_first(small_fmnist_dir: Path, tmp_path: Path) -> None:
    s = spec(optimizer={"lr": "auto", "lr_finder_job": "x"})
    with pytest.raises(ValueError, match="with_lr"):
        train(s, data_dir=small_fmnist_dir, out_dir=tmp_path, device="cpu")
    assert s.with_lr(0.01).optimizer.lr == 0.01


def test_odd_batch_sizes_train_and_evaluate(small_fmnist_dir: Path, tmp_path: Path) -> None:
    # torch 2.14.1 on CPU corrupts memory with channels_last at odd batch sizes: a crash here is that
    s = spec(
        dataset={"name": "fashion_mnist", "train_subset": 100, "test_subset": 77},
        batch_size=25,
        gradcam_misclassified=3,
    )
    result = train(s, data_dir=small_fmnist_dir, out_dir=tmp_path, device="cpu")
    assert len(result.metrics["epochs"]) == 1


def test_test_time_flip_is_what_evaluation_reports_and_what_the_checkpoint_predicts(
    small_fmnist_dir: Path, tmp_path: Path
) -> None:
    from ml.data import load_dataset
    from ml.predictor import Predictor, Query

    runs = {}
    for flip in (False, True):  # the same seed: the same weights, evaluated two ways
        s = spec(dataset={"name": "fashion_mnist", "train_subset": 400, "test_subset": 200}, test_time_flip=flip)
        result = train(s, data_dir=small_fmnist_dir, out_dir=tmp_path / str(flip), device="cpu")
        predictor = Predictor(tmp_path / str(flip) / "checkpoints" / "best")
        assert predictor.test_time_flip is flip
        test = load_dataset(s.dataset, small_fmnist_dir).test
        answers = predictor.predict_many([Query(test.images, topk=1)])[0]
        predicted = np.array([a["class_index"] for a in answers])
        runs[flip] = (result.metrics["epochs"][-1]["test_acc"], float((predicted == test.labels).mean()), predicted)
    for reported, predicted_accuracy, _ in runs.values():
        assert predicted_accuracy == pytest.approx(reported, abs=0.011)  # a near-tie may fall either way
    assert (runs[True][2] != runs[False][2]).any(), "the mirror images changed some predictions"


def test_progress_says_the_phase_and_the_train_loss_within_epochs(fmnist_data_dir: Path, tmp_path: Path) -> None:
    callbacks = StopAfter(10**9)
    train(spec(epochs=2, gradcam_misclassified=0), data_dir=fmnist_data_dir, out_dir=tmp_path, callbacks=callbacks)
    phases = [p.get("phase") for p in callbacks.progress]
    assert phases[0] == "loading data" and phases[-1] == "writing the report"
    assert {"training", "evaluating"} <= set(phases) and "compiling" not in phases  # 14 steps: eager
    losses = [p["loss"] for p in callbacks.progress if p.get("phase") == "training"]
    # 400 images in full batches of 64: 6 steps an epoch, one report at its end
    assert len(losses) == 2 and all(math.isfinite(value) and value > 0 for value in losses)
    steps = json.loads((tmp_path / "loss_steps.json").read_text())
    assert steps == {"every": 10, "steps": [[6, losses[0]], [12, losses[1]]]}


def test_a_compiled_run_says_it_compiles_before_its_first_step(
    fmnist_data_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import ml.trainer

    monkeypatch.setattr(ml.trainer, "compile_model", lambda model, mode: model)  # the phase, not the compiler
    callbacks = StopAfter(10**9)
    train(
        spec(compile="default", gradcam_misclassified=0),
        data_dir=fmnist_data_dir,
        out_dir=tmp_path,
        callbacks=callbacks,
    )
    phases = [p.get("phase") for p in callbacks.progress]
    assert phases.index("compiling") == phases.index("training") - 1 and phases.count("compiling") == 1
