"""The PNG artifacts of a run: one function per artifact, each writes one file and closes its figure.

Matplotlib runs headless (Agg): workers have no display. Every function takes plain lists and
arrays, never tensors, so it can be called from the trainer, the LR finder or a notebook."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # before pyplot: no display on a worker

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

DPI = 110  # 6.4 x 4.4 inch curves come out about 700 x 480 pixels
CURVE_SIZE = (6.4, 4.4)  # inches
TILE_INCHES = 2.2  # one grid tile: a 32x32 image and a two-part title stay readable
TITLE_CHARS = 36  # characters of 9-point text that fit on one 2.2-inch tile
LOG_SPAN = 100.0  # an LR curve spanning more than two decades gets a log axis


def _save(fig: Figure, path: Path | str) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fig.savefig(path, dpi=DPI, format="png")
    finally:
        plt.close(fig)
    return path


def _note_empty(ax: Axes, what: str) -> None:
    ax.text(0.5, 0.5, f"no {what} recorded", ha="center", va="center", transform=ax.transAxes)


def _series(epochs: Sequence[Mapping[str, Any]], key: str, scale: float = 1.0) -> list[float]:
    values = [record.get(key) for record in epochs]
    return [math.nan if v is None else float(v) * scale for v in values]


def _plot_epochs(
    epochs: Sequence[Mapping[str, Any]],
    path: Path | str,
    *,
    keys: dict[str, str],
    scale: float,
    ylabel: str,
    title: str,
) -> Path:
    fig, ax = plt.subplots(figsize=CURVE_SIZE, layout="constrained")
    if epochs:
        x = [int(record.get("epoch", i + 1)) for i, record in enumerate(epochs)]
        for key, label in keys.items():
            ax.plot(x, _series(epochs, key, scale), marker="o", markersize=3, label=label)
        ax.legend()
        locator = ax.xaxis.get_major_locator()
        if isinstance(locator, MaxNLocator):  # the default AutoLocator is one
            locator.set_params(integer=True)
    else:
        _note_empty(ax, "epochs")
    ax.set(xlabel="epoch", ylabel=ylabel, title=title)
    ax.grid(alpha=0.3)
    return _save(fig, path)


def plot_accuracy(epochs: Sequence[Mapping[str, Any]], path: Path | str) -> Path:
    """Train and test accuracy per epoch, in percent (records hold fractions)."""
    return _plot_epochs(
        epochs,
        path,
        keys={"train_acc": "train", "test_acc": "test"},
        scale=100.0,
        ylabel="accuracy (%)",
        title="Accuracy per epoch",
    )


def loss_labels(label_smoothing: float) -> dict[str, str]:
    """What each loss curve is: the train loss is the training criterion (label-smoothed when asked),
    the test loss always plain cross-entropy; with smoothing the two are not on one scale."""
    if label_smoothing == 0:
        return {"train_loss": "train", "test_loss": "test"}
    return {
        "train_loss": f"train (label-smoothed {label_smoothing:g} cross-entropy)",
        "test_loss": "test (plain cross-entropy)",
    }


def plot_loss(epochs: Sequence[Mapping[str, Any]], path: Path | str, *, label_smoothing: float = 0.0) -> Path:
    """Train and test loss per epoch, each labelled with what it measures (loss_labels)."""
    return _plot_epochs(
        epochs,
        path,
        keys=loss_labels(label_smoothing),
        scale=1.0,
        ylabel="cross-entropy loss",
        title="Loss per epoch",
    )


def plot_history(
    epochs: Sequence[Mapping[str, Any]], out_dir: Path | str, *, label_smoothing: float = 0.0
) -> list[Path]:
    """accuracy.png and loss.png in out_dir (the two curves of a train run)."""
    out_dir = Path(out_dir)
    return [
        plot_accuracy(epochs, out_dir / "accuracy.png"),
        plot_loss(epochs, out_dir / "loss.png", label_smoothing=label_smoothing),
    ]


def plot_lr(lrs: Sequence[float], path: Path | str) -> Path:
    """The learning rate at every optimizer step; log y-axis when it spans more than two decades."""
    fig, ax = plt.subplots(figsize=CURVE_SIZE, layout="constrained")
    values = np.asarray(lrs, dtype=float)
    if values.size:
        ax.plot(np.arange(1, values.size + 1), values)
        positive = values[values > 0]
        if positive.size and positive.max() / positive.min() > LOG_SPAN:
            ax.set_yscale("log")
    else:
        _note_empty(ax, "steps")
    ax.set(xlabel="step", ylabel="learning rate", title="Learning rate per step")
    ax.grid(alpha=0.3)
    return _save(fig, path)


def plot_confusion(matrix: np.ndarray, classes: Sequence[str], path: Path | str) -> Path:
    """Counts in the cells, colour by row (the fraction of each true class), names on both axes."""
    matrix = np.asarray(matrix)
    k = len(classes)
    if matrix.shape != (k, k):
        raise ValueError(f"confusion matrix must be ({k}, {k}) for {k} classes; got shape {matrix.shape}")
    rows = matrix.sum(axis=1, keepdims=True)
    normalized = np.divide(matrix, rows, out=np.zeros(matrix.shape, dtype=float), where=rows > 0)
    side = max(5.0, 0.55 * k + 2.5)  # inches: about half an inch per class
    fig, ax = plt.subplots(figsize=(side + 1.0, side), layout="constrained")
    image = ax.imshow(normalized, cmap="Blues", vmin=0.0, vmax=1.0)
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label="fraction of the true class")
    ax.set_xticks(range(k), labels=list(classes), rotation=45, ha="right", rotation_mode="anchor")
    ax.set_yticks(range(k), labels=list(classes))
    ax.set(xlabel="predicted", ylabel="true", title="Confusion matrix (test set)")
    if k <= 40:  # beyond that the numbers no longer fit in their cells
        fontsize = 9 if k <= 12 else 6
        for i in range(k):
            for j in range(k):
                colour = "white" if normalized[i, j] > 0.5 else "black"
                ax.text(j, i, str(int(matrix[i, j])), ha="center", va="center", color=colour, fontsize=fontsize)
    return _save(fig, path)


def _as_tiles(images: np.ndarray) -> np.ndarray:
    images = np.asarray(images)
    if images.dtype != np.uint8:
        raise ValueError(f"images must be uint8 (N, H, W, C); got dtype {images.dtype}")
    if images.ndim == 3:  # (N, H, W): grayscale without a channel axis
        return images
    if images.ndim != 4 or images.shape[-1] not in (1, 3, 4):
        raise ValueError(f"images must be (N, H, W) or (N, H, W, C) with C in 1, 3, 4; got shape {images.shape}")
    return images[..., 0] if images.shape[-1] == 1 else images


def _fit_title(title: str) -> str:
    """A title too long for one tile line breaks at its " / " ("pred: ... / true: ...")."""
    return title.replace(" / ", "\n", 1) if len(title) > TITLE_CHARS else title


def plot_image_grid(
    images: np.ndarray,
    titles: Sequence[str],
    path: Path | str,
    *,
    suptitle: str | None = None,
    columns: int = 5,
) -> Path:
    """Tiles of uint8 images, each with its title (e.g. "pred: cat / true: dog"); grayscale or colour."""
    tiles = _as_tiles(images)
    if len(titles) != len(tiles):
        raise ValueError(f"need one title per image: got {len(titles)} titles for {len(tiles)} images")
    if columns < 1:
        raise ValueError(f"columns must be >= 1; got {columns}")
    n = len(tiles)
    cols = max(1, min(columns, n))
    rows = max(1, math.ceil(n / cols))
    header = 0.5 if suptitle else 0.0  # inches for the figure title
    fig, axes = plt.subplots(
        rows, cols, figsize=(TILE_INCHES * cols, TILE_INCHES * rows + header), squeeze=False, layout="constrained"
    )
    for index, ax in enumerate(axes.flat):
        ax.axis("off")
        if index >= n:
            continue
        tile = tiles[index]
        gray = tile.ndim == 2
        ax.imshow(tile, cmap="gray" if gray else None, vmin=0, vmax=255, interpolation="nearest")
        # y given: the title is not moved clear of the (hidden) axis, which measured every tick label
        # and took a third of a 25-tile grid's time
        ax.set_title(_fit_title(titles[index]), fontsize=9, y=1.0)
    if n == 0:
        _note_empty(axes[0, 0], "images")
    if suptitle:
        fig.suptitle(suptitle, fontsize=12)
    return _save(fig, path)


def _marker_y(lr: float, lrs: np.ndarray, losses: np.ndarray, log_x: bool) -> float:
    """The curve's height at lr (a suggestion such as minimum/10 may fall between or before points)."""
    if log_x:
        return float(np.interp(math.log10(lr), np.log10(lrs), losses))
    return float(np.interp(lr, lrs, losses))


def plot_lr_finder(
    lrs: Sequence[float],
    losses: Sequence[float],
    smoothed_losses: Sequence[float],
    suggestions: Mapping[str, float | None],
    path: Path | str,
    *,
    log_x: bool = True,
    minimum_lr: float | None = None,
    trend_losses: Sequence[float] | None = None,
) -> Path:
    """The LR range test: smoothed loss against LR, the raw loss faint, each suggestion marked, and
    the minimum (the end of the descending part the suggestions come from) as a dotted line. The
    trend the suggestions are read from is drawn too where it is not the smoothed loss itself."""
    x = np.asarray(lrs, dtype=float)
    raw = np.asarray(losses, dtype=float)
    smooth = np.asarray(smoothed_losses, dtype=float)
    trend = smooth if trend_losses is None else np.asarray(trend_losses, dtype=float)
    if not (x.shape == raw.shape == smooth.shape == trend.shape):
        raise ValueError(
            "lrs, losses, smoothed_losses and trend_losses must have one length; "
            f"got {x.size}, {raw.size}, {smooth.size}, {trend.size}"
        )
    own_trend = not np.array_equal(trend, smooth)
    fig, ax = plt.subplots(figsize=CURVE_SIZE, layout="constrained")
    if x.size:
        ax.plot(x, raw, color="tab:blue", alpha=0.25, linewidth=1, label="loss")
        ax.plot(x, smooth, color="tab:blue", linewidth=1 if own_trend else 2, label="smoothed loss")
        if own_trend:
            ax.plot(x, trend, color="black", linewidth=2, label="trend (suggestions)")
        markers = ("o", "s", "D", "^", "v")
        for i, (name, lr) in enumerate(suggestions.items()):
            if lr is None or not math.isfinite(lr) or lr <= 0:
                continue
            y = _marker_y(lr, x, trend, log_x)
            ax.plot(
                [lr],
                [y],
                linestyle="none",
                marker=markers[i % len(markers)],
                markersize=max(6, 14 - 3 * i),
                markeredgecolor="white",
                color=f"C{i + 1}",
                label=f"{name}: {lr:.1e}",
                zorder=3 + i,
            )
            # later markers are smaller and on top: suggestions that coincide stay visible
        if minimum_lr is not None:
            name = "trend" if own_trend else "smoothed"
            ax.axvline(minimum_lr, color="grey", linestyle=":", label=f"{name} minimum: {minimum_lr:.1e}")
        low, high = min(smooth.min(), trend.min()), max(smooth.max(), trend.max())
        span = float(high - low) or abs(float(high)) or 1.0
        ax.set_ylim(float(low) - 0.1 * span, float(high) + 0.1 * span)
        if log_x and x.min() > 0:
            ax.set_xscale("log")
        ax.legend()
    else:
        _note_empty(ax, "iterations")
    ax.set(xlabel="learning rate", ylabel="loss", title="LR range test")
    ax.grid(alpha=0.3)
    return _save(fig, path)


def plot_reliability(calibration: Mapping[str, Any], path: Path | str) -> Path:
    """The reliability diagram of `calibration` (ml.calibration): each bin's accuracy against its mean
    confidence, before and after the temperature, with the diagonal a calibrated model would follow."""
    fig, ax = plt.subplots(figsize=(4.8, 4.4), layout="constrained")
    ax.plot([0, 1], [0, 1], color="0.6", linestyle="--", linewidth=1, label="calibrated")
    temperature = calibration["temperature"]
    note = "" if temperature["applied"] else ", not applied"
    for key, label, marker in (
        (None, f"test, ECE {calibration['ece']:.3f}", "o"),
        ("calibrated", f"T={temperature['value']:.2f}{note}, ECE {calibration['calibrated']['ece']:.3f}", "s"),
    ):
        bins = (calibration if key is None else calibration[key])["bins"]
        used = [b for b in bins if b["count"]]
        ax.plot([b["confidence"] for b in used], [b["accuracy"] for b in used], marker=marker, label=label)
    ax.set(xlim=(0, 1), ylim=(0, 1), xlabel="confidence (top-1 probability)", ylabel="accuracy")
    ax.set_title("Reliability (test set, 15 bins)")
    ax.legend(loc="upper left", fontsize=8)
    ax.grid(alpha=0.3)
    return _save(fig, path)
