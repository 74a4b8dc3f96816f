"""When not to trust a finished run's best model, written beside its report: how well its confidence is
calibrated (ml.calibration: `calibration` in metrics.json, `reliability.png`, the fitted temperature in
the best checkpoint's manifest) and which held-out images it says are likely mislabelled
(ml.label_issues: `label_issues.json` and the GradCAM overlays of its first issues)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from ml import label_issues, plots
from ml.calibration import calibration, softmax
from ml.checkpoints import update_manifest
from ml.gradcam import cam_for_batch, overlay
from ml.label_issues import LabelIssues
from ml.normalization import Normalization

OVERLAY_SIZE = 96  # px, as the examples' overlays (ml.reports.EXAMPLE_OVERLAY_SIZE)
CAM_BATCH = 128  # images explained per GradCAM pass


@dataclass(frozen=True)
class HeldOut:
    """One held-out set as the best model saw it: its images, labels and the model's logits for them."""

    name: str  # "test" or "validation"
    images: np.ndarray  # uint8 (N, H, W, C)
    labels: np.ndarray  # int64 (N,)
    logits: np.ndarray  # float32 (N, K), test-time flip included when the spec has it


@dataclass
class Trust:
    calibration: dict[str, Any]
    artifacts: list[Path] = field(default_factory=list)


def write_trust(
    out_dir: Path,
    model: torch.nn.Module,
    *,
    test: HeldOut,
    validation: HeldOut | None,
    classes: list[str],
    normalization: Normalization,
    test_time_flip: bool,
    checkpoint: Path,
) -> Trust:
    """Calibration (on the test set; the temperature fitted on `validation` when given) and the likely
    label errors of `validation` (else of `test`); the temperature goes into `checkpoint`'s manifest."""
    fit = None if validation is None else (validation.logits, validation.labels)
    measured = calibration(test.logits, test.labels, fit)
    update_manifest(checkpoint, temperature=measured["temperature"])
    reliability = plots.plot_reliability(measured, out_dir / "reliability.png")
    scored = validation or test
    issues = label_issues.find(
        scored.labels, softmax(scored.logits), classes, set_name=scored.name, test_time_flip=test_time_flip
    )
    write_overlays(out_dir, [(model, normalization)], issues, scored.images)
    return Trust(measured, [reliability, label_issues.save(issues, out_dir / label_issues.FILE_NAME)])


def write_overlays(
    out_dir: Path,
    explainers: Sequence[tuple[torch.nn.Module, Normalization]],
    issues: LabelIssues,
    images: np.ndarray,
    *,
    explainer_of: np.ndarray | None = None,
) -> None:
    """label_issues/<index>_given.png and _predicted.png for the first `issues.overlays` issues, each
    explained by the (model, normalization) that scored it: `explainers[explainer_of[index]]` (a label
    audit's fold models), or the only one."""
    folder = out_dir / label_issues.OVERLAY_FOLDER
    folder.mkdir(exist_ok=True)
    for stale in folder.glob("*.png"):  # a resumed run's earlier report: only these issues' overlays stay
        stale.unlink()
    ranked = issues.index[: issues.overlays]
    owners = np.zeros(len(ranked), dtype=np.int64) if explainer_of is None else explainer_of[ranked]
    for owner, (model, normalization) in enumerate(explainers):
        positions = np.flatnonzero(owners == owner)  # ranks of the issues this model explains
        device = next(model.parameters()).device
        for start in range(0, len(positions), CAM_BATCH):
            chosen = positions[start : start + CAM_BATCH]
            indices = issues.index[chosen]
            batch = images[indices]
            x = normalization.normalize(torch.from_numpy(batch).to(device))
            for target in label_issues.TARGETS:
                classes = issues.given if target == "given" else issues.predicted
                targets = [int(c) for c in classes[chosen]]
                cams = cam_for_batch(model, x, targets=targets, method="gradcam", flip=issues.test_time_flip)
                for index, image, cam in zip(indices, batch, cams):
                    name = label_issues.overlay_name(int(index), target)
                    Image.fromarray(overlay(image, cam, size=OVERLAY_SIZE)).save(folder / name)
