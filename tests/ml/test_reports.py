"""ml.reports: the GradCAM grids explain what the model predicted, with its mirror images when it
predicts with them (test-time flip)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from ml import reports
from ml.gradcam import cam_for_batch, overlay, overlay_size
from ml.models import build_model
from ml.normalization import Normalization
from ml.reports import Report, write_report
from ml.specs import ModelSpec

CLASSES = [f"c{i}" for i in range(10)]


@pytest.mark.parametrize("test_time_flip", [False, True])
def test_gradcam_grids_are_flip_averaged_when_the_model_predicts_with_the_mirror(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, test_time_flip: bool
) -> None:
    torch.manual_seed(0)
    model = build_model(ModelSpec(name="resnet18", width=8), in_channels=3, num_classes=len(CLASSES)).eval()
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (6, 32, 32, 3), dtype=np.uint8)
    labels, predictions = np.array([0, 1, 2, 3, 4, 5]), np.array([0, 1, 2, 9, 9, 9])
    normalization = Normalization.of([0.5] * 3, [0.25] * 3)
    report = Report(
        out_dir=tmp_path,
        epochs=[],
        step_lrs=[],
        classes=CLASSES,
        test_images=images,
        test_labels=labels,
        predictions=predictions,
        samples=(normalization.normalize(torch.from_numpy(images)), torch.from_numpy(labels)),
        normalization=normalization,
        gradcam_count=3,
        test_time_flip=test_time_flip,
    )
    grids: dict[str, np.ndarray] = {}
    monkeypatch.setattr(
        reports.plots, "plot_image_grid", lambda tiles, titles, path, **kwargs: grids.update({Path(path).name: tiles})
    )
    write_report(report, model)
    x = normalization.normalize(torch.from_numpy(images))

    def tiles(indices: list[int], targets: list[int], flip: bool) -> np.ndarray:
        cams = cam_for_batch(model, x[indices], targets=targets, flip=flip)
        return np.stack([overlay(images[i], cam, size=overlay_size(32)) for i, cam in zip(indices, cams)])

    wrong, right = [3, 4, 5], [0, 1, 2]
    expected = {
        "gradcam_misclassified.png": (wrong, [9, 9, 9]),
        "gradcam_misclassified_true.png": (wrong, [3, 4, 5]),
        "gradcam_correct.png": (right, [0, 1, 2]),
    }
    for name, (indices, targets) in expected.items():
        assert np.array_equal(grids[name], tiles(indices, targets, flip=test_time_flip)), name
        assert not np.array_equal(grids[name], tiles(indices, targets, flip=not test_time_flip)), name
