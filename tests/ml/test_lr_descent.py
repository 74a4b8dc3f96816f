"""The LR range test's suggestions lie on the descending part of the curve, before the trend's
minimum, on real sweeps (noisy ones included) and on saved real curves; a curve that never clearly
fell gives none; and the sweep stops once its trend has clearly left that minimum, never on the
noise of a raw loss."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from ml.lr_finder import range_test, run_lr_finder, suggest, trend_of
from ml.specs import LRFinderSpec

CURVES = Path(__file__).with_name("lr_curves.json")  # real sweeps, recorded as its "source" says
NEVER_FELL = {"fmnist_resnet18_w8_rising"}  # saved curves that must give no suggestion


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
    curves = json.loads(CURVES.read_text())
    for curve in curves.values():  # what the sweep read: its trend, recomputed from the raw losses
        curve["trend_losses"] = trend_of(curve["losses"], smooth_f=curve["smooth_f"])
    return curves


@pytest.mark.parametrize("name", sorted(set(saved_curves()) - NEVER_FELL))
def test_saved_real_curves_get_suggestions_before_their_minimum(name):
    curve = saved_curves()[name]
    suggestions = suggest(curve["lrs"], curve["trend_losses"], num_iter=curve["num_iter"])
    assert_on_the_descending_part(curve["lrs"], curve["trend_losses"], suggestions)


def test_a_real_curve_that_only_rose_gives_no_suggestion():
    """resnet18 from lr 3: the smoothed loss rises from its first step (2.45, 2.85, 2.95, ...) and its
    minimum is that first point, inside the start trim. Read off the curve after the trim, it got
    steepest 5.0 and valley 6.9, past the minimum, and lr "auto" trained with them."""
    curve = saved_curves()["fmnist_resnet18_w8_rising"]
    assert int(np.argmin(curve["trend_losses"])) == 0
    suggestions = suggest(curve["lrs"], curve["trend_losses"], num_iter=curve["num_iter"])
    assert suggestions == {"steepest": None, "valley": None, "minimum_div10": None}


def test_a_raw_noisy_sweep_runs_through_its_flat_region_and_suggests_on_its_descent():
    """ResNet9 at 8 images a step with smooth_f 0, replayed: its raw loss jumps by up to 0.6 from step to step
    in the flat region (lr < 6.5e-4, the first 16 iterations), where a stop rule reading it ended the
    sweep at iteration 9 and suggested 2e-4. On the trend it runs on to its real minimum (lr 0.015)
    and stops past it, and every suggestion lies between the two."""
    saved = saved_curves()["fmnist_custom_resnet_w8_batch8_smooth0_descent"]
    model = nn.Linear(2, 2)
    lrs = saved["lrs"]
    curve = range_test(
        model,
        torch.optim.SGD(model.parameters(), lr=0.1),
        [(torch.zeros(4, 2), torch.zeros(4, dtype=torch.long))],
        criterion=scripted(saved["losses"]),
        start_lr=lrs[0],
        end_lr=1.0,
        num_iter=saved["num_iter"],
        smooth_f=0.0,
        rise_stop=0.5,  # the spec's defaults
        diverge_th=5.0,
    )
    assert curve.lrs == pytest.approx(lrs, rel=1e-9) and curve.smoothed_losses == pytest.approx(saved["losses"])
    lowest = int(np.argmin(curve.trend_losses))
    assert lrs[lowest] == pytest.approx(0.015, rel=0.05)
    assert curve.stop_reason == "rise_stop" and len(curve.lrs) > lowest + 1
    suggestions = suggest(curve.lrs, curve.trend_losses, num_iter=saved["num_iter"])
    for name, lr in suggestions.items():
        assert lr is not None and lrs[16] <= lr <= lrs[lowest], (name, lr)
    assert_on_the_descending_part(curve.lrs, curve.trend_losses, suggestions)


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
        # noisy: 8 images a step; from 1e-5 its 50 steps stay flat (the trend 0.5% below its start): no suggestion
        {"model": {"name": "resnet18", "width": 4}, "batch_size": 8, "start_lr": 1e-3},
        {"model": {"name": "custom_resnet", "width": 4}, "batch_size": 8, "smooth_f": 0.0},  # noisier: raw loss
    ],
)
@pytest.mark.slow  # real Fashion-MNIST sweeps
def test_real_sweeps_suggest_on_the_descending_part(fmnist_data_dir, tmp_path, options):
    sweep = {"start_lr": 1e-5, "end_lr": 10, "num_iter": 50} | options
    spec = LRFinderSpec(dataset={"name": "fashion_mnist", "train_subset": 400}, augmentation="none", **sweep)
    metrics = run_lr_finder(spec, data_dir=fmnist_data_dir, out_dir=tmp_path, device="cpu", num_workers=0).metrics
    assert_on_the_descending_part(metrics["lrs"], metrics["trend_losses"], metrics["suggestions"])
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
    smoothed = stopped["trend_losses"]
    best, first = min(smoothed), smoothed[0]
    assert stopped["stop_reason"] == "rise_stop" and best < 0.9 * first
    assert stopped["stopped_at_lr"] == stopped["lrs"][-1] and stopped["diverged_at_lr"] is None
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


def losses_with_trend(trend, weight):
    """Raw losses whose exponential smoothing at `weight` is `trend`: scripts what the stop rules see."""
    return [trend[0]] + [(now - (1 - weight) * before) / weight for before, now in zip(trend, trend[1:])]


@pytest.mark.parametrize(
    ("trend", "rise_stop", "recorded"),
    [
        ([4.0, 2.0, 1.0, 2.4, 2.6, 1.0], 0.5, 5),  # best 1, first 4: stops above 2.5
        ([4.0, 2.0, 1.0, 2.4, 2.6, 1.0], 0.6, 6),  # 2.8 is never reached
        ([4.0, 2.0, 1.0, 2.4, 2.6, 1.0], None, 6),  # torch-lr-finder's rule: 5 x 1 is never reached
        ([2.3, 2.25, 2.4, 2.5, 2.6, 2.7], 0.5, 6),  # never fell 10%: no minimum to leave
    ],
)
def test_rise_stop_on_scripted_trends(trend, rise_stop, recorded):
    model = nn.Linear(2, 2)
    batches = [(torch.zeros(4, 2), torch.zeros(4, dtype=torch.long))]
    curve = range_test(
        model,
        torch.optim.SGD(model.parameters(), lr=0.1),
        batches,
        criterion=scripted(losses_with_trend(trend, 0.1)),
        start_lr=1e-3,
        end_lr=1.0,
        num_iter=len(trend),
        smooth_f=0.1,
        rise_stop=rise_stop,
    )
    assert curve.trend_losses == pytest.approx(trend[:recorded])
    stopped = recorded < len(trend)
    assert curve.stop_reason == ("rise_stop" if stopped else "completed") and curve.diverged_at_lr is None
    assert curve.stopped_at_lr == (curve.lrs[-1] if stopped else None)


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
