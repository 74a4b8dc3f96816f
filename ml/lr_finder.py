"""Leslie Smith's LR range test, with pytorch-lr-finder's semantics and fastai's suggestions.

The sweep (`range_test`) follows torch-lr-finder 0.2.2: iteration i trains one batch at
start_lr * (end_lr / start_lr) ** (i / (num_iter - 1)) ("exp") or the linear interpolation
("linear"), smooths the loss as smooth_f * loss + (1 - smooth_f) * previous (0 = no smoothing),
and stops once the trend (below) exceeds diverge_th x its best so far. Unlike the library it also
stops on a NaN/inf loss and (with `rise_stop`) once the trend has climbed clearly back from its
minimum, polls a cancel hook, reports progress and never plots to suggest. Model and optimizer come
back exactly as they went in.

The stop rules and the suggestions read one robust series, the trend (`trend_losses`), whatever
smooth_f is: the smoothed loss itself when smooth_f is in (0, TREND_MAX_SMOOTH_F], else the same
exponential smoothing of the raw loss at weight TREND_SMOOTH_F (torch-lr-finder's default). There
the library's rule stops on the raw loss: of 8 images a step it jumps by more than any rise_stop or
steepest drop measures, and a sweep of ResNet9 stopped at iteration 9 of 80, in the flat region,
suggesting an LR there. `smoothed_losses` stays the user's smoothing, as in the library.

The suggestions differ from both libraries: each one is looked for only on the descending part of
the trend, up to its minimum, and only when that minimum is the lowest point of the whole trend and
lies clearly (DESCENT_MIN_FALL) below its first value; a curve that never clearly fell gives no
suggestion. torch-lr-finder's `steepest` (and fastai's `valley`) scan the whole trimmed curve, so a
noisy or diverging tail past the minimum can hold the steepest drop: a real Fashion-MNIST sweep
suggested 0.74 while its smoothed loss bottomed out near 0.1; and a sweep whose loss only rose from
its first step got a suggestion on the way up, past its minimum hidden in the start trim."""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ml.plots import plot_lr_finder
from ml.progress import Callbacks, NullCallbacks
from ml.run import load_data, set_up
from ml.runtime import autocast, memory_format, resolve_device, write_json
from ml.specs import LRFinderSpec

STEP_MODES = ("exp", "linear")
PROGRESS_EVERY = 5  # iterations between progress reports: the store gets a few writes a second at most
SYNC_EVERY_CUDA = 10  # iterations between host reads of the loss on a GPU (see default_sync_every)
STEEPEST_SKIP = (10, 5)  # pytorch-lr-finder's plot(skip_start=10, skip_end=5); the end is cut at the minimum here
RISE_MIN_FALL = 0.1  # rise_stop engages only once the trend fell 10% below its first value
# A suggestion needs the trend's minimum this far below its first value: a flat trend of batch-8 noise
# wandered 1.2% below it on a saved real sweep, while real descents of small sweeps fall 3.5% and more.
DESCENT_MIN_FALL = 0.02
TREND_MAX_SMOOTH_F = 0.1  # a smooth_f up to this smooths enough to stop and suggest on (its trend is itself)
TREND_SMOOTH_F = 0.05  # torch-lr-finder's default weight: the trend of a curve smoothed less than the above
STOP_REASONS = ("completed", "diverged", "rise_stop", "cancelled")
LIVE_POINTS = 200  # points of the curve so far that ride with each progress report: a picture, not the data
CURVE_KEYS = ("lrs", "losses", "smoothed_losses", "trend_losses")

Criterion = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # (logits, labels) -> loss


@dataclass
class Curve:
    """What one sweep recorded: the LR, raw, smoothed (smooth_f) and trend loss of every completed
    iteration, and why it ended (one of STOP_REASONS)."""

    lrs: list[float] = field(default_factory=list)
    losses: list[float] = field(default_factory=list)
    smoothed_losses: list[float] = field(default_factory=list)
    trend_losses: list[float] = field(default_factory=list)
    stop_reason: str = "completed"
    diverged_at_lr: float | None = None  # a NaN/inf loss or the trend above diverge_th x its best
    stopped_at_lr: float | None = None  # the LR of the iteration that ended the sweep early ("diverged", "rise_stop")

    def stop(self, reason: str, lr: float) -> Curve:
        self.stop_reason, self.stopped_at_lr = reason, lr
        if reason == "diverged":
            self.diverged_at_lr = lr
        return self

    def progress(self, num_iter: int, *, final: bool = False) -> dict[str, Any]:
        """A progress report: the iterations recorded of num_iter, and the curve so far thinned to at
        most LIVE_POINTS points (its first and last kept) under "curve", for a live plot. The final
        report of a sweep that ended early says so ("stop_reason") and counts what was recorded, so that
        "step" is the iteration it stopped at, never the last one reported before."""
        n = len(self.lrs)
        stride = max(1, math.ceil(n / LIVE_POINTS))
        keep = [*range(0, n - 1, stride), n - 1] if n else []
        report: dict[str, Any] = {"step": n, "steps": num_iter, "fraction": round(n / num_iter, 4)}
        if final and self.stop_reason != "completed":
            report["stop_reason"] = self.stop_reason
        report["curve"] = {key: [getattr(self, key)[i] for i in keep] for key in CURVE_KEYS}
        return report


@dataclass
class LRFinderResult:
    metrics: dict[str, Any]
    stop_reason: str
    artifacts: list[Path]


def lr_at(iteration: int, *, start_lr: float, end_lr: float, num_iter: int, step_mode: str) -> float:
    """The LR of one iteration: pytorch-lr-finder's ExponentialLR / LinearLR with r = i / (num_iter - 1)."""
    r = iteration / (num_iter - 1)
    if step_mode == "exp":
        return float(start_lr * (end_lr / start_lr) ** r)
    if step_mode == "linear":
        return start_lr + r * (end_lr - start_lr)
    raise ValueError(f"unknown step_mode {step_mode!r}; expected one of {list(STEP_MODES)}")


def _check_range(start_lr: float, end_lr: float, num_iter: int, step_mode: str, smooth_f: float) -> None:
    if step_mode not in STEP_MODES:
        raise ValueError(f"unknown step_mode {step_mode!r}; expected one of {list(STEP_MODES)}")
    if num_iter < 2:
        raise ValueError(f"num_iter must be >= 2; got {num_iter}")
    if not 0 < start_lr < end_lr:
        raise ValueError(f"need 0 < start_lr < end_lr; got start_lr={start_lr}, end_lr={end_lr}")
    if not 0 <= smooth_f < 1:
        raise ValueError(f"smooth_f must be in [0, 1); got {smooth_f}")


class _Cycle(Iterator[tuple[torch.Tensor, torch.Tensor]]):
    """Batches from an iterable, starting it again when it runs out (pytorch-lr-finder's auto_reset)."""

    def __init__(self, batches: Iterable[Sequence[torch.Tensor]]) -> None:
        self._batches = batches
        self._iterator = iter(batches)

    def __next__(self) -> tuple[torch.Tensor, torch.Tensor]:
        try:
            batch = next(self._iterator)
        except StopIteration:
            self._iterator = iter(self._batches)
            try:
                batch = next(self._iterator)
            except StopIteration:
                raise ValueError(f"batches yielded no batch; got an empty {type(self._batches).__name__}") from None
        inputs, labels, *_ = batch
        return inputs, labels


def trend_weight(smooth_f: float) -> float:
    """The smoothing weight of the trend: smooth_f itself when it smooths enough, else TREND_SMOOTH_F."""
    return smooth_f if 0 < smooth_f <= TREND_MAX_SMOOTH_F else TREND_SMOOTH_F


def _smoothed(series: list[float], loss: float, weight: float) -> float:
    """torch-lr-finder's exponential smoothing: the first loss as it is, then weight x loss + (1 - weight) x
    the previous value (weight 0: the raw loss)."""
    if not series or weight == 0:
        return loss
    return weight * loss + (1 - weight) * series[-1]


def trend_of(losses: Iterable[float], *, smooth_f: float) -> list[float]:
    """The trend a sweep with this smooth_f records for these raw losses."""
    weight, series = trend_weight(smooth_f), list[float]()
    for loss in losses:
        series.append(_smoothed(series, loss, weight))
    return series


def _set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr


def _train_step(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    criterion: Criterion,
    batch: tuple[torch.Tensor, torch.Tensor],
    device: torch.device,
) -> torch.Tensor:
    """One SGD step on one batch (the model already in train mode); returns its loss, still on the
    device: reading it is left to the sweep, once per chunk. A non-finite loss steps too; the sweep
    ends there and range_test restores the model."""
    inputs, labels = (t.to(device, non_blocking=True) for t in batch)
    if inputs.dim() == 4:  # images: channels_last on CUDA (ml.runtime.memory_format)
        inputs = inputs.contiguous(memory_format=memory_format(device))
    optimizer.zero_grad(set_to_none=True)
    with autocast(device):
        loss = criterion(model(inputs), labels)
    loss.backward()  # type: ignore[no-untyped-call]  # torch leaves Tensor.backward unannotated
    optimizer.step()
    detached: torch.Tensor = loss.detach().float()
    return detached


def default_sync_every(device: torch.device) -> int:
    """Iterations between host reads of the loss: on a GPU a read per step stalls the queue of
    kernels, so losses are read in chunks, at the cost of at most chunk - 1 steps past a divergence
    (discarded: the model is restored); on a CPU there is no queue to stall, so every step."""
    return SYNC_EVERY_CUDA if device.type == "cuda" else 1


def _sweep(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    batches: Iterable[Sequence[torch.Tensor]],
    criterion: Criterion,
    lrs: list[float],
    smooth_f: float,
    diverge_th: float,
    rise_stop: float | None,
    callbacks: Callbacks,
    device: torch.device,
    sync_every: int,
) -> Curve:
    curve, best, cycle, weight = Curve(), math.inf, _Cycle(batches), trend_weight(smooth_f)
    model.train()  # once, not per step: it walks every module
    for start in range(0, len(lrs), sync_every):
        if callbacks.should_stop():
            curve.stop_reason = "cancelled"
            break
        chunk = lrs[start : start + sync_every]
        pending = []
        for lr in chunk:
            _set_lr(optimizer, lr)
            pending.append(_train_step(model, optimizer, criterion, next(cycle), device))
        for i, (lr, loss) in enumerate(zip(chunk, torch.stack(pending).tolist()), start=start):
            if not math.isfinite(loss):  # not recorded: a NaN would poison the smoothing and the plot
                return curve.stop("diverged", lr)
            trend = _smoothed(curve.trend_losses, loss, weight)
            best = min(best, trend)
            curve.lrs.append(lr)
            curve.losses.append(loss)
            curve.smoothed_losses.append(_smoothed(curve.smoothed_losses, loss, smooth_f))
            curve.trend_losses.append(trend)
            if (i + 1) % PROGRESS_EVERY == 0 and i + 1 < len(lrs):
                callbacks.on_progress(curve.progress(len(lrs)))
            if trend > diverge_th * best:
                return curve.stop("diverged", lr)
            if _rose_back(curve.trend_losses[0], best, trend, rise_stop):
                return curve.stop("rise_stop", lr)
    return curve


def _rose_back(first: float, best: float, trend: float, rise_stop: float | None) -> bool:
    """True once a trend that fell clearly (RISE_MIN_FALL below its first value) has climbed back
    rise_stop of that fall: the sweep has left its minimum, the rest is the diverging part."""
    if rise_stop is None or best > (1 - RISE_MIN_FALL) * first:
        return False
    return trend > best + rise_stop * (first - best)


def range_test(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    batches: Iterable[Sequence[torch.Tensor]],
    *,
    criterion: Criterion,
    start_lr: float,
    end_lr: float,
    num_iter: int,
    step_mode: str = "exp",
    smooth_f: float = 0.05,
    diverge_th: float = 5.0,
    rise_stop: float | None = None,
    callbacks: Callbacks | None = None,
    sync_every: int | None = None,
) -> Curve:
    """Train one batch per iteration at a growing LR and record the loss; restores model and optimizer
    and leaves no gradients behind.

    `batches` yields (inputs, labels, ...) and is started again when it runs out. The model's device
    is the one used. Stops early on divergence (stop_reason "diverged", diverged_at_lr set: a NaN/inf
    loss, or the trend above diverge_th x its best), with rise_stop once the trend is back up rise_stop
    of its fall ("rise_stop"), or when callbacks.should_stop() says so ("cancelled"), keeping what was
    recorded; stopped_at_lr is the LR of an early stop's last iteration. Losses are read from the
    device every `sync_every` iterations (None: default_sync_every), which is also how often the
    cancel hook is polled; the curve is the same for every value. Progress (`Curve.progress`: the
    curve so far with it) goes to callbacks every PROGRESS_EVERY iterations and once at the end."""
    _check_range(start_lr, end_lr, num_iter, step_mode, smooth_f)
    device = next(model.parameters()).device
    if sync_every is None:
        sync_every = default_sync_every(device)
    if sync_every < 1:
        raise ValueError(f"sync_every must be >= 1; got {sync_every}")
    lrs = [lr_at(i, start_lr=start_lr, end_lr=end_lr, num_iter=num_iter, step_mode=step_mode) for i in range(num_iter)]
    callbacks = callbacks or NullCallbacks()
    model_state = copy.deepcopy(model.state_dict())
    optimizer_state = copy.deepcopy(optimizer.state_dict())
    was_training = model.training
    try:
        curve = _sweep(
            model,
            optimizer,
            batches,
            criterion,
            lrs,
            smooth_f,
            diverge_th,
            rise_stop,
            callbacks,
            device,
            sync_every,
        )
        callbacks.on_progress(curve.progress(num_iter, final=True))  # also where it stopped early
        return curve
    finally:
        model.load_state_dict(model_state)
        optimizer.load_state_dict(optimizer_state)
        optimizer.zero_grad(set_to_none=True)  # the sweep's last gradients belong to no restored state
        model.train(was_training)


def steepest(lrs: np.ndarray, losses: np.ndarray) -> float:
    """pytorch-lr-finder's suggestion: the LR where np.gradient of the (trimmed) loss is lowest, here
    over a curve that ends at its minimum and leaving that last point out: its one-sided gradient is
    the last drop into the minimum, which on a raw (smooth_f 0) curve is often just noise."""
    return float(lrs[int(np.gradient(losses)[:-1].argmin())])


def valley_index(losses: np.ndarray) -> int:
    """fastai's `valley` (2.7): the longest decreasing subsequence ending at each point (DP), then
    the index about 2/3 into the longest one, with fastai's arithmetic: the valley "starts" at
    max_end - length (one before its first point) and idx = start + int(len/3) + int(len/6).

    One deviation: fastai's index is -1 for a 2-point valley at the very start, which Python wraps
    to the last point of the curve; here it is clamped to 0."""
    losses = np.asarray(losses, dtype=float)
    lds = np.ones(losses.size, dtype=np.int64)
    max_start = max_end = 0
    for i in range(1, losses.size):
        higher = losses[:i] > losses[i]
        if higher.any():
            lds[i] = lds[:i][higher].max() + 1
        if lds[i] > lds[max_end]:  # a strictly longer valley; ties keep the earlier one, as fastai
            max_start, max_end = i - int(lds[i]), i
    sections = (max_end - max_start) / 3
    return max(0, max_start + int(sections) + int(sections / 2))


def _skip(n: int, skip: int) -> int:
    """The rule's own trim of the curve's start when enough is left, else 10% of it."""
    return skip if n - skip >= 2 else n // 10


def descent(trend_losses: Iterable[float], *, num_iter: int) -> slice:
    """The descending part of a trend: from fastai's start trim (num_iter // 10) to the trend's
    minimum, inclusive. Every suggestion is looked for here and nowhere else. Empty (start == stop)
    when the curve never clearly fell: its lowest point lies inside the start trim, or not
    DESCENT_MIN_FALL below its first value."""
    y = np.asarray(list(trend_losses), dtype=float)
    first = _skip(y.size, num_iter // 10)
    if y.size == 0:
        return slice(0, 0)
    lowest = int(y.argmin())
    if lowest < first or y[lowest] > (1 - DESCENT_MIN_FALL) * y[0]:
        return slice(first, first)
    return slice(first, lowest + 1)


def suggest(lrs: Iterable[float], trend_losses: Iterable[float], *, num_iter: int) -> dict[str, float | None]:
    """{"steepest", "valley", "minimum_div10"} from the trend's descending part (`descent`), so each
    lies at or before the trend's minimum; all None when the curve never clearly fell, steepest None
    where that part is too short.

    steepest: torch-lr-finder's np.gradient rule after its 10-point start trim (within the descent);
    valley: fastai's; minimum_div10: the LR of the trend's minimum over ten."""
    x, y = np.asarray(list(lrs), dtype=float), np.asarray(list(trend_losses), dtype=float)
    if x.shape != y.shape:
        raise ValueError(f"lrs and trend_losses must have one length; got {x.size} and {y.size}")
    result: dict[str, float | None] = {"steepest": None, "valley": None, "minimum_div10": None}
    part = descent(y, num_iter=num_iter)
    if part.stop <= part.start:
        return result
    result["valley"] = float(x[part][valley_index(y[part])])
    result["minimum_div10"] = float(x[part.stop - 1]) / 10
    first = max(part.start, _skip(part.stop, STEEPEST_SKIP[0]))
    if part.stop - first >= 2:  # np.gradient needs two points
        result["steepest"] = steepest(x[first : part.stop], y[first : part.stop])
    return result


def build_metrics(curve: Curve, *, num_iter: int, seconds: float) -> dict[str, Any]:
    """The contract's LR-finder metrics (without job_id/status); JSON-safe, no NaN."""
    suggestions = suggest(curve.lrs, curve.trend_losses, num_iter=num_iter)
    return {
        "lrs": list(curve.lrs),
        "losses": list(curve.losses),
        "smoothed_losses": list(curve.smoothed_losses),
        "trend_losses": list(curve.trend_losses),
        "suggested_lr": suggestions["steepest"],
        "suggestions": suggestions,
        "diverged_at_lr": curve.diverged_at_lr,
        "stopped_at_lr": curve.stopped_at_lr,
        "stop_reason": curve.stop_reason,
        "num_iter": num_iter,
        "seconds": round(seconds, 3),
    }


def run_lr_finder(
    spec: LRFinderSpec,
    *,
    data_dir: Path,
    out_dir: Path,
    callbacks: Callbacks | None = None,
    device: str | torch.device | None = None,
    num_workers: int | None = None,
) -> LRFinderResult:
    """The LR range test of a spec: writes out_dir/metrics.json and out_dir/lr_finder.png.

    num_workers: data-loading processes; None = 0 on CPU (2 cores keep up), up to 8 on a GPU."""
    device = resolve_device(device)
    callbacks = callbacks or NullCallbacks()
    bundle, _ = load_data(spec, Path(data_dir), callbacks=callbacks)
    run = set_up(spec, bundle, lr=spec.start_lr, device=device, num_workers=num_workers)
    started = time.perf_counter()
    curve = range_test(
        run.model,
        run.optimizer,
        run.loaders.train,
        criterion=nn.CrossEntropyLoss(label_smoothing=spec.label_smoothing),
        start_lr=spec.start_lr,
        end_lr=spec.end_lr,
        num_iter=spec.num_iter,
        step_mode=spec.step_mode,
        smooth_f=spec.smooth_f,
        diverge_th=spec.diverge_th,
        rise_stop=spec.rise_stop,
        callbacks=callbacks,
    )
    metrics = build_metrics(curve, num_iter=spec.num_iter, seconds=time.perf_counter() - started)
    metrics["warnings"] = list(run.transforms.warnings)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    write_json(out_dir / "metrics.json", metrics, allow_nan=False)
    part = descent(curve.trend_losses, num_iter=spec.num_iter)
    plot = plot_lr_finder(
        curve.lrs,
        curve.losses,
        curve.smoothed_losses,
        metrics["suggestions"],
        out_dir / "lr_finder.png",
        log_x=spec.step_mode == "exp",
        minimum_lr=curve.lrs[part.stop - 1] if part.stop > part.start else None,
        trend_losses=curve.trend_losses,
    )
    return LRFinderResult(metrics=metrics, stop_reason=curve.stop_reason, artifacts=[plot])
