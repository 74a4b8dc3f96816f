"""What a finished training run leaves for a person: curves, confusion matrix, misclassified images
and GradCAM grids, and every test example as data (examples.json with overlays, ml.examples), all
from the best checkpoint's model. The report receives plain data (`Report`) and knows nothing of the
trainer."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from ml import examples, plots
from ml.examples import Examples, confusion_matrix, overlay_indices
from ml.gradcam import cam_for_batch, overlay, overlay_size
from ml.normalization import Normalization

GRID_SIZE = 25  # tiles in the samples and misclassified grids (5x5)
CORRECT_CAMS = 10  # correctly classified images shown with GradCAM, for contrast
EXAMPLE_OVERLAY_SIZE = 96  # px: a 28-32 px test image upscaled 3x, a larger one shrunk to a tile's size
CAM_BATCH = 128  # test images explained per GradCAM pass for the examples' overlays


@dataclass(frozen=True)
class Report:
    """Everything the report shows, as plain data."""

    out_dir: Path
    epochs: list[dict[str, Any]]  # the per-epoch records
    step_lrs: list[float]  # the LR of every training step
    classes: list[str]
    test_images: np.ndarray  # uint8 (N, H, W, C)
    test_labels: np.ndarray  # (N,)
    predictions: np.ndarray  # the best model's class for each test image
    samples: tuple[torch.Tensor, torch.Tensor]  # one training batch as the model saw it: normalized x, y
    normalization: Normalization  # the model's input normalization (RunTransforms.normalization)
    label_smoothing: float = 0.0
    gradcam_count: int = 0  # misclassified test images explained with GradCAM
    test_time_flip: bool = False  # the model predicts on each image and its mirror: explain them both
    confidence: np.ndarray | None = None  # softmax probability of each prediction: with it, examples.json
    true_probability: np.ndarray | None = None  # softmax probability of each image's true class


def write_report(report: Report, model: torch.nn.Module) -> tuple[list[Path], dict[str, float | None]]:
    """Writes every PNG artifact into `report.out_dir`; returns them and the per-class accuracy.
    `model` is the best checkpoint's, on the device GradCAM should run on."""
    out, predictions, labels, classes = report.out_dir, report.predictions, report.test_labels, report.classes
    paths = {
        name: out / f"{name}.png" for name in ("accuracy", "loss", "lr", "confusion_matrix", "samples", "misclassified")
    }
    plots.plot_accuracy(report.epochs, paths["accuracy"])
    plots.plot_loss(report.epochs, paths["loss"], label_smoothing=report.label_smoothing)
    plots.plot_lr(report.step_lrs, paths["lr"])
    plots.plot_confusion(confusion_matrix(predictions, labels, len(classes)), classes, paths["confusion_matrix"])
    _plot_samples(report, paths["samples"])
    wrong = np.flatnonzero(predictions != labels)
    titles = [_title(classes, predictions[i], labels[i]) for i in wrong[:GRID_SIZE]]
    plots.plot_image_grid(
        report.test_images[wrong[:GRID_SIZE]],
        titles,
        paths["misclassified"],
        suptitle=f"Misclassified test images ({len(wrong)} of {len(labels)})",
    )
    written = list(paths.values())
    if report.gradcam_count > 0:
        written += _gradcam_grids(report, model)
    if report.confidence is not None and report.true_probability is not None:
        written.append(write_examples(report, model, report.confidence, report.true_probability))
    return written, per_class_accuracy(predictions, labels, classes)


def per_class_accuracy(predictions: np.ndarray, labels: np.ndarray, classes: list[str]) -> dict[str, float | None]:
    result = {}
    for index, name in enumerate(classes):
        mask = labels == index
        result[name] = round(float((predictions[mask] == index).mean()), 6) if mask.any() else None
    return result


def write_examples(
    report: Report, model: torch.nn.Module, confidence: np.ndarray, true_probability: np.ndarray
) -> Path:
    """examples.json for every test image, and examples/<index>.png, the GradCAM overlay of the predicted
    class, for the capped set ml.examples.overlay_indices chooses; returns examples.json's path."""
    table = Examples(
        classes=list(report.classes),
        true=report.test_labels.astype(np.int64),
        pred=report.predictions.astype(np.int64),
        confidence=confidence.astype(np.float64),
        true_probability=true_probability.astype(np.float64),
        overlays=overlay_indices(
            report.test_labels,
            report.predictions,
            confidence,
            misclassified=examples.MAX_MISCLASSIFIED_OVERLAYS,
            correct_each_end=examples.CORRECT_OVERLAYS_EACH_END,
        ),
        overlay_size=EXAMPLE_OVERLAY_SIZE,
        test_time_flip=report.test_time_flip,
    )
    folder = report.out_dir / examples.OVERLAY_FOLDER
    folder.mkdir(exist_ok=True)
    for stale in folder.glob("*.png"):  # a resumed run's earlier report: only this table's overlays stay
        stale.unlink()
    device = next(model.parameters()).device
    for start in range(0, len(table.overlays), CAM_BATCH):
        indices = table.overlays[start : start + CAM_BATCH]
        images = report.test_images[indices]
        x = report.normalization.normalize(torch.from_numpy(images).to(device))
        targets = [int(t) for t in table.pred[indices]]
        cams = cam_for_batch(model, x, targets=targets, method="gradcam", flip=report.test_time_flip)
        for index, image, cam in zip(indices, images, cams):
            # zlib level 6 (PIL's default): 8.6 KB for a 96 px overlay in 0.9 ms, where to_png_bytes's
            # level 1 (made for /predict's latency) took 14 KB; these files are written once, kept for good
            Image.fromarray(overlay(image, cam, size=EXAMPLE_OVERLAY_SIZE)).save(folder / f"{index}.png")
    return examples.save(table, report.out_dir / examples.FILE_NAME)


def _title(classes: list[str], pred: int, true: int) -> str:
    return f"pred: {classes[pred]} / true: {classes[true]}"


def _plot_samples(report: Report, path: Path) -> None:
    """A batch exactly as the model sees it in training, so a user can judge the augmentation."""
    x, y = report.samples
    images = report.normalization.denormalize(x[:GRID_SIZE])
    titles = [report.classes[int(label)] for label in y[:GRID_SIZE]]
    plots.plot_image_grid(images, titles, path, suptitle="Augmented training samples")


def _cam_grid(
    report: Report, model: torch.nn.Module, indices: np.ndarray, targets: np.ndarray, path: Path, suptitle: str
) -> Path:
    images = report.test_images[indices]
    device = next(model.parameters()).device
    x = report.normalization.normalize(torch.from_numpy(images).to(device))
    cams = cam_for_batch(model, x, targets=[int(t) for t in targets], method="gradcam", flip=report.test_time_flip)
    size = overlay_size(images.shape[1])
    tiles = np.stack([overlay(image, cam, size=size) for image, cam in zip(images, cams)])
    titles = [_title(report.classes, report.predictions[i], report.test_labels[i]) for i in indices]
    plots.plot_image_grid(tiles, titles, path, suptitle=suptitle)
    return path


def _gradcam_grids(report: Report, model: torch.nn.Module) -> list[Path]:
    out, predictions, labels = report.out_dir, report.predictions, report.test_labels
    wrong = np.flatnonzero(predictions != labels)[: report.gradcam_count]
    right = np.flatnonzero(predictions == labels)[:CORRECT_CAMS]
    written = []
    if len(wrong):
        written.append(
            _cam_grid(
                report,
                model,
                wrong,
                predictions[wrong],
                out / "gradcam_misclassified.png",
                "GradCAM for the predicted class",
            )
        )
        written.append(
            _cam_grid(
                report,
                model,
                wrong,
                labels[wrong],
                out / "gradcam_misclassified_true.png",
                "GradCAM for the true class",
            )
        )
    if len(right):
        written.append(
            _cam_grid(
                report,
                model,
                right,
                predictions[right],
                out / "gradcam_correct.png",
                "GradCAM on correctly classified images",
            )
        )
    return written
