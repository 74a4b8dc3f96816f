"""The probe set: a few test images a training run explains at every epoch, so that a person can watch
where the model looks as it learns, and judge at the end which explanation method to believe.

A run fixes its probes once (`choose_probes`: two test images a class drawn from the spec's seed, or
the spec's `probe_indices`) and writes them to `probes/set.npz`. After each epoch's evaluation
`Probes.record` explains them in one batched GradCAM pass (of the predicted class, flip-averaged with
test_time_flip) and writes `probes/epoch_<N>.npz`: the maps as uint8 at most MAP_SIDE px a side, the
predicted class, its probability and the true class's. `attention_drift` compares each probe's map
with the previous epoch's; `faithfulness` scores GradCAM and GradCAM++ on the probes with
pytorch-grad-cam's ROAD metric."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
from pytorch_grad_cam.metrics.road import ROADCombined
from pytorch_grad_cam.utils.model_targets import ClassifierOutputSoftmaxTarget
from torch import nn

from ml.gradcam import METHODS, explain
from ml.models import mirror_mean
from ml.normalization import Normalization
from ml.probe_files import FOLDER, SET_FILE, epoch_file, recorded_epochs
from ml.specs import MAX_PROBE_INDICES as MAX_PROBES  # one probe a class past half as many classes

PROBES_PER_CLASS = 2  # test images a class when the spec names none
MAP_SIDE = 32  # px: a stored map's largest side; 28-32 px inputs keep their own resolution
# ROADCombined's removal thresholds (% of pixels): four of its nine defaults, half the imputations
# (each one a sparse linear solve per image) for a score that ranks the methods alike
FAITHFULNESS_PERCENTILES = (20, 40, 60, 80)
FAITHFULNESS_MEASURE = "ROADCombined"


def choose_probes(labels: np.ndarray, *, seed: int, indices: list[int] | None = None) -> np.ndarray:
    """The test indices to probe: `indices` (checked against the test set's size) or, drawn from `seed`,
    PROBES_PER_CLASS images of each class (one a class past MAX_PROBES // 2 classes, at most MAX_PROBES),
    ordered by class, then index."""
    if indices is not None:
        outside = [i for i in indices if not 0 <= i < len(labels)]
        if outside:
            raise ValueError(
                f"probe_indices {outside} are not test images: this run's test set has {len(labels)} "
                f"(indices 0-{len(labels) - 1})"
            )
        return np.asarray(indices, dtype=np.int64)
    rng = np.random.default_rng(seed)
    classes = np.unique(labels)
    each = PROBES_PER_CLASS if len(classes) * PROBES_PER_CLASS <= MAX_PROBES else 1
    picked = [
        np.sort(rng.choice(np.flatnonzero(labels == c), size=min(each, int((labels == c).sum())), replace=False))
        for c in classes[:MAX_PROBES]
    ]
    return np.concatenate(picked).astype(np.int64)


def attention_drift(previous: np.ndarray | None, current: np.ndarray) -> float | None:
    """The mean over probes of the Pearson correlation of each map (N, H, W) with its previous epoch's:
    1 when no map moved, near 0 when the model looks elsewhere. A probe whose map is constant in either
    epoch has no correlation and is left out; None without a previous epoch or any such pair."""
    if previous is None:
        return None
    a = previous.reshape(len(previous), -1).astype(np.float64)
    b = current.reshape(len(current), -1).astype(np.float64)
    a -= a.mean(axis=1, keepdims=True)
    b -= b.mean(axis=1, keepdims=True)
    norms = np.sqrt((a * a).sum(axis=1) * (b * b).sum(axis=1))
    defined = norms > 0
    if not defined.any():
        return None
    return round(float(((a * b).sum(axis=1)[defined] / norms[defined]).mean()), 6)


def small_maps(maps: np.ndarray) -> np.ndarray:
    """Maps (N, H, W) in [0, 1] as uint8, shrunk (area averaging) to MAP_SIDE a side when larger."""
    if max(maps.shape[1:]) > MAP_SIDE:
        maps = np.stack([cv2.resize(m, (MAP_SIDE, MAP_SIDE), interpolation=cv2.INTER_AREA) for m in maps])
    stored: np.ndarray = np.round(np.clip(maps, 0.0, 1.0) * 255).astype(np.uint8)
    return stored


def _save(path: Path, **arrays: np.ndarray) -> None:
    """An npz written whole or not at all: the API reads these while the run writes them."""
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("wb") as file:
        np.savez_compressed(file, **arrays)  # type: ignore[arg-type]
    os.replace(tmp, path)


class FlipAveraged(nn.Module):
    """A model evaluated with test-time flip as one module: its logits averaged with its mirror images'."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return mirror_mean(self.model(x), self.model(x.flip(3)))


@dataclass
class Probes:
    """A run's probe images and the maps of the last epoch recorded (the drift's reference)."""

    indices: np.ndarray  # (P,) positions in the test set
    images: np.ndarray  # uint8 (P, H, W, C)
    labels: np.ndarray  # (P,)
    normalization: Normalization
    flip: bool  # TrainSpec.test_time_flip: explained as evaluated
    folder: Path
    previous: np.ndarray | None = None

    @classmethod
    def create(
        cls,
        test_images: np.ndarray,
        test_labels: np.ndarray,
        classes: list[str],
        *,
        seed: int,
        indices: list[int] | None,
        normalization: Normalization,
        flip: bool,
        out_dir: Path,
    ) -> Probes:
        """The run's probes (choose_probes), written to probes/set.npz with the class names."""
        chosen = choose_probes(test_labels, seed=seed, indices=indices)
        folder = out_dir / FOLDER
        folder.mkdir(parents=True, exist_ok=True)
        probes = cls(chosen, test_images[chosen], test_labels[chosen].astype(np.int64), normalization, flip, folder)
        _save(
            folder / SET_FILE, indices=chosen, images=probes.images, labels=probes.labels, classes=np.asarray(classes)
        )
        return probes

    def inputs(self, model: nn.Module) -> torch.Tensor:
        device = next(model.parameters()).device
        return self.normalization.normalize(torch.from_numpy(self.images).to(device))

    def record(self, model: nn.Module, epoch: int) -> float | None:
        """Explains the probes with `model` (one batched pass), writes probes/epoch_<epoch>.npz and returns
        the attention drift from the previous epoch's stored maps."""
        logits, maps, predicted = explain(model, self.inputs(model), method="gradcam", flip=self.flip)
        probabilities = logits.float().softmax(1).cpu().numpy()
        rows = np.arange(len(predicted))
        stored = small_maps(maps)
        _save(
            epoch_file(self.folder, epoch),
            maps=stored,
            predicted=np.asarray(predicted, dtype=np.int64),
            confidence=probabilities[rows, predicted].astype(np.float32),
            true_probability=probabilities[rows, self.labels].astype(np.float32),
        )
        drift = attention_drift(self.previous, stored)
        self.previous = stored
        return drift

    def restore(self, epoch: int) -> None:
        """For a resumed run at `epoch`: that epoch's maps are the next drift's reference, and the maps
        of later epochs (the interrupted run's, no longer in its metrics) are removed."""
        path = epoch_file(self.folder, epoch)
        self.previous = np.load(path)["maps"] if path.is_file() else None
        for later in recorded_epochs(self.folder):
            if later > epoch:
                epoch_file(self.folder, later).unlink()

    def faithfulness(self, model: nn.Module, *, seed: int) -> dict[str, Any]:
        """ROADCombined (pytorch-grad-cam) of GradCAM's and GradCAM++'s maps of the predicted class on the
        probes, averaged over them: the softmax probability lost by removing the least relevant pixels
        minus that lost by removing the most relevant, halved; higher is more faithful. The imputation's
        noise is drawn from `seed`, leaving the global generator as it was."""
        model.eval()
        x = self.inputs(model)
        scored = FlipAveraged(model) if self.flip else model
        result: dict[str, Any] = {"measure": FAITHFULNESS_MEASURE, "percentiles": list(FAITHFULNESS_PERCENTILES)}
        for method in METHODS:
            _, maps, predicted = explain(model, x, method=method, flip=self.flip)
            targets = [ClassifierOutputSoftmaxTarget(c) for c in predicted]
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(seed)
                scores = ROADCombined(percentiles=list(FAITHFULNESS_PERCENTILES))(x, maps, targets, scored)
            result[method] = round(float(np.mean(scores)), 6)
        return result | {"target": "predicted class (softmax probability)", "probes": len(self.indices)}
