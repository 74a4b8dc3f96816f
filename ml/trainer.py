"""The training loop: SGD, a schedule, per-epoch metrics, best/last checkpoints, then the report."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ml.checkpoints import CheckpointError, load_manifest, load_model, load_training_state, save_checkpoint
from ml.compilation import compile_model, compiled_calls, resolve_mode
from ml.data import DatasetBundle, ImageSet
from ml.models import flip_averaged, unwrap
from ml.probes import Probes
from ml.progress import Callbacks, NullCallbacks
from ml.reports import Report, write_report
from ml.run import load_data, set_up
from ml.runtime import autocast, memory_format, resolve_device, write_json
from ml.schedulers import Schedule, build_schedule, current_lr
from ml.specs import TrainSpec
from ml.trust import HeldOut, Trust, write_trust

REPORT_EVERY = 10  # batches between progress reports and stop-flag polls


@dataclass
class TrainResult:
    metrics: dict[str, Any]
    stop_reason: str  # "completed" | "target_accuracy" | "cancelled"
    best_checkpoint: Path | None
    last_checkpoint: Path | None
    artifacts: list[Path] = field(default_factory=list)


@dataclass
class EpochStats:
    loss: float
    acc: float
    images: int
    seconds: float
    lrs: list[float]
    stopped: bool


class Trainer:
    """One training run. `train()` below is the public entrypoint."""

    def __init__(
        self,
        spec: TrainSpec,
        bundle: DatasetBundle,
        *,
        out_dir: Path,
        device: torch.device,
        callbacks: Callbacks,
        num_workers: int | None = None,
        validation: ImageSet | None = None,
    ) -> None:
        """`bundle` with the dataset's statistics; `validation` held out of its training images."""
        lr = resolved_lr(spec)
        run = set_up(spec, bundle, lr=lr, device=device, num_workers=num_workers, validation=validation)
        self.spec, self.bundle, self.out_dir, self.device = spec, run.bundle, out_dir, device
        self.callbacks, self.transforms, self.optimizer = callbacks, run.transforms, run.optimizer
        self.train_loader, self.test_loader, self.val_loader = (
            run.loaders.train,
            run.loaders.test,
            run.loaders.validation,
        )
        # Selection, scheduling and target_accuracy read "val_*" when a validation set is held out, else "test_*"
        self.validation = validation
        self.selected_on, self.key = ("validation", "val") if validation is not None else ("test", "test")
        write_json(out_dir / "augmentation.json", self.transforms.describe())
        self.memory_format = memory_format(device)
        self.schedule: Schedule = build_schedule(spec, self.optimizer, steps_per_epoch=len(self.train_loader))
        self.compile_mode = resolve_mode(spec.compile, device=device, steps=spec.epochs * len(self.train_loader))
        self.model = compile_model(run.model, self.compile_mode)
        self.criterion = nn.CrossEntropyLoss(label_smoothing=spec.label_smoothing)
        self.epochs: list[dict[str, Any]] = []
        self.step_lrs: list[float] = []
        self.step_losses: list[list[float]] = []  # [global step, mean train loss since the previous entry]
        self.compiled = False  # whether this process has run a compiled step yet (the first one compiles)
        self.best: dict[str, Any] | None = None
        self.start_epoch = 1
        test = self.bundle.test
        self.probes = Probes.create(
            test.images,
            test.labels,
            list(self.bundle.classes),
            seed=spec.seed,
            indices=spec.probe_indices,
            normalization=self.transforms.normalization,
            flip=spec.test_time_flip,
            out_dir=out_dir,
        )

    def _to_device(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = x.to(self.device, non_blocking=True, memory_format=self.memory_format)
        return x, y.to(self.device, non_blocking=True)

    def _report(self, epoch: int, step: int, steps: int, *, phase: str = "training", loss: float | None = None) -> bool:
        """Sends progress (with the phase, and the train loss of the steps since the last report);
        returns True when the run should stop."""
        done = (epoch - 1) * steps + step
        self.callbacks.on_progress(
            {
                "phase": phase,
                "epoch": epoch,
                "epochs": self.spec.epochs,
                "step": step,
                "steps": steps,
                "fraction": round(done / (self.spec.epochs * steps), 4),
            }
            | ({} if loss is None else {"loss": round(loss, 6)})
        )
        return self.callbacks.should_stop()

    def train_epoch(self, epoch: int) -> EpochStats:
        with compiled_calls(self.compile_mode, device=self.device):
            return self._train_epoch(epoch)

    def _train_epoch(self, epoch: int) -> EpochStats:
        self.train_loader.start_epoch(seed=self.spec.seed, epoch=epoch)  # resumed or not, epoch N draws the same
        self.model.train()
        steps = len(self.train_loader)
        loss_sum = torch.zeros((), device=self.device)  # accumulated on the device: no sync per batch
        correct = torch.zeros((), device=self.device, dtype=torch.long)
        images, lrs, stopped = 0, [], False
        reported_sum, reported_images = 0.0, 0  # the loss so far at the last report: the next one's window
        if self.compile_mode is not None and not self.compiled:  # the first steps compile: say so, not "step 0"
            self._report(epoch, 0, steps, phase="compiling")
        start = time.perf_counter()
        for step, (x, y) in enumerate(self.train_loader, start=1):
            x, y = self._to_device(x, y)
            with autocast(self.device):
                logits = self.model(x)
                loss = self.criterion(logits, y)
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()
            lrs.append(current_lr(self.optimizer))
            self.schedule.after_batch()
            loss_sum += loss.detach() * y.shape[0]
            correct += (logits.argmax(1) == y).sum()
            images += y.shape[0]
            if step % REPORT_EVERY == 0 or step == steps:
                self.compiled = True
                total = float(loss_sum)  # one read a report: the finiteness check needed it anyway
                self._check_finite(loss_sum, epoch)
                window = (total - reported_sum) / max(images - reported_images, 1)
                reported_sum, reported_images = total, images
                self.step_losses.append([(epoch - 1) * steps + step, round(window, 6)])
                if self._report(epoch, step, steps, loss=window) and step < steps:
                    stopped = True
                    break
        seconds = time.perf_counter() - start
        return EpochStats(
            float(loss_sum) / max(images, 1), int(correct) / max(images, 1), images, seconds, lrs, stopped
        )

    @staticmethod
    def _check_finite(loss_sum: torch.Tensor, epoch: int) -> None:
        if not torch.isfinite(loss_sum):
            raise FloatingPointError(
                f"training diverged: the loss became NaN/inf in epoch {epoch}; lower the learning rate"
            )

    @torch.inference_mode()
    def evaluate(self, model: nn.Module | None = None, *, validation: bool = False) -> tuple[float, float, np.ndarray]:
        """Loss, accuracy and the predicted class of every image (in dataset order) of the test set,
        or of the validation set (with the spec's test_time_flip)."""
        loss_sum, preds = torch.zeros((), device=self.device), []
        for logits, y in self._logits(model, validation=validation):
            loss_sum += nn.functional.cross_entropy(logits.float(), y, reduction="sum")
            preds.append(logits.argmax(1))
        predictions = torch.cat(preds).cpu().numpy()
        labels = self.validation.labels if validation and self.validation is not None else self.bundle.test.labels
        return float(loss_sum) / len(labels), float((predictions == labels).mean()), predictions

    @torch.inference_mode()
    def test_probabilities(self, model: nn.Module) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The predicted class of every test image (in dataset order), the softmax probability of that
        prediction and of the image's true class, as evaluation computes them (test_time_flip included)."""
        preds, chosen = [], []  # chosen: (N, 2) the probabilities of the prediction and of the true class
        for logits, y in self._logits(model, validation=False):
            predicted = logits.argmax(1)  # as evaluate: the accuracy and these predictions agree
            preds.append(predicted)
            chosen.append(logits.float().softmax(1).gather(1, torch.stack([predicted, y], 1)))
        probabilities = torch.cat(chosen).cpu().numpy()
        return torch.cat(preds).cpu().numpy(), probabilities[:, 0], probabilities[:, 1]

    @torch.inference_mode()
    def held_out(self, model: nn.Module, *, validation: bool = False) -> HeldOut:
        """The test (or validation) images, their labels and `model`'s float32 logits for them, in dataset
        order, as evaluation computes them (test_time_flip included)."""
        images = self.validation if validation and self.validation is not None else self.bundle.test
        logits = torch.cat([logits for logits, _ in self._logits(model, validation=validation)]).cpu().numpy()
        return HeldOut("validation" if validation else "test", images.images, images.labels, logits)

    def _logits(self, model: nn.Module | None, *, validation: bool) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """(logits, labels) of each batch of the test or validation set, in eval mode, in dataset order."""
        model = model or self.model
        model.eval()
        loader = self.val_loader if validation else self.test_loader
        assert loader is not None, "no validation set held out"
        for x, y in loader:
            x, y = self._to_device(x, y)
            n, size = len(x), loader.batch_size
            assert size is not None, "evaluation loaders batch"
            if self.compile_mode is not None and n < size:
                # the last, smaller batch padded to the others' size: one compiled graph serves them all
                # (a second shape cost 4 s of cold compilation on 2 cores; eval-mode rows are independent)
                x = torch.cat([x, x.new_zeros((size - n, *x.shape[1:]))])
            with autocast(self.device), compiled_calls(self.compile_mode, device=self.device):
                logits = model(x).float()  # bf16 under autocast on CUDA: argmax on float32, as /predict
                if self.spec.test_time_flip:
                    logits = flip_averaged(model, x, logits)
            yield logits[:n], y

    def resume(self) -> str | None:
        """Continue from `checkpoints/last` and `metrics.json` when a previous run left them: restores
        the model, optimizer and scheduler, the epochs up to the checkpoint's, their step LRs and the
        best; re-reports those epochs (idempotent by epoch) and returns the stop reason if the restored
        run had already reached it."""
        last, metrics_path = self.out_dir / "checkpoints" / "last", self.out_dir / "metrics.json"
        if not (last / "manifest.json").is_file() or not metrics_path.is_file():
            return None
        manifest = load_manifest(last)
        if manifest.get("spec") != self.spec.model_dump(mode="json"):
            raise CheckpointError(f"{last} was saved by another spec; cannot resume this run from it")
        model, _ = load_model(last)
        unwrap(self.model).load_state_dict(model.state_dict())
        load_training_state(last, optimizer=self.optimizer, scheduler=self.schedule.scheduler)
        done = int(manifest["epoch"])  # metrics.json is written first, so it may hold one epoch more
        self.epochs = [r for r in json.loads(metrics_path.read_text())["epochs"] if r["epoch"] <= done]
        if [r["epoch"] for r in self.epochs] != list(range(1, done + 1)):
            raise CheckpointError(f"{metrics_path} lacks epochs of the checkpoint at epoch {done}; cannot resume")
        steps_path = self.out_dir / "lr_steps.json"
        step_lrs = json.loads(steps_path.read_text()) if steps_path.is_file() else []
        self.step_lrs = step_lrs[: done * len(self.train_loader)]
        losses_path = self.out_dir / "loss_steps.json"
        step_losses = json.loads(losses_path.read_text())["steps"] if losses_path.is_file() else []
        self.step_losses = [entry for entry in step_losses if entry[0] <= done * len(self.train_loader)]
        best = max(self.epochs, key=lambda r: (r[f"{self.key}_acc"], -r["epoch"]), default=None)
        self.best = None if best is None else self._summary(best)
        self._restore_best(done)
        self.probes.restore(done)  # the next epoch's drift compares with this one's stored maps
        self.start_epoch = done + 1
        for record in self.epochs:
            self.callbacks.on_epoch(record)
        # The checkpoint holds the scheduler before this epoch's step: replay the step, and the target,
        # on the exact figures the uninterrupted run decided on (metrics.json rounds to 6 digits).
        latest = self.epochs[-1]
        decided = manifest.get("decided_on") or {"loss": latest[f"{self.key}_loss"], "acc": latest[f"{self.key}_acc"]}
        self.schedule.after_epoch(test_acc=decided["acc"], test_loss=decided["loss"])
        target = self.spec.target_accuracy
        return "target_accuracy" if target is not None and decided["acc"] >= target else None

    def _restore_best(self, done: int) -> None:
        """Make `checkpoints/best` the best epoch of the resumed metrics: a run killed after saving
        "last" but before "best" left best/ one improvement behind, and "last" (now loaded) is that epoch."""
        assert self.best is not None, "resume restores at least one epoch"
        best = self.out_dir / "checkpoints" / "best"
        saved = load_manifest(best).get("epoch") if (best / "manifest.json").is_file() else None
        if saved == self.best["epoch"]:
            return
        if self.best["epoch"] != done:
            raise CheckpointError(
                f"{best} holds epoch {saved}, but the metrics' best is epoch {self.best['epoch']}"
                f" and only the last checkpoint (epoch {done}) can be restored; cannot resume"
            )
        self._save_checkpoint("best", done, self.best["test_acc"])

    def run(self, *, resume: bool = False) -> TrainResult:
        stop_reason = "completed"
        if resume and (reached := self.resume()) is not None:
            return self._finish(reached)
        for epoch in range(self.start_epoch, self.spec.epochs + 1):
            stats = self.train_epoch(epoch)
            if stats.stopped:  # mid-epoch: a partial epoch is not an epoch; keep what finished
                stop_reason = "cancelled"
                break
            self._report(epoch, len(self.train_loader), len(self.train_loader), phase="evaluating")
            measured = {"test": self.evaluate()[:2]}
            if self.val_loader is not None:
                measured["val"] = self.evaluate(validation=True)[:2]
            self._record(epoch, stats, measured)
            if self.callbacks.should_stop():
                stop_reason = "cancelled"
                break
            loss, acc = measured[self.key]  # validation when held out: the test set only measures
            self.schedule.after_epoch(test_acc=acc, test_loss=loss)
            target = self.spec.target_accuracy
            if target is not None and acc >= target:
                stop_reason = "target_accuracy"
                break
        return self._finish(stop_reason)

    def _record(self, epoch: int, stats: EpochStats, measured: dict[str, tuple[float, float]]) -> None:
        record: dict[str, Any] = {
            "epoch": epoch,
            "lr": stats.lrs[0] if stats.lrs else current_lr(self.optimizer),
            "train_loss": round(stats.loss, 6),
            "train_acc": round(stats.acc, 6),
            **{
                f"{name}_{kind}": round(value, 6)
                for name, pair in measured.items()
                for kind, value in zip(("loss", "acc"), pair)
            },
            "seconds": round(stats.seconds, 3),
            "images_per_second": round(stats.images / stats.seconds, 1) if stats.seconds else None,
            "attention_drift": self.probes.record(unwrap(self.model), epoch),  # writes probes/epoch_<N>.npz
        }
        test_acc = record["test_acc"]
        self.epochs.append(record)
        self.step_lrs.extend(stats.lrs)
        key = f"{self.key}_acc"
        improved = self.best is None or record[key] > self.best[key]
        if improved:  # the record's rounded figures: metrics.json, best and a resume's recomputation agree
            self.best = self._summary(record)
        # The order a crash can cut anywhere: metrics, then "last", then "best". A resume trims metrics to
        # "last", so metrics never lack an epoch that a checkpoint holds; and "best" is only ever this
        # epoch, which "last" holds by then, so a resume that finds it missing writes it from "last"
        # (_restore_best) instead of trusting a best/ from an epoch the metrics lost.
        self._write_metrics()
        loss, acc = measured[self.key]  # what the scheduler and the target decide on, unrounded
        self._save_checkpoint("last", epoch, test_acc, decided_on={"loss": loss, "acc": acc})
        if improved:
            self._save_checkpoint("best", epoch, test_acc)
        self.callbacks.on_epoch(record)

    def _summary(self, record: dict[str, Any]) -> dict[str, Any]:
        """An epoch's summary (`best`, `last`): its number, its test accuracy and, with a validation set
        held out, the validation accuracy a best epoch was chosen on."""
        summary = {"epoch": record["epoch"], "test_acc": record["test_acc"]}
        return summary | ({"val_acc": record["val_acc"]} if self.key == "val" else {})

    def manifest(self, epoch: int, test_acc: float, decided_on: dict[str, float] | None = None) -> dict[str, Any]:
        b = self.bundle
        return ({"decided_on": decided_on} if decided_on else {}) | {
            "model": self.spec.model.model_dump(),
            "in_channels": b.in_channels,
            "num_classes": b.num_classes,
            "image_size": b.image_size,
            "dataset": b.name,
            "classes": list(b.classes),
            "mean": list(b.mean),
            "std": list(b.std),
            "epoch": epoch,
            "test_acc": test_acc,
            "selected_on": self.selected_on,
            "test_time_flip": self.spec.test_time_flip,
            "spec": self.spec.model_dump(mode="json"),
        }

    def _save_checkpoint(
        self, which: str, epoch: int, test_acc: float, decided_on: dict[str, float] | None = None
    ) -> None:
        save_checkpoint(
            self.out_dir / "checkpoints" / which,
            model=self.model,
            manifest=self.manifest(epoch, test_acc, decided_on),
            optimizer=self.optimizer if which == "last" else None,
            scheduler=self.schedule.scheduler if which == "last" else None,
        )

    def metrics(self) -> dict[str, Any]:
        """`best` is the epoch chosen on `selected_on` (test: an optimistic figure, the set that chose
        it also measures it); `last` the final epoch's, what the run ended with. Both are evaluated
        with the mirror images when `test_time_flip`."""
        return {
            "epochs": self.epochs,
            "best": self.best,
            "last": self._summary(self.epochs[-1]) if self.epochs else None,
            "per_class_accuracy": None,
            "selected_on": self.selected_on,
            "test_time_flip": self.spec.test_time_flip,
            "warnings": list(self.transforms.warnings),
        }

    def _write_metrics(self, metrics: dict[str, Any] | None = None) -> None:
        write_json(self.out_dir / "metrics.json", metrics or self.metrics())
        write_json(self.out_dir / "lr_steps.json", self.step_lrs)
        write_json(self.out_dir / "loss_steps.json", {"every": REPORT_EVERY, "steps": self.step_losses})

    def _write_report(self, best_folder: Path) -> tuple[list[Path], dict[str, float | None]]:
        """The report of the best checkpoint's model on the test set, from plain data."""
        model, _ = load_model(best_folder, device=self.device)
        predictions, confidence, true_probability = self.test_probabilities(model)
        b, spec = self.bundle, self.spec
        report = Report(
            out_dir=self.out_dir,
            epochs=self.epochs,
            step_lrs=self.step_lrs,
            classes=list(b.classes),
            test_images=b.test.images,
            test_labels=b.test.labels,
            predictions=predictions,
            samples=next(iter(self.train_loader)),
            normalization=self.transforms.normalization,
            label_smoothing=spec.label_smoothing,
            gradcam_count=spec.gradcam_misclassified,
            test_time_flip=spec.test_time_flip,
            confidence=confidence,
            true_probability=true_probability,
        )
        return write_report(report, model)

    def _write_trust(self, best_folder: Path) -> Trust:
        """Calibration and likely label errors of the best checkpoint's model (ml.trust); its manifest
        gets the fitted temperature."""
        model, _ = load_model(best_folder, device=self.device)
        validation = self.held_out(model, validation=True) if self.val_loader is not None else None
        return write_trust(
            self.out_dir,
            model,
            test=self.held_out(model),
            validation=validation,
            classes=list(self.bundle.classes),
            normalization=self.transforms.normalization,
            test_time_flip=self.spec.test_time_flip,
            checkpoint=best_folder,
        )

    def _finish(self, stop_reason: str) -> TrainResult:
        checkpoints = self.out_dir / "checkpoints"
        metrics = self.metrics() | {"stop_reason": stop_reason}
        artifacts: list[Path] = []
        if self.epochs:
            steps = len(self.train_loader)
            self._report(self.epochs[-1]["epoch"], steps, steps, phase="writing the report")
            artifacts, metrics["per_class_accuracy"] = self._write_report(checkpoints / "best")
            best, _ = load_model(checkpoints / "best", device=self.device)
            metrics["faithfulness"] = self.probes.faithfulness(best, seed=self.spec.seed)
            trust = self._write_trust(checkpoints / "best")
            metrics["calibration"] = trust.calibration
            artifacts += trust.artifacts
        self._write_metrics(metrics)
        has = self.epochs != []
        return TrainResult(
            metrics,
            stop_reason,
            checkpoints / "best" if has else None,
            checkpoints / "last" if has else None,
            artifacts,
        )


def resolved_lr(spec: TrainSpec) -> float:
    """The spec's learning rate; ValueError while it is still "auto"."""
    if not isinstance(spec.optimizer.lr, float):
        raise ValueError('optimizer.lr is "auto": resolve it first with TrainSpec.with_lr(<suggested lr>)')
    return spec.optimizer.lr


def train(
    spec: TrainSpec,
    *,
    data_dir: Path,
    out_dir: Path,
    callbacks: Callbacks | None = None,
    device: str | torch.device | None = None,
    num_workers: int | None = None,
    resume: bool = False,
) -> TrainResult:
    """Trains `spec` on the dataset under `data_dir`, writing metrics, checkpoints and plots to `out_dir`.

    With `resume`, a run that `out_dir` already holds (its `checkpoints/last` and `metrics.json`)
    continues at the epoch after its last checkpoint instead of starting over."""
    resolved_lr(spec)  # before any data is loaded
    dev = resolve_device(device)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    callbacks = callbacks or NullCallbacks()
    callbacks.on_progress({"phase": "loading data", "fraction": 0.0})
    bundle, validation = load_data(spec, Path(data_dir), callbacks=callbacks)
    trainer = Trainer(
        spec, bundle, out_dir=out_dir, device=dev, callbacks=callbacks, num_workers=num_workers, validation=validation
    )
    return trainer.run(resume=resume)
