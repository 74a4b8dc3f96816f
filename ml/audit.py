"""A label audit of the training set: K-fold cross-validated training, then confident learning.

The training images (after `train_subset`) are split into K folds, stratified by class and drawn from
the spec's seed (scikit-learn's StratifiedKFold). For each fold a model of the spec trains on the other
K-1 folds for the spec's epochs and then scores the fold's images: every training image gets its
probabilities from a model that never saw it, the out-of-fold probabilities confident learning needs.
cleanlab then finds and ranks the likely label errors of the whole training set (ml.label_issues), and
the first ones get GradCAM overlays of their given and predicted class from the fold model that scored
them (ml.trust.write_overlays).

What each fold leaves in `folds/<k>/` (its scores `scores.npz` and its model `model/`, a checkpoint)
is what a redelivered audit keeps: it starts again at the first fold without them."""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from sklearn.model_selection import StratifiedKFold

from ml import label_issues
from ml.calibration import softmax
from ml.checkpoints import load_model, save_checkpoint
from ml.data import DatasetBundle, ImageSet
from ml.models import unwrap
from ml.normalization import Normalization
from ml.progress import Callbacks, NullCallbacks
from ml.run import load_data
from ml.runtime import resolve_device, write_json
from ml.specs import AuditSpec
from ml.trainer import Trainer, resolved_lr
from ml.trust import write_overlays

FOLDS_FOLDER = "folds"
SCORES_FILE = "scores.npz"  # a fold's held-out indices and its model's logits for them
MODEL_FOLDER = "model"
# Flagging more than this share of the images says more about the fold models than about the labels:
# the ten benchmark datasets Northcutt et al. audited (2021) held 3.3% label errors on average.
MOST_PLAUSIBLE_ISSUES = 0.10


@dataclass
class AuditResult:
    metrics: dict[str, Any]
    stop_reason: str  # completed | cancelled
    artifacts: list[Path] = field(default_factory=list)


def fold_indices(labels: np.ndarray, folds: int, *, seed: int) -> list[np.ndarray]:
    """The held-out indices of each fold, sorted: disjoint, covering every image, each class spread
    evenly. ValueError naming the class when one has fewer images than folds."""
    counts = np.bincount(labels)
    present = np.flatnonzero(counts)
    if counts[present].min() < folds:
        scarce = int(present[np.argmin(counts[present])])
        raise ValueError(
            f"folds: class {scarce} has {int(counts[scarce])} training images, fewer than the {folds} folds; "
            "use fewer folds or more images (dataset.train_subset)"
        )
    splitter = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    return [np.sort(held) for _, held in splitter.split(np.zeros(len(labels)), labels)]


def weak_models_warning(flagged: int, images: int, accuracy: float) -> list[str]:
    """A warning when the audit flags more images than mislabelling plausibly explains: its fold models
    then mistake images they simply cannot classify yet for label errors."""
    if images == 0 or flagged / images <= MOST_PLAUSIBLE_ISSUES:
        return []
    return [
        f"{flagged} of {images} training images ({flagged / images:.0%}) are flagged, with an out-of-fold "
        f"accuracy of {accuracy:.1%}: more than mislabelling plausibly explains (a few percent in public "
        "datasets), so most are likely the fold models' own errors; train each fold longer (epochs) or on more "
        "images, then audit again"
    ]


class FoldCallbacks:
    """A fold's trainer reporting into the audit's progress: the fraction over all folds, the fold's
    number beside the trainer's own fields; its epoch records go to the fold's summary, not the job's."""

    def __init__(self, callbacks: Callbacks, fold: int, folds: int) -> None:
        self.callbacks, self.fold, self.folds = callbacks, fold, folds
        self.epochs: list[dict[str, Any]] = []

    def on_progress(self, progress: dict[str, Any]) -> None:
        fraction = (self.fold + float(progress.get("fraction") or 0.0)) / self.folds
        phase = progress.get("phase", "training")
        self.callbacks.on_progress(
            progress
            | {
                "phase": f"fold {self.fold + 1} of {self.folds}: {phase}",
                "fold": self.fold + 1,
                "folds": self.folds,
                "fraction": round(fraction, 4),
            }
        )

    def on_epoch(self, record: dict[str, Any]) -> None:
        self.epochs.append(record)

    def should_stop(self) -> bool:
        return self.callbacks.should_stop()


class Audit:
    def __init__(
        self,
        spec: AuditSpec,
        bundle: DatasetBundle,
        *,
        out_dir: Path,
        device: torch.device,
        callbacks: Callbacks,
        num_workers: int | None = None,
    ) -> None:
        self.spec, self.bundle, self.out_dir, self.device = spec, bundle, out_dir, device
        self.callbacks, self.num_workers = callbacks, num_workers
        self.held = fold_indices(bundle.train.labels, spec.folds, seed=spec.seed)

    def folder(self, fold: int) -> Path:
        return self.out_dir / FOLDS_FOLDER / str(fold + 1)

    def run(self) -> AuditResult:
        summaries: list[dict[str, Any]] = []
        for fold in range(self.spec.folds):
            summary = self.train_fold(fold)
            if summary is None:
                return AuditResult(self._metrics(summaries, stop_reason="cancelled"), "cancelled")
            summaries.append(summary)
        return self._finish(summaries)

    def train_fold(self, fold: int) -> dict[str, Any] | None:
        """Trains fold `fold`'s model and writes its scores (skipped when a previous delivery did);
        its summary, or None when the audit was cancelled."""
        folder, held = self.folder(fold), self.held[fold]
        scores = folder / SCORES_FILE
        if scores.is_file() and (folder / MODEL_FOLDER).is_dir():
            saved = np.load(scores)
            return {"fold": fold + 1, "images": len(held), "accuracy": float(saved["accuracy"]), "resumed": True}
        train = self.bundle.train
        kept = np.setdiff1d(np.arange(len(train)), held, assume_unique=True)
        fold_bundle = replace(
            self.bundle,
            train=ImageSet(train.images[kept], train.labels[kept]),
            test=ImageSet(train.images[held], train.labels[held]),
        )
        reporter = FoldCallbacks(self.callbacks, fold, self.spec.folds)
        folder.mkdir(parents=True, exist_ok=True)
        trainer = Trainer(
            self.spec.fold_spec(),
            fold_bundle,
            out_dir=folder,
            device=self.device,
            callbacks=reporter,
            num_workers=self.num_workers,
        )
        started = time.perf_counter()
        accuracy = 0.0
        for epoch in range(1, self.spec.epochs + 1):
            stats = trainer.train_epoch(epoch)
            if stats.stopped or self.callbacks.should_stop():
                return None
            loss, accuracy, _ = trainer.evaluate()
            trainer.schedule.after_epoch(test_acc=accuracy, test_loss=loss)
            reporter.on_epoch({"epoch": epoch, "train_loss": stats.loss, "held_out_acc": accuracy})
        model = unwrap(trainer.model)
        logits = trainer.held_out(model).logits
        save_checkpoint(folder / MODEL_FOLDER, model=model, manifest=trainer.manifest(self.spec.epochs, accuracy))
        tmp = folder / f".{SCORES_FILE}"
        with tmp.open("wb") as file:
            np.savez(file, held=held, logits=logits, accuracy=np.float64(accuracy))
        tmp.replace(scores)  # the fold counts as done only once its scores are whole
        return {
            "fold": fold + 1,
            "images": len(held),
            "accuracy": round(accuracy, 6),
            "seconds": round(time.perf_counter() - started, 3),
        }

    def _metrics(self, summaries: list[dict[str, Any]], *, stop_reason: str) -> dict[str, Any]:
        return {
            "folds": summaries,
            "scored": int(sum(s["images"] for s in summaries)),
            "images": len(self.bundle.train),
            "stop_reason": stop_reason,
        }

    def _finish(self, summaries: list[dict[str, Any]]) -> AuditResult:
        """Every image's out-of-fold probabilities, cleanlab's issues and their overlays, metrics.json."""
        self.callbacks.on_progress({"phase": "finding label issues", "fraction": 1.0})
        train = self.bundle.train
        logits = np.zeros((len(train), self.bundle.num_classes), dtype=np.float32)
        fold_of = np.zeros(len(train), dtype=np.int64)
        for fold in range(self.spec.folds):
            saved = np.load(self.folder(fold) / SCORES_FILE)
            logits[saved["held"]] = saved["logits"]
            fold_of[saved["held"]] = fold
        probabilities = softmax(logits)
        issues = label_issues.find(
            train.labels,
            probabilities,
            list(self.bundle.classes),
            set_name="train",
            test_time_flip=self.spec.test_time_flip,
        )
        explainers = []
        for fold in range(self.spec.folds):  # each fold's model, with the normalisation it trained with
            model, manifest = load_model(self.folder(fold) / MODEL_FOLDER, device=self.device)
            explainers.append((model, Normalization.of(manifest["mean"], manifest["std"])))
        write_overlays(self.out_dir, explainers, issues, train.images, explainer_of=fold_of)
        path = label_issues.save(issues, self.out_dir / label_issues.FILE_NAME)
        accuracy = float((probabilities.argmax(1) == train.labels).mean())
        metrics = self._metrics(summaries, stop_reason="completed") | {
            "label_issues": len(issues.index),
            "accuracy": round(accuracy, 6),
            "warnings": weak_models_warning(len(issues.index), len(train), accuracy),
        }
        write_json(self.out_dir / "metrics.json", metrics)
        return AuditResult(metrics, "completed", [path])


def audit(
    spec: AuditSpec,
    *,
    data_dir: Path,
    out_dir: Path,
    callbacks: Callbacks | None = None,
    device: str | torch.device | None = None,
    num_workers: int | None = None,
) -> AuditResult:
    """Audits the labels of `spec`'s training images (the dataset under `data_dir`), writing each fold's
    scores and model, label_issues.json, its overlays and metrics.json to `out_dir`."""
    resolved_lr(spec)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    callbacks = callbacks or NullCallbacks()
    callbacks.on_progress({"phase": "loading data", "fraction": 0.0})
    bundle, _ = load_data(spec, Path(data_dir), callbacks=callbacks)
    return Audit(
        spec, bundle, out_dir=out_dir, device=resolve_device(device), callbacks=callbacks, num_workers=num_workers
    ).run()
