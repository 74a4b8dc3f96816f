"""Resuming a training run that died between epochs: it continues at the next epoch from the last
checkpoint (model, optimizer, scheduler), with every epoch recorded once."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from ml.checkpoints import CheckpointError, load_manifest, load_model
from ml.schedulers import build_schedule, current_lr
from ml.specs import TrainSpec
from ml.trainer import Trainer, train


class Killed(RuntimeError):
    """Stands for the worker being killed right after an epoch was checkpointed."""


class Recorder:
    def __init__(self, kill_after_epoch: int | None = None) -> None:
        self.kill_after_epoch, self.epochs = kill_after_epoch, []

    def on_progress(self, progress):
        pass

    def on_epoch(self, record):
        self.epochs.append(record)
        if record["epoch"] == self.kill_after_epoch:
            raise Killed(f"killed after epoch {record['epoch']}")

    def should_stop(self):
        return False


def spec(**overrides) -> TrainSpec:
    base = {
        "dataset": {"name": "fashion_mnist", "train_subset": 256, "test_subset": 64},
        "model": {"name": "resnet18", "width": 2},
        "epochs": 3,
        "batch_size": 64,
        "augmentation": "none",
        "optimizer": {"lr": 0.05},
        "scheduler": {"name": "one_cycle", "max_lr": 0.1},
        "gradcam_misclassified": 0,
    }
    base.update(overrides)
    return TrainSpec.model_validate(base)


def uninterrupted_lrs(s: TrainSpec, *, steps_per_epoch: int) -> list[float]:
    """The LR at every step of `s` run without a break, as the trainer records it."""
    optimizer = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=s.optimizer.lr, momentum=0.9)
    schedule = build_schedule(s, optimizer, steps_per_epoch=steps_per_epoch)
    lrs = []
    for _ in range(s.epochs * steps_per_epoch):
        optimizer.step()
        lrs.append(current_lr(optimizer))
        schedule.after_batch()
    return lrs


def test_a_killed_run_resumes_at_the_next_epoch_from_its_checkpoint(
    small_fmnist_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    s = spec()
    out = tmp_path / "killed"
    first = Recorder(kill_after_epoch=2)
    with pytest.raises(Killed):
        train(s, data_dir=small_fmnist_dir, out_dir=out, callbacks=first, device="cpu")
    saved_model, _ = load_model(out / "checkpoints" / "last")

    seen: dict[str, object] = {}
    train_epoch = Trainer.train_epoch

    def spy(self: Trainer, epoch: int):  # what the model and optimizer hold when epoch 3 starts
        seen.setdefault("epoch", epoch)
        seen.setdefault("weights", {k: v.clone() for k, v in self.model.state_dict().items()})
        seen.setdefault("momentum", len(self.optimizer.state))
        return train_epoch(self, epoch)

    monkeypatch.setattr(Trainer, "train_epoch", spy)
    second = Recorder()
    resumed = train(s, data_dir=small_fmnist_dir, out_dir=out, callbacks=second, device="cpu", resume=True)

    assert seen["epoch"] == 3  # epochs 1 and 2 were not trained again
    for name, value in saved_model.state_dict().items():
        assert torch.equal(seen["weights"][name], value), name  # type: ignore[index]
    assert seen["momentum"] > 0  # SGD's momentum buffers came back (a fresh optimizer has none)
    assert resumed.stop_reason == "completed"
    assert [e["epoch"] for e in resumed.metrics["epochs"]] == [1, 2, 3]
    assert resumed.metrics["epochs"][:2] == first.epochs  # the finished epochs kept, not redone
    assert [e["epoch"] for e in second.epochs] == [1, 2, 3]  # re-reported once each (the store upserts)
    # OneCycle's state was restored: the LR of every step is the one an uninterrupted run takes
    lrs = json.loads((out / "lr_steps.json").read_text())
    assert lrs == pytest.approx(uninterrupted_lrs(s, steps_per_epoch=len(lrs) // s.epochs))
    assert [e["lr"] for e in resumed.metrics["epochs"]] == pytest.approx(lrs[:: len(lrs) // s.epochs])
    assert (out / "accuracy.png").is_file() and resumed.best_checkpoint is not None


def test_resume_without_a_previous_run_starts_fresh_and_after_the_last_epoch_only_reports(
    small_fmnist_dir: Path, tmp_path: Path
) -> None:
    s = spec(epochs=1, scheduler={"name": "none"})
    fresh = train(s, data_dir=small_fmnist_dir, out_dir=tmp_path, device="cpu", resume=True)
    assert [e["epoch"] for e in fresh.metrics["epochs"]] == [1]
    again = Recorder()
    done = train(s, data_dir=small_fmnist_dir, out_dir=tmp_path, callbacks=again, device="cpu", resume=True)
    assert done.metrics["epochs"] == fresh.metrics["epochs"] and [e["epoch"] for e in again.epochs] == [1]


def test_resume_refuses_a_checkpoint_of_another_spec_or_a_tampered_state(
    small_fmnist_dir: Path, tmp_path: Path
) -> None:
    s = spec(epochs=1, scheduler={"name": "none"})
    train(s, data_dir=small_fmnist_dir, out_dir=tmp_path, device="cpu")
    with pytest.raises(CheckpointError, match="another spec"):
        train(
            spec(epochs=2, scheduler={"name": "none"}),
            data_dir=small_fmnist_dir,
            out_dir=tmp_path,
            device="cpu",
            resume=True,
        )
    state = tmp_path / "checkpoints" / "last" / "training_state.safetensors"
    state.write_bytes(state.read_bytes()[:-8] + b"\x00" * 8)
    with pytest.raises(CheckpointError, match="sha256"):
        train(s, data_dir=small_fmnist_dir, out_dir=tmp_path, device="cpu", resume=True)


@pytest.mark.parametrize("cut", ["metrics", "last", "best"])
def test_a_kill_between_the_writes_never_leaves_a_best_from_a_lost_epoch(
    small_fmnist_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, cut: str
) -> None:
    """Epoch 2 improves on epoch 1 (test accuracy is made to rise) and the worker dies just before
    one of its three writes; the resumed run's best/ is the best epoch of its resumed metrics."""
    s = spec(epochs=2, scheduler={"name": "none"})
    evaluate, write_metrics, save = Trainer.evaluate, Trainer._write_metrics, Trainer._save_checkpoint

    def rising(self: Trainer, model=None):
        loss, _, predictions = evaluate(self, model)
        return loss, 0.1 * (len(self.epochs) + 1), predictions

    def killing(which: str, write):
        def wrapper(self: Trainer, *args, **kwargs):
            if which == cut and len(self.epochs) == 2:
                raise Killed(f"killed before writing {which} of epoch 2")
            return write(self, *args, **kwargs)

        return wrapper

    monkeypatch.setattr(Trainer, "evaluate", rising)
    monkeypatch.setattr(Trainer, "_write_metrics", killing("metrics", write_metrics))
    monkeypatch.setattr(
        Trainer, "_save_checkpoint", lambda self, which, *a, **k: killing(which, save)(self, which, *a, **k)
    )
    out = tmp_path / "run"
    with pytest.raises(Killed):
        train(s, data_dir=small_fmnist_dir, out_dir=out, device="cpu")
    monkeypatch.setattr(Trainer, "_write_metrics", write_metrics)
    monkeypatch.setattr(Trainer, "_save_checkpoint", save)

    trainer = resumed_trainer(s, small_fmnist_dir, out)
    assert trainer.best is not None
    best = load_manifest(out / "checkpoints" / "best")
    assert best["epoch"] == trainer.best["epoch"] <= trainer.epochs[-1]["epoch"]
    best_model, _ = load_model(out / "checkpoints" / "best")
    if best["epoch"] == trainer.epochs[-1]["epoch"]:  # then it is the model of that epoch: the last checkpoint's
        last_model, _ = load_model(out / "checkpoints" / "last")
        for name, value in last_model.state_dict().items():
            assert torch.equal(best_model.state_dict()[name], value), name


def resumed_trainer(s: TrainSpec, data_dir: Path, out: Path) -> Trainer:
    from ml.data import load_dataset
    from ml.progress import NullCallbacks

    bundle = load_dataset(s.dataset, data_dir)
    trainer = Trainer(s, bundle, out_dir=out, device=torch.device("cpu"), callbacks=NullCallbacks(), num_workers=0)
    trainer.resume()
    return trainer


LEARNED = ["train_loss", "train_acc", "test_loss", "test_acc", "lr"]


@pytest.mark.parametrize(
    "augmentation",
    ["default", [{"name": "HorizontalFlip"}, {"name": "Affine", "translate_px": [-2, 2], "p": 0.5}]],
    ids=["batched", "albumentations"],
)
def test_a_killed_and_resumed_run_equals_an_uninterrupted_one(
    small_fmnist_dir: Path, tmp_path: Path, augmentation
) -> None:
    """Each epoch's shuffle and augmentations come from (seed, epoch): before, a resume replayed epoch
    1's order and augmentations as epoch 2's. Two runs of one spec and seed agree too (on a CPU)."""
    s = spec(augmentation=augmentation, epochs=3)
    whole = train(s, data_dir=small_fmnist_dir, out_dir=tmp_path / "whole", device="cpu").metrics["epochs"]
    again = train(s, data_dir=small_fmnist_dir, out_dir=tmp_path / "again", device="cpu").metrics["epochs"]
    with pytest.raises(Killed):
        train(
            s, data_dir=small_fmnist_dir, out_dir=tmp_path / "cut", callbacks=Recorder(kill_after_epoch=1), device="cpu"
        )
    resumed = train(s, data_dir=small_fmnist_dir, out_dir=tmp_path / "cut", device="cpu", resume=True)
    learned = [[record[key] for key in LEARNED] for record in whole]
    assert [[record[key] for key in LEARNED] for record in again] == learned
    assert [[record[key] for key in LEARNED] for record in resumed.metrics["epochs"]] == learned


def test_resume_replays_the_schedulers_step_on_the_exact_figures_not_the_rounded_ones(
    small_fmnist_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """metrics.json rounds to 6 digits; ReduceLROnPlateau's threshold (1e-4 relative) and a target
    accuracy compare exact figures, so a resume must replay the uninterrupted run's own."""
    s = spec(epochs=2, scheduler={"name": "reduce_on_plateau"})
    out = tmp_path / "killed"
    with pytest.raises(Killed):
        train(s, data_dir=small_fmnist_dir, out_dir=out, callbacks=Recorder(kill_after_epoch=1), device="cpu")
    decided = load_manifest(out / "checkpoints" / "last")["decided_on"]
    replayed: list[tuple[float, float]] = []
    after_epoch = Trainer.resume

    def spy(self: Trainer):
        original = self.schedule.after_epoch
        self.schedule.after_epoch = lambda *, test_acc, test_loss: (  # type: ignore[method-assign]
            replayed.append((test_acc, test_loss)) or original(test_acc=test_acc, test_loss=test_loss)
        )
        try:
            return after_epoch(self)
        finally:
            self.schedule.after_epoch = original  # type: ignore[method-assign]

    monkeypatch.setattr(Trainer, "resume", spy)
    train(s, data_dir=small_fmnist_dir, out_dir=out, device="cpu", resume=True)
    assert replayed == [(decided["acc"], decided["loss"])]
    assert decided["loss"] != round(decided["loss"], 6)  # the figure metrics.json holds would differ
