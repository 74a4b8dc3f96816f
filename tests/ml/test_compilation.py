"""torch.compile in training runs: when "auto" compiles, and a compiled run on real data whose graphs
a second job of the same shape reuses."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch._dynamo.utils import counters

from ml.checkpoints import load_model
from ml.compilation import resolve_mode
from ml.specs import COMPILE_MIN_STEPS, TrainSpec
from ml.trainer import train

CPU, CUDA = torch.device("cpu"), torch.device("cuda")


@pytest.mark.parametrize(
    ("compile", "device", "steps", "expected"),
    [
        ("auto", CPU, COMPILE_MIN_STEPS - 1, None),
        ("auto", CPU, COMPILE_MIN_STEPS, "default"),
        ("auto", CUDA, 10 * COMPILE_MIN_STEPS, "default"),
        ("off", CUDA, 10 * COMPILE_MIN_STEPS, None),
        ("reduce-overhead", CUDA, 1, "reduce-overhead"),
        ("reduce-overhead", CPU, 1, "default"),  # CUDA graphs need CUDA
        ("max-autotune-no-cudagraphs", CPU, 1, "max-autotune-no-cudagraphs"),
    ],
)
def test_resolve_mode(compile: str, device: torch.device, steps: int, expected: str | None) -> None:
    assert resolve_mode(compile, device=device, steps=steps) == expected


def test_the_spec_refuses_an_unknown_mode_naming_the_allowed_ones() -> None:
    with pytest.raises(ValueError, match="'auto', 'off', 'default'"):
        TrainSpec.model_validate({"dataset": {"name": "cifar10"}, "compile": "fast"})


def compiled_spec(seed: int) -> TrainSpec:
    return TrainSpec.model_validate(
        {
            "dataset": {"name": "fashion_mnist", "train_subset": 1000, "test_subset": 200},
            "model": {"name": "custom_resnet", "width": 8},
            "epochs": 2,
            "batch_size": 32,
            "seed": seed,
            "optimizer": {"lr": 0.05},
            "scheduler": {"name": "one_cycle", "max_lr": 0.05},
            "augmentation": "none",
            "gradcam_misclassified": 2,
            "compile": "default",
            "label_smoothing": 0.1,
        }
    )


@pytest.mark.slow  # compiles and learns real Fashion-MNIST
def test_a_compiled_run_learns_saves_eager_weights_and_a_second_job_reuses_its_graphs(
    fmnist_data_dir: Path, tmp_path: Path
) -> None:
    first = train(compiled_spec(0), data_dir=fmnist_data_dir, out_dir=tmp_path / "a", device="cpu")
    graphs = counters["stats"]["unique_graphs"]
    # the train step and the eval forward, one graph each: 200 test images in batches of 64 end with
    # one of 8, padded to 64 rather than compiled again
    assert graphs == 2, dict(counters["stats"])
    epochs = first.metrics["epochs"]
    assert epochs[-1]["test_acc"] > 0.5, epochs  # chance is 0.1

    # The checkpoint holds the plain module's weights: loaded eagerly, it predicts what the compiled
    # model measured (an argmax may flip on float noise between the two kernels: allow 1 image in 200).
    model, manifest = load_model(first.best_checkpoint)
    assert manifest["test_acc"] == first.metrics["best"]["test_acc"]
    eager_acc = float(np.mean(list(first.metrics["per_class_accuracy"].values())))
    assert abs(eager_acc - manifest["test_acc"]) <= 1 / 200 + 1e-9

    second = train(compiled_spec(1), data_dir=fmnist_data_dir, out_dir=tmp_path / "b", device="cpu")
    assert counters["stats"]["unique_graphs"] == graphs, "the second job of the same shape compiled again"
    assert second.metrics["epochs"][-1]["test_acc"] > 0.3


def test_dynamo_settings_hold_only_around_the_compiled_calls():
    import torch

    from ml.compilation import RECOMPILE_LIMIT, compile_model, compiled_calls

    dynamo = torch._dynamo.config
    before = (dynamo.suppress_errors, dynamo.recompile_limit)
    compile_model(torch.nn.Linear(2, 2), "default")
    assert (dynamo.suppress_errors, dynamo.recompile_limit) == before  # no process-wide side effect
    inductor = torch._inductor.config
    layout = inductor.layout_optimization
    with compiled_calls("default", device=torch.device("cpu")):
        assert dynamo.suppress_errors and dynamo.recompile_limit >= RECOMPILE_LIMIT
        assert not inductor.layout_optimization  # no channels_last convolutions on the CPU (oneDNN's defect)
    assert (dynamo.suppress_errors, dynamo.recompile_limit, inductor.layout_optimization) == (*before, layout)
