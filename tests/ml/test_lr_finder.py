"""The LR range test: pytorch-lr-finder's schedule, smoothing and divergence rule, its suggestions,
cancellation, state restoration, and the whole run on a small real dataset."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from ml.lr_finder import (
    CURVE_KEYS,
    LIVE_POINTS,
    Curve,
    build_metrics,
    lr_at,
    range_test,
    run_lr_finder,
    suggest,
    trend_of,
    valley_index,
)
from ml.specs import LRFinderSpec


def tiny_model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 3))


def tiny_batches(n_batches: int = 4, batch: int = 16) -> list[tuple[torch.Tensor, torch.Tensor]]:
    generator = torch.Generator().manual_seed(1)
    x = torch.randn(n_batches * batch, 4, generator=generator)
    y = (x[:, 0] > 0).long() + (x[:, 1] > 1).long()
    return [(x[i : i + batch], y[i : i + batch]) for i in range(0, len(x), batch)]


class RecordingSGD(torch.optim.SGD):
    """SGD that remembers the LR of every step it actually takes."""

    def __init__(self, params, **kwargs) -> None:
        super().__init__(params, **kwargs)
        self.used: list[float] = []

    def step(self, closure=None):
        self.used.append(self.param_groups[0]["lr"])
        return super().step(closure)


class ScriptedLoss:
    """A criterion whose loss values are given in advance (still differentiable through the model)."""

    def __init__(self, values) -> None:
        self.values, self.calls = list(values), 0

    def __call__(self, outputs: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        value = self.values[self.calls]
        self.calls += 1
        if isinstance(value, BaseException):
            raise value
        return outputs.sum() * 0 + value


class StopAfter:
    """Callbacks that say stop from the (k+1)-th poll on, and record the progress reports."""

    def __init__(self, k: int | None) -> None:
        self.k, self.polls, self.reports = k, 0, []

    def on_progress(self, progress: dict) -> None:
        self.reports.append(progress)

    def on_epoch(self, record: dict) -> None:
        raise AssertionError("the LR finder has no epochs")

    def should_stop(self) -> bool:
        self.polls += 1
        return self.k is not None and self.polls > self.k


def losses_with_trend(trend, weight=0.1):
    """Raw losses whose exponential smoothing at `weight` is `trend`: scripts what the stop rules see."""
    return [trend[0]] + [(now - (1 - weight) * before) / weight for before, now in zip(trend, trend[1:])]


def sweep(criterion=None, *, model=None, optimizer=None, batches=None, **kwargs):
    model = model or tiny_model()
    optimizer = optimizer or RecordingSGD(model.parameters(), lr=0.1, momentum=0.9)
    options = dict(start_lr=1e-4, end_lr=1e-1, num_iter=10, step_mode="exp", smooth_f=0.05, diverge_th=1e9)
    options.update(kwargs)
    curve = range_test(
        model,
        optimizer,
        tiny_batches() if batches is None else batches,
        criterion=criterion or nn.CrossEntropyLoss(),
        **options,
    )
    return curve, optimizer


# --- the schedule -------------------------------------------------------------------------------


def test_exp_schedule_is_pytorch_lr_finders_and_is_the_lr_actually_used():
    curve, optimizer = sweep(start_lr=1e-4, end_lr=1e-1, num_iter=10, step_mode="exp")
    expected = [1e-4 * (1e-1 / 1e-4) ** (i / 9) for i in range(10)]
    assert curve.lrs == pytest.approx(expected, rel=1e-12)
    assert curve.lrs[0] == pytest.approx(1e-4) and curve.lrs[-1] == pytest.approx(1e-1)
    assert optimizer.used == pytest.approx(curve.lrs, rel=1e-12)  # one step per iteration, at that LR
    assert curve.stop_reason == "completed" and curve.diverged_at_lr is None


def test_linear_schedule_interpolates_from_start_to_end():
    curve, optimizer = sweep(start_lr=0.01, end_lr=0.5, num_iter=8, step_mode="linear")
    assert curve.lrs == pytest.approx([0.01 + (i / 7) * 0.49 for i in range(8)], rel=1e-12)
    assert curve.lrs[0] == pytest.approx(0.01) and curve.lrs[-1] == pytest.approx(0.5)
    assert np.all(np.diff(curve.lrs) == pytest.approx(0.07))
    assert optimizer.used == pytest.approx(curve.lrs)


def test_lr_at_rejects_an_unknown_mode():
    with pytest.raises(ValueError, match=r"unknown step_mode 'cos'; expected one of \['exp', 'linear'\]"):
        lr_at(0, start_lr=1e-3, end_lr=1, num_iter=5, step_mode="cos")


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"num_iter": 1}, "num_iter must be >= 2; got 1"),
        ({"start_lr": 1.0, "end_lr": 0.1}, "start_lr=1.0, end_lr=0.1"),
        ({"smooth_f": 1.0}, r"smooth_f must be in \[0, 1\); got 1.0"),
        ({"step_mode": "cos"}, "unknown step_mode 'cos'"),
    ],
)
def test_bad_ranges_are_refused_naming_the_value(kwargs, message):
    with pytest.raises(ValueError, match=message):
        sweep(**kwargs)


# --- smoothing, divergence, NaN -----------------------------------------------------------------


def ema(values, weight):
    expected = [values[0]]
    for value in values[1:]:
        expected.append(weight * value + (1 - weight) * expected[-1])
    return expected


def test_smoothing_is_an_exponential_average_weighted_by_smooth_f():
    raw = [2.0, 1.0, 1.5, 0.5, 3.0]
    curve, _ = sweep(ScriptedLoss(raw), num_iter=5, smooth_f=0.3)
    assert curve.losses == pytest.approx(raw)
    assert curve.smoothed_losses == pytest.approx(ema(raw, 0.3))  # [2.0, 1.7, 1.64, 1.298, 1.8086]
    assert curve.smoothed_losses[1] == pytest.approx(1.7)
    assert curve.trend_losses == pytest.approx(ema(raw, 0.05))  # 0.3 smooths too little to stop or suggest on


def test_smooth_f_zero_means_no_smoothing_and_a_trend_at_005():
    raw = [2.0, 1.0, 1.5, 0.5]
    curve, _ = sweep(ScriptedLoss(raw), num_iter=4, smooth_f=0.0)
    assert curve.smoothed_losses == pytest.approx(raw)
    assert curve.trend_losses == pytest.approx(ema(raw, 0.05)) == trend_of(raw, smooth_f=0.0)


@pytest.mark.parametrize("smooth_f", [0.02, 0.05, 0.1])
def test_a_smooth_f_up_to_01_is_its_own_trend(smooth_f):
    raw = [2.0, 1.0, 1.5, 0.5, 3.0]
    curve, _ = sweep(ScriptedLoss(raw), num_iter=5, smooth_f=smooth_f)
    assert curve.trend_losses == curve.smoothed_losses == pytest.approx(ema(raw, smooth_f))


def test_divergence_stops_at_the_first_trend_above_threshold_times_best():
    trend = [4.0, 2.0, 1.0, 4.9, 5.1, 1.0, 1.0, 1.0]  # best is 1.0; 5.1 > 5 x 1.0
    curve, optimizer = sweep(ScriptedLoss(losses_with_trend(trend)), num_iter=8, smooth_f=0.1, diverge_th=5.0)
    assert curve.stop_reason == "diverged"
    assert curve.trend_losses == pytest.approx(trend[:5])  # the diverging point is recorded, as pytorch-lr-finder does
    assert curve.diverged_at_lr == curve.stopped_at_lr == pytest.approx(curve.lrs[4])
    assert len(optimizer.used) == 5


def test_a_raw_loss_that_jumps_does_not_stop_the_sweep():
    """With smooth_f 0 torch-lr-finder's rule reads the raw loss: 10.5 > 5 x 2.0 would end this sweep
    at its 4th step. The trend (smoothed at 0.05) only drifts up a little there."""
    raw = [2.3, 2.2, 2.0, 10.5, 2.0, 1.9, 1.8, 1.7]
    curve, _ = sweep(ScriptedLoss(raw), num_iter=8, smooth_f=0.0, diverge_th=5.0, rise_stop=0.5)
    assert curve.stop_reason == "completed" and curve.stopped_at_lr is None
    assert curve.smoothed_losses == pytest.approx(raw) and len(curve.losses) == 8


def test_a_too_high_range_diverges_for_real():
    model = tiny_model()
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
    curve, _ = sweep(model=model, optimizer=optimizer, start_lr=1e-3, end_lr=1e4, num_iter=60, diverge_th=5.0)
    assert curve.stop_reason == "diverged"
    assert len(curve.lrs) < 60
    assert curve.diverged_at_lr >= curve.lrs[-1]
    assert all(math.isfinite(v) for v in curve.losses + curve.smoothed_losses)


@pytest.mark.parametrize("bad", [math.nan, math.inf])
def test_a_non_finite_loss_ends_the_sweep_without_being_recorded(bad):
    curve, optimizer = sweep(ScriptedLoss([1.0, 0.9, bad, 0.5, 0.5]), num_iter=5)
    assert curve.stop_reason == "diverged"
    assert curve.losses == pytest.approx([1.0, 0.9])
    assert curve.diverged_at_lr == pytest.approx(lr_at(2, start_lr=1e-4, end_lr=1e-1, num_iter=5, step_mode="exp"))
    assert len(optimizer.used) == 3  # the NaN step is taken, then undone with the rest of the sweep
    metrics = build_metrics(curve, num_iter=5, seconds=0.1)
    json.dumps(metrics, allow_nan=False)  # raises on NaN/inf


@pytest.mark.parametrize("sync_every", [2, 3, 7, 100])
def test_reading_losses_in_chunks_records_the_same_curve_and_stop(sync_every):
    """What a GPU does (a host read every few steps) gives the curve of a read per step: same LRs,
    losses, smoothing and divergence point; only the steps past a divergence, up to the chunk's
    end, are extra (and undone)."""
    for options in (
        {"start_lr": 1e-3, "end_lr": 1e4, "num_iter": 60, "diverge_th": 5.0},  # diverges
        {"start_lr": 1e-4, "end_lr": 1e-1, "num_iter": 23},
    ):  # completes
        reference, ref_opt = sweep(sync_every=1, **options)
        chunked, opt = sweep(sync_every=sync_every, **options)
        assert chunked.lrs == reference.lrs and chunked.stop_reason == reference.stop_reason
        assert chunked.losses == pytest.approx(reference.losses, rel=1e-6)
        assert chunked.smoothed_losses == pytest.approx(reference.smoothed_losses, rel=1e-6)
        assert chunked.trend_losses == pytest.approx(reference.trend_losses, rel=1e-6)
        assert chunked.diverged_at_lr == reference.diverged_at_lr
        assert chunked.stopped_at_lr == reference.stopped_at_lr
        steps = len(ref_opt.used)
        assert steps <= len(opt.used) <= min(options["num_iter"], -(-steps // sync_every) * sync_every)


def test_a_nan_inside_a_chunk_ends_the_curve_before_it():
    curve, optimizer = sweep(ScriptedLoss([1.0, 0.9, math.nan, 0.5, 0.5, 0.5]), num_iter=6, sync_every=4)
    assert curve.stop_reason == "diverged" and curve.losses == pytest.approx([1.0, 0.9])
    assert len(optimizer.used) == 4


def test_sync_every_below_one_is_refused():
    with pytest.raises(ValueError, match="sync_every must be >= 1"):
        sweep(sync_every=0)


# --- cancellation and progress ------------------------------------------------------------------


def test_cancellation_stops_after_k_iterations_and_keeps_them():
    callbacks = StopAfter(7)
    curve, optimizer = sweep(num_iter=30, callbacks=callbacks)
    assert curve.stop_reason == "cancelled" and curve.diverged_at_lr is None and curve.stopped_at_lr is None
    assert len(curve.lrs) == len(curve.losses) == 7
    assert len(optimizer.used) == 7
    assert callbacks.polls == 8  # polled every iteration


def test_progress_is_reported_every_few_iterations_and_at_the_end():
    callbacks = StopAfter(None)
    curve, _ = sweep(num_iter=12, callbacks=callbacks)
    assert [r["step"] for r in callbacks.reports] == [5, 10, 12]
    last = callbacks.reports[-1]
    assert {k: v for k, v in last.items() if k != "curve"} == {"step": 12, "steps": 12, "fraction": 1.0}
    assert last["curve"] == {key: getattr(curve, key) for key in CURVE_KEYS}  # the whole curve, live
    assert callbacks.reports[0]["fraction"] == pytest.approx(5 / 12, abs=1e-4)
    assert callbacks.reports[0]["curve"]["lrs"] == curve.lrs[:5]


def test_an_early_stop_reports_the_iteration_it_stopped_at():
    callbacks = StopAfter(None)
    curve, _ = sweep(ScriptedLoss([1.0] * 7 + [math.nan] * 5), num_iter=12, callbacks=callbacks)
    assert curve.stop_reason == "diverged" and len(curve.lrs) == 7
    assert [r["step"] for r in callbacks.reports] == [5, 7]  # not 5: where it stopped
    assert callbacks.reports[-1]["stop_reason"] == "diverged" and callbacks.reports[-1]["steps"] == 12


def test_the_live_curve_is_thinned_to_a_picture():
    curve = Curve(lrs=[float(i) for i in range(1001)], losses=[1.0] * 1001)
    curve.smoothed_losses = curve.trend_losses = [1.0] * 1001
    live = curve.progress(2000)["curve"]
    assert len(live["lrs"]) <= LIVE_POINTS + 1 and live["lrs"][0] == 0.0 and live["lrs"][-1] == 1000.0
    assert live["lrs"] == sorted(set(live["lrs"])) and len(live["losses"]) == len(live["lrs"])


def test_the_loader_is_cycled_when_it_runs_out():
    batches = tiny_batches(n_batches=2)
    curve, _ = sweep(ScriptedLoss([1.0] * 7), batches=batches, num_iter=7)
    assert len(curve.lrs) == 7


def test_empty_batches_are_an_error():
    with pytest.raises(ValueError, match="yielded no batch; got an empty list"):
        sweep(batches=[])


# --- state restoration --------------------------------------------------------------------------


def snapshot(model: nn.Module, optimizer: torch.optim.Optimizer) -> tuple[dict, dict]:
    import copy

    return copy.deepcopy(model.state_dict()), copy.deepcopy(optimizer.state_dict())


def assert_same_state(before: tuple[dict, dict], model: nn.Module, optimizer: torch.optim.Optimizer) -> None:
    model_before, optimizer_before = before
    for name, tensor in model.state_dict().items():  # weights and BatchNorm running stats
        assert torch.equal(tensor, model_before[name]), name
    after = optimizer.state_dict()
    assert after["param_groups"] == optimizer_before["param_groups"]  # the LR is back too
    assert after["state"].keys() == optimizer_before["state"].keys()
    for key, state in after["state"].items():
        assert torch.equal(state["momentum_buffer"], optimizer_before["state"][key]["momentum_buffer"])


def warmed_up() -> tuple[nn.Module, torch.optim.Optimizer]:
    """A model and an SGD that have taken a step, so momentum buffers exist."""
    model = tiny_model()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4)
    x, y = tiny_batches()[0]
    nn.functional.cross_entropy(model(x), y).backward()
    optimizer.step()
    model.eval()
    return model, optimizer


def test_model_and_optimizer_are_restored_after_a_sweep():
    model, optimizer = warmed_up()
    before = snapshot(model, optimizer)
    curve, _ = sweep(model=model, optimizer=optimizer, start_lr=1e-3, end_lr=1.0, num_iter=15)
    assert len(curve.lrs) == 15
    assert_same_state(before, model, optimizer)
    assert not model.training  # the mode it came in with
    assert all(p.grad is None for p in model.parameters()), "the sweep's last gradients are gone"


def test_state_is_restored_even_when_the_sweep_raises():
    model, optimizer = warmed_up()
    before = snapshot(model, optimizer)
    with pytest.raises(RuntimeError, match="boom"):
        sweep(ScriptedLoss([2.0, 1.0, 0.5, RuntimeError("boom")]), model=model, optimizer=optimizer, num_iter=6)
    assert_same_state(before, model, optimizer)


# --- suggestions --------------------------------------------------------------------------------


def fastai_valley(lrs, losses):
    """fastai 2.7's `valley`, transcribed literally (the oracle), with the one clamp of index -1."""
    n = len(losses)
    max_start, max_end = 0, 0
    lds = [1] * n
    for i in range(1, n):
        for j in range(0, i):
            if (losses[i] < losses[j]) and (lds[i] < lds[j] + 1):
                lds[i] = lds[j] + 1
            if lds[max_end] < lds[i]:
                max_end = i
                max_start = max_end - lds[max_end]
    sections = (max_end - max_start) / 3
    idx = max_start + int(sections) + int(sections / 2)
    return lrs[max(idx, 0)]


def test_steepest_is_the_lr_of_steepest_descent():
    lrs = np.logspace(-5, 1, 101)  # index 50 is exactly 1e-2
    losses = 2.0 - np.tanh(2 * (np.log10(lrs) + 2))  # steepest in log-LR at 1e-2
    suggestions = suggest(lrs, losses, num_iter=101)
    assert suggestions["steepest"] == pytest.approx(1e-2, rel=1e-9)


def test_steepest_skips_the_first_10_points_and_everything_past_the_minimum():
    lrs = np.logspace(-4, 0, 40)
    losses = np.concatenate([np.linspace(3.0, 1.0, 31), np.linspace(1.2, 4.0, 9)])  # lowest at index 30
    losses[3] -= 1.0  # a cliff inside the first 10 points: pytorch-lr-finder ignores it
    losses[34] -= 1.2  # a steeper drop past the minimum, in the diverging tail: torch-lr-finder's pick
    losses[20] -= 0.3  # the steepest drop on the descending part lands on index 19 (np.gradient is centred)
    assert suggest(lrs, losses, num_iter=40)["steepest"] == pytest.approx(lrs[19])


def test_steepest_is_looked_for_only_inside_the_descent():
    """With num_iter 200 fastai's start trim is 20 points, longer than torch-lr-finder's 10: a cliff at
    index 12 is before the descent and not a suggestion."""
    lrs = np.geomspace(1e-6, 1.0, 200)
    losses = np.concatenate([np.linspace(3.0, 1.0, 151), np.linspace(1.1, 3.0, 49)])  # lowest at index 150
    losses[13:] -= 0.5  # a cliff between index 12 and 13, inside the trim
    losses[100] -= 0.2  # the steepest drop inside the descent lands on index 99
    assert losses[12] - losses[13] > losses[99] - losses[100]  # the cliff is steeper
    assert suggest(lrs, losses, num_iter=200)["steepest"] == pytest.approx(lrs[99])


def test_minimum_div10_is_the_lr_at_the_lowest_loss_over_ten():
    lrs = np.logspace(-5, 0, 51)  # index 35 is exactly 10 ** -1.5
    losses = (np.log10(lrs) + 1.5) ** 2 + 1.0  # lowest at index 35
    losses[2] = 1.2  # a dip inside fastai's num_it // 10 trim, above the minimum: ignored
    assert suggest(lrs, losses, num_iter=51)["minimum_div10"] == pytest.approx(lrs[35] / 10)


@pytest.mark.parametrize(
    "losses",
    [
        [2.3, 2.4, 2.5, 2.4, 2.45, 2.5, 2.6, 2.7, 2.8, 2.9],  # rises from the start: lowest at index 0
        [2.5, 2.3, 2.6, 2.55, 2.5, 2.45, 2.4, 2.5, 2.6, 2.7],  # lowest at index 1, inside the 2-point trim
        [2.3, 2.3, 2.29, 2.28, 2.27, 2.27, 2.28, 2.3, 2.35, 2.4],  # lowest after the trim, but only 1.3% down
    ],
)
def test_a_curve_that_never_clearly_fell_gives_no_suggestion(losses):
    """Past a minimum in the start trim every later point is on the way up (torch-lr-finder suggested
    here); a minimum within 2% of the start is the flat region's noise."""
    lrs = np.geomspace(1.0, 100.0, len(losses))
    assert suggest(lrs, losses, num_iter=20) == {"steepest": None, "valley": None, "minimum_div10": None}


def test_valley_on_a_known_array():
    losses = [5, 5, 5, 4, 3, 2, 1, 0, 1, 2, 3]  # longest fall ends at 7, starts (fastai) at 1
    assert valley_index(np.array(losses, dtype=float)) == 4  # 1 + int(6 / 3) + int(6 / 3 / 2)
    losses += [4, 5, 6, 7, 8]  # fastai drops the last 5 points before `valley`
    lrs = np.arange(16) * 0.1
    assert suggest(lrs, losses, num_iter=0)["valley"] == pytest.approx(0.4)


def test_valley_of_two_points_at_the_start_is_clamped_not_wrapped():
    # fastai computes index -1 here, which Python reads as the last point (loss 5.0, the worst)
    assert valley_index(np.array([2.0, 1.0, 3.0, 4.0, 5.0])) == 0


def test_valley_matches_fastai_on_random_curves():
    rng = np.random.default_rng(0)
    for trial in range(300):
        n = int(rng.integers(1, 60))
        losses = (np.cumsum(rng.normal(0, 1, n)) if trial % 2 else rng.integers(0, 6, n)).astype(float)
        lrs = np.geomspace(1e-6, 1.0, n)
        assert lrs[valley_index(losses)] == fastai_valley(lrs, list(losses)), losses


def test_suggestions_on_a_real_sweep_are_inside_the_range():
    model = tiny_model()
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-4, momentum=0.9)
    curve, _ = sweep(model=model, optimizer=optimizer, start_lr=1e-4, end_lr=10, num_iter=40, diverge_th=5)
    suggestions = suggest(curve.lrs, curve.smoothed_losses, num_iter=40)
    for name in ("steepest", "valley"):
        assert curve.lrs[0] <= suggestions[name] <= curve.lrs[-1], name
    assert curve.lrs[0] / 10 <= suggestions["minimum_div10"] <= curve.lrs[-1] / 10


@pytest.mark.parametrize("n", [0, 1, 2, 3, 5, 16, 17, 20])
def test_short_curves_give_what_they_can_and_never_crash(n):
    lrs = list(np.geomspace(1e-5, 1e-2, n))
    losses = list(np.linspace(2.3, 1.0, n))
    suggestions = suggest(lrs, losses, num_iter=100)
    assert set(suggestions) == {"steepest", "valley", "minimum_div10"}
    if n < 2:  # one point never fell
        assert suggestions == {"steepest": None, "valley": None, "minimum_div10": None}
    else:
        assert suggestions["valley"] in lrs
        assert np.isclose(lrs, suggestions["minimum_div10"] * 10, rtol=1e-12, atol=0).any()
        assert (suggestions["steepest"] is None) == (n < 2)


def test_metrics_have_the_contract_shape():
    trend = [2.3, 2.2, 2.0, 1.7, 1.5, 1.4, 1.6, 9.0]
    curve, _ = sweep(ScriptedLoss(losses_with_trend(trend)), num_iter=8, smooth_f=0.1, diverge_th=5.0)
    metrics = build_metrics(curve, num_iter=8, seconds=1.23456)
    assert set(metrics) == {
        "lrs",
        "losses",
        "smoothed_losses",
        "trend_losses",
        "suggested_lr",
        "suggestions",
        "diverged_at_lr",
        "stopped_at_lr",
        "stop_reason",
        "num_iter",
        "seconds",
    }
    assert len(metrics["trend_losses"]) == len(metrics["losses"]) == 8
    assert metrics["suggested_lr"] == metrics["suggestions"]["steepest"] is not None
    assert metrics["stop_reason"] == "diverged" and metrics["diverged_at_lr"] == curve.lrs[-1]
    assert metrics["stopped_at_lr"] == curve.lrs[-1]
    assert metrics["seconds"] == 1.235 and metrics["num_iter"] == 8
    assert json.loads(json.dumps(metrics, allow_nan=False)) == metrics


# --- the whole run ------------------------------------------------------------------------------


@pytest.mark.parametrize("model_name", ["resnet18", "custom_resnet"])
def test_run_lr_finder_on_fashion_mnist(small_fmnist_dir, tmp_path, model_name):
    spec = LRFinderSpec(
        dataset={"name": "fashion_mnist", "train_subset": 500},
        model={"name": model_name, "width": 4},
        batch_size=32,
        start_lr=1e-4,
        end_lr=10,
        num_iter=30,
        augmentation="none",  # learns in 30 steps: the loss falls clearly, so there are suggestions
    )
    result = run_lr_finder(spec, data_dir=small_fmnist_dir, out_dir=tmp_path / "run", device="cpu")
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics == json.loads(json.dumps(result.metrics))
    assert result.stop_reason == metrics["stop_reason"] in ("completed", "diverged", "rise_stop")
    assert 20 <= len(metrics["lrs"]) <= 30 and metrics["lrs"][0] == pytest.approx(1e-4)
    assert (
        len(metrics["losses"]) == len(metrics["smoothed_losses"]) == len(metrics["trend_losses"]) == len(metrics["lrs"])
    )
    assert metrics["losses"][0] == pytest.approx(math.log(10), abs=0.7)  # ~chance on 10 classes at first
    for name, lr in metrics["suggestions"].items():
        assert lr is not None and math.isfinite(lr) and 1e-6 <= lr <= 10, name
    assert metrics["suggested_lr"] == metrics["suggestions"]["steepest"]
    assert result.artifacts == [tmp_path / "run" / "lr_finder.png"]
    with Image.open(result.artifacts[0]) as image:
        assert image.format == "PNG" and 500 <= image.size[0] <= 1200 and 350 <= image.size[1] <= 900


def test_run_lr_finder_cancelled_keeps_what_it_logged(small_fmnist_dir, tmp_path):
    spec = LRFinderSpec(
        dataset={"name": "fashion_mnist", "train_subset": 100},
        model={"name": "custom_resnet", "width": 4},
        batch_size=16,
        num_iter=50,
        augmentation="none",
    )
    result = run_lr_finder(spec, data_dir=small_fmnist_dir, out_dir=tmp_path, callbacks=StopAfter(4), device="cpu")
    assert result.stop_reason == "cancelled" and len(result.metrics["lrs"]) == 4
    assert json.loads((tmp_path / "metrics.json").read_text())["stop_reason"] == "cancelled"
    assert (tmp_path / "lr_finder.png").stat().st_size > 1000
