"""What a finished training run leaves for a person: curves, confusion matrix, misclassified images
and GradCAM grids, all computed with the best checkpoint."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from ml import plots
from ml.checkpoints import load_model
from ml.gradcam import cam_for_batch, overlay
from ml.loaders import denormalize

if TYPE_CHECKING:
    from ml.trainer import Trainer

GRID_SIZE = 25  # tiles in the samples and misclassified grids (5x5)
CORRECT_CAMS = 10  # correctly classified images shown with GradCAM, for contrast
CAM_TILE_PX = 128  # a 32x32 image upscaled 4x so a person can see what the CAM points at


def write_report(trainer: Trainer, *, best_folder: Path, metrics: dict[str, Any]) -> list[Path]:
    """Writes every PNG artifact into `trainer.out_dir`; fills `metrics["per_class_accuracy"]`."""
    out, bundle = trainer.out_dir, trainer.bundle
    model, _ = load_model(best_folder, device=trainer.device)
    _, _, predictions = trainer.evaluate(model)
    labels = bundle.test.labels
    metrics["per_class_accuracy"] = per_class_accuracy(predictions, labels, bundle.classes)

    paths = {name: out / f"{name}.png" for name in (
        "accuracy", "loss", "lr", "confusion_matrix", "samples", "misclassified")}
    plots.plot_accuracy(trainer.epochs, paths["accuracy"])
    plots.plot_loss(trainer.epochs, paths["loss"], label_smoothing=trainer.spec.label_smoothing)
    plots.plot_lr(trainer.step_lrs, paths["lr"])
    plots.plot_confusion(confusion_matrix(predictions, labels, len(bundle.classes)), bundle.classes,
                         paths["confusion_matrix"])
    _plot_samples(trainer, paths["samples"])
    wrong = np.flatnonzero(predictions != labels)
    titles = [_title(bundle.classes, predictions[i], labels[i]) for i in wrong[:GRID_SIZE]]
    plots.plot_image_grid(bundle.test.images[wrong[:GRID_SIZE]], titles, paths["misclassified"],
                          suptitle=f"Misclassified test images ({len(wrong)} of {len(labels)})")
    written = list(paths.values())
    if trainer.spec.gradcam_misclassified > 0:
        written += _gradcam_grids(trainer, model, predictions)
    return written


def per_class_accuracy(predictions: np.ndarray, labels: np.ndarray, classes: list[str]) -> dict[str, float]:
    result = {}
    for index, name in enumerate(classes):
        mask = labels == index
        result[name] = round(float((predictions[mask] == index).mean()), 6) if mask.any() else None
    return result


def confusion_matrix(predictions: np.ndarray, labels: np.ndarray, num_classes: int) -> np.ndarray:
    """Rows are true classes, columns predicted ones."""
    flat = labels.astype(np.int64) * num_classes + predictions.astype(np.int64)
    return np.bincount(flat, minlength=num_classes**2).reshape(num_classes, num_classes)


def _title(classes: list[str], pred: int, true: int) -> str:
    return f"pred: {classes[pred]} / true: {classes[true]}"


def _plot_samples(trainer: Trainer, path: Path) -> None:
    """A batch exactly as the model sees it in training, so a user can judge the augmentation."""
    x, y = next(iter(trainer.train_loader))
    bundle = trainer.bundle
    images = denormalize(x[:GRID_SIZE], mean=bundle.mean, std=bundle.std)
    titles = [bundle.classes[int(label)] for label in y[:GRID_SIZE]]
    plots.plot_image_grid(images, titles, path, suptitle="Augmented training samples")


def normalize_images(images: np.ndarray, *, mean: tuple[float, ...], std: tuple[float, ...]) -> torch.Tensor:
    """uint8 (N,H,W,C) -> normalized float32 (N,C,H,W), as the eval transform does."""
    # contiguous: a permuted (channels_last-strided) batch sends torch 2.14.1's CPU oneDNN convolution
    # down a path that corrupts memory at odd batch sizes (see ml.runtime.memory_format)
    x = torch.from_numpy(images).float().div_(255).permute(0, 3, 1, 2).contiguous()
    return (x - torch.tensor(mean).view(1, -1, 1, 1)) / torch.tensor(std).view(1, -1, 1, 1)


def _cam_grid(trainer: Trainer, model: torch.nn.Module, indices: np.ndarray, targets: np.ndarray,
              predictions: np.ndarray, path: Path, suptitle: str) -> Path:
    bundle = trainer.bundle
    images = bundle.test.images[indices]
    x = normalize_images(images, mean=bundle.mean, std=bundle.std).to(trainer.device)
    cams = cam_for_batch(model, x, targets=[int(t) for t in targets], method="gradcam")
    tiles = np.stack([overlay(image, cam, size=CAM_TILE_PX) for image, cam in zip(images, cams)])
    titles = [_title(bundle.classes, predictions[i], bundle.test.labels[i]) for i in indices]
    plots.plot_image_grid(tiles, titles, path, suptitle=suptitle)
    return path


def _gradcam_grids(trainer: Trainer, model: torch.nn.Module, predictions: np.ndarray) -> list[Path]:
    out, labels = trainer.out_dir, trainer.bundle.test.labels
    wrong = np.flatnonzero(predictions != labels)[: trainer.spec.gradcam_misclassified]
    right = np.flatnonzero(predictions == labels)[:CORRECT_CAMS]
    written = []
    if len(wrong):
        written.append(_cam_grid(trainer, model, wrong, predictions[wrong], predictions,
                                 out / "gradcam_misclassified.png", "GradCAM for the predicted class"))
        written.append(_cam_grid(trainer, model, wrong, labels[wrong], predictions,
                                 out / "gradcam_misclassified_true.png", "GradCAM for the true class"))
    if len(right):
        written.append(_cam_grid(trainer, model, right, predictions[right], predictions,
                                 out / "gradcam_correct.png", "GradCAM on correctly classified images"))
    return written
