"""ml.checkpoints: round trips without pickle, and every kind of bad folder is a CheckpointError."""

from __future__ import annotations

import hashlib
import json
import pickle
from pathlib import Path

import pytest
import torch
from torch import nn

from ml.checkpoints import CheckpointError, load_manifest, load_model, load_training_state, save_checkpoint
from ml.models import build_model
from ml.specs import ModelSpec

CLASSES = [f"class{i}" for i in range(10)]


def make_model(name: str = "custom_resnet", *, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return build_model(ModelSpec(name=name, width=4), in_channels=3, num_classes=10)


def make_manifest(name: str = "custom_resnet", **overrides) -> dict:
    manifest = {
        "model": {"name": name, "width": 4},
        "in_channels": 3,
        "num_classes": 10,
        "image_size": 32,
        "dataset": "cifar10",
        "classes": CLASSES,
        "mean": [0.49, 0.48, 0.45],
        "std": [0.25, 0.24, 0.26],
        "epoch": 3,
        "test_acc": 0.5,
        "spec": {"epochs": 3},
    }
    return {**manifest, **overrides}


def save_with_state(folder: Path, model: nn.Module, **state) -> Path:
    """A checkpoint of `model` with the default manifest and the given optimizer and/or scheduler."""
    return save_checkpoint(folder, model=model, manifest=make_manifest(), **state)


@pytest.fixture
def checkpoint(tmp_path: Path) -> Path:
    return save_checkpoint(tmp_path / "best", model=make_model(), manifest=make_manifest())


def rewrite_manifest(folder: Path, **changes) -> None:
    path = folder / "manifest.json"
    manifest = json.loads(path.read_text())
    manifest.update(changes)
    path.write_text(json.dumps(manifest))


@pytest.mark.parametrize("name", ["resnet18", "custom_resnet"])
def test_round_trip_gives_identical_logits(tmp_path: Path, name: str) -> None:
    model = make_model(name).eval()
    folder = save_checkpoint(tmp_path / "ckpt", model=model, manifest=make_manifest(name))
    loaded, manifest = load_model(folder)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(model(x), loaded(x))
    assert not loaded.training
    assert manifest["classes"] == CLASSES and manifest["format"] == 1 and len(manifest["sha256"]) == 64
    assert set(manifest["versions"]) == {"torch", "torchvision", "lrcam"}
    assert load_manifest(folder) == manifest


def test_files_are_safetensors_and_json_never_pickles(checkpoint: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args, **kwargs):
        raise AssertionError("unpickling was attempted")

    for module, name in [(torch, "load"), (pickle, "load"), (pickle, "loads")]:
        monkeypatch.setattr(module, name, refuse)
    model, _ = load_model(checkpoint)
    assert isinstance(model, nn.Module)
    raw = (checkpoint / "model.safetensors").read_bytes()
    header_size = int.from_bytes(raw[:8], "little")  # safetensors: u64 header size, then JSON
    assert json.loads(raw[8 : 8 + header_size])
    json.loads((checkpoint / "manifest.json").read_text())


def test_compiled_model_is_saved_as_the_plain_module(tmp_path: Path) -> None:
    model = make_model()
    folder = save_checkpoint(tmp_path / "c", model=torch.compile(model), manifest=make_manifest())
    loaded, _ = load_model(folder)  # strict: the keys carry no "_orig_mod." prefix
    assert loaded.state_dict().keys() == model.state_dict().keys()


def test_overwrite_replaces_and_leaves_no_temp_folders(tmp_path: Path) -> None:
    save_checkpoint(tmp_path / "best", model=make_model(seed=0), manifest=make_manifest(epoch=1))
    save_checkpoint(tmp_path / "best", model=make_model(seed=1), manifest=make_manifest(epoch=2))
    assert load_manifest(tmp_path / "best")["epoch"] == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["best"]


def test_failed_save_keeps_the_previous_checkpoint(checkpoint: Path) -> None:
    with pytest.raises(CheckpointError, match="5 classes for num_classes=10"):
        save_checkpoint(checkpoint, model=make_model(seed=1), manifest=make_manifest(classes=CLASSES[:5]))
    load_model(checkpoint)
    assert sorted(p.name for p in checkpoint.parent.iterdir()) == ["best"]


def test_save_rejects_a_manifest_that_does_not_describe_the_model(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="fc.weight has shape"):
        manifest = make_manifest(num_classes=5, classes=CLASSES[:5])
        save_checkpoint(tmp_path / "x", model=make_model(), manifest=manifest)
    with pytest.raises(CheckpointError, match="do not belong"):
        save_checkpoint(tmp_path / "x", model=make_model(), manifest=make_manifest("resnet18"))
    assert not (tmp_path / "x").exists()


def test_sgd_and_one_cycle_state_round_trip(tmp_path: Path) -> None:
    def fresh():
        model = make_model()
        optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4)
        return model, optimizer, torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=0.1, total_steps=20)

    model, optimizer, scheduler = fresh()
    for _ in range(3):
        optimizer.zero_grad()
        model(torch.randn(2, 3, 32, 32)).sum().backward()
        optimizer.step()
        scheduler.step()
    folder = save_with_state(tmp_path / "last", model, optimizer=optimizer, scheduler=scheduler)
    _, optimizer2, scheduler2 = fresh()
    load_training_state(folder, optimizer=optimizer2, scheduler=scheduler2)
    for key, state in optimizer.state_dict()["state"].items():
        assert torch.equal(optimizer2.state_dict()["state"][key]["momentum_buffer"], state["momentum_buffer"])
    assert optimizer2.param_groups[0]["lr"] == optimizer.param_groups[0]["lr"]
    assert scheduler2.last_epoch == scheduler.last_epoch == 3
    assert scheduler2._step_count == scheduler._step_count
    scheduler.step(), scheduler2.step()
    assert scheduler2.get_last_lr() == scheduler.get_last_lr()


@pytest.mark.parametrize("history", [[], [0.3, 0.5, 0.4, 0.45]])
def test_reduce_on_plateau_state_round_trip(tmp_path: Path, history: list[float]) -> None:
    model = make_model()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, mode="max", patience=5)
    for accuracy in history:
        scheduler.step(accuracy)
    folder = save_with_state(tmp_path / "p", model, optimizer=optimizer, scheduler=scheduler)
    optimizer2 = torch.optim.SGD(make_model().parameters(), lr=0.1)
    scheduler2 = torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer2, mode="max", patience=5)
    load_training_state(folder, optimizer=optimizer2, scheduler=scheduler2)
    assert scheduler2.best == scheduler.best  # -inf before any step: stored as JSON all the same
    assert scheduler2.num_bad_epochs == scheduler.num_bad_epochs == (2 if history else 0)
    json.loads((folder / "training_state.json").read_text(), parse_constant=pytest.fail)  # strict JSON


def test_cyclic_state_round_trip(tmp_path: Path) -> None:
    def fresh():
        optimizer = torch.optim.SGD(make_model().parameters(), lr=0.1, momentum=0.9)
        kwargs = {"base_lr": 0.01, "max_lr": 0.1, "step_size_up": 4, "mode": "exp_range", "gamma": 0.9}
        return optimizer, torch.optim.lr_scheduler.CyclicLR(optimizer, **kwargs)

    optimizer, scheduler = fresh()
    for _ in range(5):
        optimizer.step()
        scheduler.step()
    folder = save_with_state(tmp_path / "c", make_model(), optimizer=optimizer, scheduler=scheduler)
    optimizer2, scheduler2 = fresh()
    load_training_state(folder, optimizer=optimizer2, scheduler=scheduler2)
    for _ in range(3):
        optimizer.step(), scheduler.step(), optimizer2.step(), scheduler2.step()
        assert scheduler2.get_last_lr() == scheduler.get_last_lr()


def test_training_state_of_another_optimizer_is_refused(tmp_path: Path) -> None:
    model = make_model()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    folder = save_with_state(tmp_path / "o", model, optimizer=optimizer)
    with pytest.raises(CheckpointError, match="'SGD', not of the Adam"):
        load_training_state(folder, optimizer=torch.optim.Adam(model.parameters()))
    weights_only = save_checkpoint(tmp_path / "w", model=model, manifest=make_manifest())
    with pytest.raises(CheckpointError, match="has no training_state.json"):
        load_training_state(weights_only, optimizer=optimizer)


def flip_byte(path: Path, offset: int = -100) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0xFF
    path.write_bytes(bytes(data))


def test_tampered_weights_are_refused(checkpoint: Path) -> None:
    flip_byte(checkpoint / "model.safetensors")
    with pytest.raises(CheckpointError, match="modified or corrupted"):
        load_model(checkpoint)


def test_truncated_weights_are_refused_even_with_a_matching_hash(checkpoint: Path) -> None:
    path = checkpoint / "model.safetensors"
    path.write_bytes(path.read_bytes()[:1000])
    rewrite_manifest(checkpoint, sha256=hashlib.sha256(path.read_bytes()).hexdigest())
    with pytest.raises(CheckpointError, match="not a readable safetensors file"):
        load_model(checkpoint)


@pytest.mark.parametrize(
    ("changes", "match"),
    [
        ({"model": {"name": "vgg16", "width": 4}}, "unknown model 'vgg16'"),
        ({"in_channels": "3"}, "in_channels must be a positive int; got '3'"),
        ({"epoch": 1.5}, "epoch must be an int"),
        ({"mean": [0.5]}, "mean must be 3 numbers"),
        ({"format": 2}, "unsupported format 2"),
        ({"classes": "abc"}, "classes must be a list"),
        ({"image_size": 100_000}, "image_size must be 8-256 px; got 100000"),  # /predict would resize to it
        ({"image_size": 4}, "image_size must be 8-256 px; got 4"),
    ],
)
def test_invalid_manifests_are_refused(checkpoint: Path, changes: dict, match: str) -> None:
    rewrite_manifest(checkpoint, **changes)
    with pytest.raises(CheckpointError, match=match):
        load_model(checkpoint)


def test_manifest_that_does_not_fit_the_weights_is_refused(checkpoint: Path) -> None:
    rewrite_manifest(checkpoint, num_classes=5, classes=CLASSES[:5])
    with pytest.raises(CheckpointError, match="does not fit"):
        load_model(checkpoint)


@pytest.mark.parametrize("missing", ["model.safetensors", "manifest.json"])
def test_missing_files_are_refused(checkpoint: Path, missing: str) -> None:
    (checkpoint / missing).unlink()
    with pytest.raises(CheckpointError, match=f"has no {missing}"):
        load_model(checkpoint)


def test_missing_folder_and_bad_json_are_refused(checkpoint: Path) -> None:
    with pytest.raises(CheckpointError, match="does not exist"):
        load_manifest(checkpoint.parent / "nope")
    (checkpoint / "manifest.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="not valid JSON"):
        load_manifest(checkpoint)
    (checkpoint / "manifest.json").write_text("[1, 2]")
    with pytest.raises(CheckpointError, match="a manifest is a JSON object"):
        load_manifest(checkpoint)


class FunctionHoldingScheduler:
    """Holds a function in its state, as CyclicLR's `_scale_fn_ref` did before torch dropped it itself."""

    def __init__(self, payload: object = None) -> None:
        self.state = {"scale_fn": abs, "steps": 4, "payload": payload}

    def state_dict(self) -> dict:
        return dict(self.state)

    def load_state_dict(self, state: dict) -> None:
        self.state.update(state)


def test_callables_in_state_are_dropped_and_listed(tmp_path: Path) -> None:
    model = make_model()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    scheduler = FunctionHoldingScheduler()
    scheduler.state["steps"] = 7
    folder = save_with_state(tmp_path / "f", model, optimizer=optimizer, scheduler=scheduler)
    assert json.loads((folder / "training_state.json").read_text())["dropped"] == ["scheduler/scale_fn"]
    restored = FunctionHoldingScheduler()
    load_training_state(folder, optimizer=optimizer, scheduler=restored)
    assert restored.state == {"scale_fn": abs, "steps": 7, "payload": None}


def test_state_that_needs_pickle_is_refused_on_save(tmp_path: Path) -> None:
    model = make_model()
    with pytest.raises(CheckpointError, match="cannot store scheduler/payload without pickle: a object"):
        save_with_state(tmp_path / "s", model, scheduler=FunctionHoldingScheduler(object()))
    assert not (tmp_path / "s").exists()


def test_tampered_training_state_is_refused(tmp_path: Path) -> None:
    model = make_model()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    model(torch.randn(2, 3, 32, 32)).sum().backward()
    optimizer.step()
    folder = save_with_state(tmp_path / "t", model, optimizer=optimizer)
    flip_byte(folder / "training_state.safetensors")
    with pytest.raises(CheckpointError, match="modified or corrupted"):
        load_training_state(folder, optimizer=optimizer)
