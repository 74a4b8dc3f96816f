"""ml.transforms and ml.normalization: a run's augmentation and normalization, built once and shared."""

from __future__ import annotations

from pathlib import Path

import albumentations as A
import numpy as np
import pytest
import torch

from ml import augment, batch_augment, lr_finder, trainer
from ml.cutout import Cutout
from ml.normalization import Normalization
from ml.run import set_up
from ml.specs import LRFinderSpec, TrainSpec
from ml.transforms import RunTransforms

RGB = {"mean": (0.49, 0.48, 0.45), "std": (0.25, 0.24, 0.26)}
GRAY = {"mean": (0.29,), "std": (0.35,)}
SHIFT_SCALE_ROTATE = {"name": "ShiftScaleRotate", "shift_limit": 0.0625, "scale_limit": 0.1, "rotate_limit": 15}


@pytest.mark.parametrize("stats", [RGB, GRAY])
def test_normalize_and_denormalize_round_trip(stats) -> None:
    normalization = Normalization.of(**stats)
    images = np.random.default_rng(0).integers(0, 256, size=(5, 8, 8, len(stats["mean"])), dtype=np.uint8)
    x = normalization.normalize(torch.from_numpy(images))
    assert x.shape == (5, len(stats["mean"]), 8, 8) and x.dtype == torch.float32
    assert x.stride() == torch.empty(x.shape).stride(), "standard NCHW strides (ml.runtime.memory_format)"
    expected = (images / 255.0 - np.array(stats["mean"])) / np.array(stats["std"])
    np.testing.assert_allclose(x.permute(0, 2, 3, 1).numpy(), expected, atol=1e-5)
    np.testing.assert_array_equal(normalization.denormalize(x), images)
    albumentations = A.Compose([normalization.transform()])(image=images[0])["image"]
    np.testing.assert_allclose(albumentations, x[0].permute(1, 2, 0).numpy(), atol=1e-5)


def test_the_cutout_fill_normalizes_to_zero() -> None:
    normalization = Normalization.of(**RGB)
    assert normalization.cutout_fill == (125, 122, 115)
    hole = torch.tensor(normalization.cutout_fill, dtype=torch.uint8).view(1, 1, 1, 3)
    assert normalization.normalize(hole).abs().max() < 0.01  # within half a grey level of the mean
    cutout = augment.default_transforms(image_size=32, normalization=normalization)[3]
    assert isinstance(cutout, Cutout) and tuple(cutout.fill) == (125.0, 122.0, 115.0)


@pytest.mark.parametrize(
    ("augmentation", "covered"),
    [
        ("default", True),
        ("none", True),
        ([{"name": "HorizontalFlip", "p": 0.3}], True),
        ([{"name": "VerticalFlip"}], False),
        ([SHIFT_SCALE_ROTATE], False),
    ],
)
def test_the_batched_equivalent_is_there_when_covered(augmentation, covered) -> None:
    transforms = RunTransforms.build(augmentation, image_size=32, **RGB)
    assert (transforms.batched is not None) == covered
    assert transforms.pipeline is (transforms.batched.compose if covered else transforms.train)
    assert RunTransforms.build(augmentation, image_size=32, **RGB, batched=False).batched is None
    assert transforms.describe() == augment.describe(transforms.pipeline)
    assert [type(t).__name__ for t in transforms.eval] == ["Normalize"]


def test_a_users_normalize_is_the_runs_normalization_everywhere() -> None:
    own = {"name": "Normalize", "mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25]}
    transforms = RunTransforms.build([{"name": "VerticalFlip"}, own], image_size=32, **RGB)
    assert (transforms.mean, transforms.std) == ((0.5,) * 3, (0.25,) * 3)
    assert transforms.eval.transforms[0].mean == (0.5,) * 3
    image = np.full((1, 4, 4, 3), 128, dtype=np.uint8)
    assert transforms.normalize(torch.from_numpy(image)).flatten()[0] == pytest.approx(
        (128 / 255 - 0.5) / 0.25, abs=1e-6
    )


def test_a_normalize_of_the_wrong_channel_count_is_refused() -> None:
    with pytest.raises(ValueError, match=r"augmentation\[0\] Normalize: mean and std need 1 or 1 values"):
        RunTransforms.build([{"name": "Normalize", "mean": [0.5] * 3, "std": [0.5] * 3}], image_size=28, **GRAY)


def test_warnings_come_with_the_transforms() -> None:
    transforms = RunTransforms.build([{"name": "HorizontalFlip"}, SHIFT_SCALE_ROTATE], image_size=32, **RGB)
    assert len(transforms.warnings) == 1 and transforms.warnings[0].startswith("augmentation[1] ShiftScaleRotate:")
    assert RunTransforms.build("default", image_size=32, **RGB).warnings == ()


def count_calls(monkeypatch: pytest.MonkeyPatch, module: object, name: str) -> list[int]:
    """Wraps module.name so that each call appends to the returned list."""
    original, calls = getattr(module, name), []

    def counted(*args, **kwargs):
        calls.append(1)
        return original(*args, **kwargs)

    monkeypatch.setattr(module, name, counted)
    return calls


AUGMENTATIONS = ["default", [{"name": "VerticalFlip"}, SHIFT_SCALE_ROTATE]]


@pytest.mark.parametrize("augmentation", AUGMENTATIONS, ids=["preset", "list"])
def test_a_training_run_builds_and_checks_its_augmentation_once(
    small_fmnist_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, augmentation
) -> None:
    spec = TrainSpec.model_validate(
        {
            "dataset": {"name": "fashion_mnist", "train_subset": 100, "test_subset": 50},
            "model": {"name": "custom_resnet", "width": 4},
            "epochs": 2,
            "batch_size": 50,
            "optimizer": {"lr": 0.05},
            "scheduler": {"name": "none"},
            "augmentation": augmentation,
            "gradcam_misclassified": 0,
            "compile": "off",
        }
    )
    builds = count_calls(monkeypatch, augment, "_build_transform")  # each of a list's transforms
    checks = count_calls(monkeypatch, augment, "_check_runs")
    runs = count_calls(monkeypatch, trainer, "set_up")
    effects = count_calls(monkeypatch, batch_augment, "effect")
    result = trainer.train(spec, data_dir=small_fmnist_dir, out_dir=tmp_path, device="cpu")
    assert len(runs) == 1 and len(result.metrics["epochs"]) == 2
    if isinstance(augmentation, list):
        assert (len(builds), len(checks)) == (len(augmentation), 1), "validated and tried once, not once an epoch"
        assert len(result.metrics["warnings"]) == 1 and "ShiftScaleRotate" in result.metrics["warnings"][0]
    assert len(effects) <= 5, "the batched equivalent is looked for once: the pipeline and at most four candidates"


def test_the_lr_finder_sets_up_as_training_does(small_fmnist_dir: Path, tmp_path: Path, monkeypatch) -> None:
    runs = count_calls(monkeypatch, lr_finder, "set_up")
    checks = count_calls(monkeypatch, augment, "_check_runs")
    spec = LRFinderSpec.model_validate(
        {
            "dataset": {"name": "fashion_mnist", "train_subset": 100, "test_subset": 10},
            "model": {"name": "custom_resnet", "width": 4},
            "batch_size": 50,
            "num_iter": 4,
            "augmentation": [{"name": "VerticalFlip"}],
        }
    )
    result = lr_finder.run_lr_finder(spec, data_dir=small_fmnist_dir, out_dir=tmp_path, device="cpu")
    assert len(runs) == len(checks) == 1 and len(result.metrics["lrs"]) == 4


def test_set_up_places_model_optimizer_and_loaders_alike(small_fmnist_dir: Path) -> None:
    from ml.data import load_dataset
    from ml.loaders import ImageTrainLoader, TensorTrainLoader

    spec = LRFinderSpec.model_validate(
        {"dataset": {"name": "fashion_mnist", "train_subset": 100, "test_subset": 10}, "batch_size": 25}
    )
    bundle = load_dataset(spec.dataset, small_fmnist_dir)
    run = set_up(spec, bundle, lr=0.01, device=torch.device("cpu"))
    assert isinstance(run.loaders.train, TensorTrainLoader) and run.validation is None
    assert run.optimizer.defaults["foreach"] and run.optimizer.defaults["lr"] == 0.01
    assert (run.bundle.mean, run.bundle.std) == (run.transforms.mean, run.transforms.std) == (bundle.mean, bundle.std)
    listed = set_up(
        spec.model_copy(update={"augmentation": [{"name": "VerticalFlip"}]}), bundle, lr=0.01, device=run.device
    )
    assert isinstance(listed.loaders.train, ImageTrainLoader) and not listed.loaders.train.pin_memory
    again = set_up(spec, bundle, lr=0.01, device=run.device)
    for name, value in run.model.state_dict().items():
        assert torch.equal(again.model.state_dict()[name], value), f"seeded before the model is built: {name}"
