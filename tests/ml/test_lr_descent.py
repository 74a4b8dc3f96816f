"""The LR range test's suggestions lie on the descending part of the curve, before the smoothed
minimum, on real sweeps (noisy ones included) and on saved real curves; and the sweep stops once
its loss has clearly left that minimum."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from ml.lr_finder import range_test, run_lr_finder, suggest
from ml.specs import LRFinderSpec

CURVES = Path(__file__).with_name("lr_curves.json")  # real sweeps, recorded as its "source" says


def assert_on_the_descending_part(lrs, smoothed, suggestions) -> None:
    """Every suggestion at or before the smoothed minimum; steepest and valley are points of the curve
    with the loss falling through steepest."""
    lrs, smoothed = np.asarray(lrs), np.asarray(smoothed)
    lowest = int(smoothed.argmin())
    for name in ("steepest", "valley"):
        index = int(np.flatnonzero(lrs == suggestions[name])[0])
        assert index < lowest or (name == "valley" and index == lowest), (name, suggestions[name], lrs[lowest])
    steepest = int(np.flatnonzero(lrs == suggestions["steepest"])[0])
    assert np.gradient(smoothed[: lowest + 1])[steepest] < 0
    assert suggestions["minimum_div10"] <= lrs[lowest] / 10 * (1 + 1e-12)


def saved_curves() -> dict:
    return json.loads(CURVES.read_text())


@pytest.mark.parametrize("name", sorted(saved_curves()))
def test_saved_real_curves_get_suggestions_before_their_minimum(name):
    curve = saved_curves()[name]
    suggestions = suggest(curve["lrs"], curve["smoothed_losses"], num_iter=curve["num_iter"])
    assert_on_the_descending_part(curve["lrs"], curve["smoothed_losses"], suggestions)


def test_the_readme_sweep_suggests_on_the_descent():
    """The README's request (Fashion-MNIST, custom_resnet width 16): torch-lr-finder's rule would suggest
    0.74, on the rising part; ours suggests on the descent, before the smoothed loss bottoms out at 0.095."""
    curve = saved_curves()["readme_fmnist_custom_resnet_w16"]
    suggestions = suggest(curve["lrs"], curve["smoothed_losses"], num_iter=curve["num_iter"])
    assert suggestions["steepest"] == pytest.approx(0.0102, rel=0.01)
    assert suggestions["minimum_div10"] == pytest.approx(0.0095, rel=0.01)


@pytest.mark.parametrize(
    "options",
    [
        {"model": {"name": "custom_resnet", "width": 4}, "batch_size": 32},
        {"model": {"name": "resnet18", "width": 4}, "batch_size": 8},  # noisy: 8 images a step
        {"model": {"name": "custom_resnet", "width": 4}, "batch_size": 8, "smooth_f": 0.0},  # noisier: raw loss
    ],
)
@pytest.mark.slow  # real Fashion-MNIST sweeps
def test_real_sweeps_suggest_on_the_descending_part(fmnist_data_dir, tmp_path, options):
    spec = LRFinderSpec(
        dataset={"name": "fashion_mnist", "train_subset": 400},
        augmentation="none",
        start_lr=1e-5,
        end_lr=10,
        num_iter=50,
        **options,
    )
    metrics = run_lr_finder(spec, data_dir=fmnist_data_dir, out_dir=tmp_path, device="cpu", num_workers=0).metrics
    assert_on_the_descending_part(metrics["lrs"], metrics["smoothed_losses"], metrics["suggestions"])
    assert metrics["suggested_lr"] == metrics["suggestions"]["steepest"]


@pytest.mark.slow  # real Fashion-MNIST sweeps
def test_a_sweep_that_left_its_minimum_is_stopped(fmnist_data_dir, tmp_path):
    """With rise_stop (default 0.5) the sweep ends once the smoothed loss has climbed half-way back
    from its best to where it started; torch-lr-finder's rule alone (rise_stop null) runs on."""
    body = {
        "dataset": {"name": "fashion_mnist", "train_subset": 400},
        "augmentation": "none",
        "model": {"name": "custom_resnet", "width": 4},
        "batch_size": 32,
        "start_lr": 1e-4,
        "end_lr": 100,
        "num_iter": 60,
    }
    stopped = run_lr_finder(
        LRFinderSpec(**body), data_dir=fmnist_data_dir, out_dir=tmp_path / "a", device="cpu", num_workers=0
    ).metrics
    smoothed = stopped["smoothed_losses"]
    best, first = min(smoothed), smoothed[0]
    assert stopped["stop_reason"] == "diverged" and best < 0.9 * first
    assert smoothed[-1] > best + 0.5 * (first - best)  # clearly left its minimum ...
    lowest = smoothed.index(best)
    assert all(s <= best + 0.5 * (first - best) for s in smoothed[lowest:-1])  # ... and stopped right there
    unstopped = run_lr_finder(
        LRFinderSpec(**body, rise_stop=None),
        data_dir=fmnist_data_dir,
        out_dir=tmp_path / "b",
        device="cpu",
        num_workers=0,
    ).metrics
    assert len(unstopped["lrs"]) > len(stopped["lrs"])
    assert unstopped["smoothed_losses"][: len(smoothed)] == pytest.approx(smoothed)


def scripted(values):
    calls = iter(values)
    return lambda outputs, labels: outputs.sum() * 0 + next(calls)


@pytest.mark.parametrize(
    ("raw", "rise_stop", "recorded"),
    [
        ([4.0, 2.0, 1.0, 2.4, 2.6, 1.0], 0.5, 5),  # best 1, first 4: stops above 2.5
        ([4.0, 2.0, 1.0, 2.4, 2.6, 1.0], 0.6, 6),  # 2.8 is never reached
        ([4.0, 2.0, 1.0, 2.4, 2.6, 1.0], None, 6),  # torch-lr-finder's rule: 5 x 1 is never reached
        ([2.3, 2.25, 2.4, 2.5, 2.6, 2.7], 0.5, 6),  # never fell 10%: no minimum to leave
    ],
)
def test_rise_stop_on_scripted_losses(raw, rise_stop, recorded):
    model = nn.Linear(2, 2)
    batches = [(torch.zeros(4, 2), torch.zeros(4, dtype=torch.long))]
    curve = range_test(
        model,
        torch.optim.SGD(model.parameters(), lr=0.1),
        batches,
        criterion=scripted(raw),
        start_lr=1e-3,
        end_lr=1.0,
        num_iter=len(raw),
        smooth_f=0.0,
        rise_stop=rise_stop,
    )
    assert len(curve.losses) == recorded
    assert curve.stop_reason == ("diverged" if recorded < len(raw) else "completed")


def test_the_range_test_measures_the_label_smoothed_loss_training_will_use(small_fmnist_dir, tmp_path, monkeypatch):
    made = []

    class Recorded(nn.CrossEntropyLoss):
        def __init__(self, **kwargs) -> None:
            super().__init__(**kwargs)
            made.append(kwargs)

    monkeypatch.setattr("ml.lr_finder.nn.CrossEntropyLoss", Recorded)
    body = {
        "dataset": {"name": "fashion_mnist", "train_subset": 100},
        "model": {"name": "custom_resnet", "width": 2},
        "batch_size": 16,
        "num_iter": 5,
        "augmentation": "none",
    }
    run_lr_finder(LRFinderSpec(**body, label_smoothing=0.1), data_dir=small_fmnist_dir, out_dir=tmp_path, device="cpu")
    assert made == [{"label_smoothing": 0.1}]
    assert LRFinderSpec(**body).label_smoothing == 0.0
