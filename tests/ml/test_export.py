"""ml.export: a checkpoint as ONNX and TorchScript files that give PyTorch's logits on real images
without lrcam, carry what a caller needs to feed them, and are written once per weights."""

from __future__ import annotations

import json
import typing
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from datasets import gray28_to_cifar

from ml import export
from ml.checkpoints import CheckpointError, load_model, save_checkpoint
from ml.models import build_model
from ml.normalization import Normalization
from ml.specs import ModelSpec

CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]
TOLERANCE = 1e-4  # max abs logit difference between runtimes: float32 kernels that sum in other orders
CASES = [  # model, width, channels, image side (px)
    ("resnet18", 4, 1, 28),
    ("custom_resnet", 8, 1, 28),
    ("resnet18", 8, 3, 32),
    ("custom_resnet", 4, 3, 32),
]


def real_images(fmnist: dict[str, np.ndarray], channels: int) -> np.ndarray:
    """Real Fashion-MNIST test images, uint8 (N, S, S, C): 28 px grayscale, or 32 px tinted RGB."""
    images = fmnist["test_images"][:64]
    return images if channels == 1 else gray28_to_cifar(images)


def make_checkpoint(
    folder: Path, images: np.ndarray, *, name: str, width: int, test_time_flip: bool = False, seed: int = 0
) -> Path:
    """A checkpoint whose BatchNorm statistics come from `images` (random weights otherwise): eval
    mode then computes what a trained network computes, not an identity normalization."""
    torch.manual_seed(seed)
    channels, side = images.shape[3], images.shape[1]
    spec = ModelSpec.model_validate({"name": name, "width": width})
    model = build_model(spec, in_channels=channels, num_classes=len(CLASSES))
    normalization = Normalization.of([0.3] * channels, [0.35] * channels)
    with torch.no_grad():
        model.train()(normalization.normalize(torch.from_numpy(images)))
    manifest = {
        "model": {"name": name, "width": width},
        "in_channels": channels,
        "num_classes": len(CLASSES),
        "image_size": side,
        "dataset": "fashion_mnist" if channels == 1 else "cifar10",
        "classes": CLASSES,
        "mean": list(normalization.mean),
        "std": list(normalization.std),
        "epoch": 3,
        "test_acc": 0.5,
        "spec": {"test_time_flip": test_time_flip},
    }
    return save_checkpoint(folder, model=model.eval(), manifest=manifest)


def reference(folder: Path, pixels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(the normalized float32 input, PyTorch's logits) for uint8 (N, S, S, C) `pixels`."""
    model, manifest = load_model(folder)
    batch = Normalization.of(manifest["mean"], manifest["std"]).normalize(torch.from_numpy(pixels))
    with torch.no_grad():
        return batch.numpy(), model(batch).numpy()


@pytest.mark.parametrize(("name", "width", "channels", "side"), CASES)
def test_onnx_gives_pytorchs_logits_at_any_batch(
    tmp_path: Path, fmnist_arrays: dict[str, np.ndarray], name: str, width: int, channels: int, side: int
) -> None:
    images = real_images(fmnist_arrays, channels)
    folder = make_checkpoint(tmp_path / "ckpt", images, name=name, width=width)
    path = export.export_checkpoint(folder, "onnx", checkpoint_id="abc123")
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (given,) = session.get_inputs()
    assert (given.name, given.type, given.shape[1:]) == ("input", "tensor(float)", [channels, side, side])
    assert isinstance(given.shape[0], str)  # a symbolic, dynamic batch axis
    assert [output.name for output in session.get_outputs()] == ["logits"]
    for batch in (images[10:11], images[20:23]):
        x, logits = reference(folder, batch)
        (got,) = session.run(["logits"], {"input": x})
        assert got.shape == (len(batch), len(CLASSES))
        assert np.abs(got - logits).max() < TOLERANCE
        assert np.array_equal(got.argmax(1), logits.argmax(1))


@pytest.mark.filterwarnings("ignore:`torch.jit.load` is deprecated")  # TorchScript is the format asked for
@pytest.mark.parametrize(("name", "width", "channels", "side"), [CASES[0], CASES[3]])
def test_torchscript_gives_pytorchs_logits_and_carries_the_facts(
    tmp_path: Path, fmnist_arrays: dict[str, np.ndarray], name: str, width: int, channels: int, side: int
) -> None:
    images = real_images(fmnist_arrays, channels)
    folder = make_checkpoint(tmp_path / "ckpt", images, name=name, width=width)
    path = export.export_checkpoint(folder, "torchscript", checkpoint_id="abc123")
    assert path.suffix == ".pt"
    files = {"classes.json": "", "mean.json": "", "std.json": "", "image_size.json": "", "README.txt": ""}
    module = torch.jit.load(str(path), _extra_files=files)  # type: ignore[no-untyped-call]
    assert json.loads(files["classes.json"]) == CLASSES
    assert json.loads(files["image_size.json"]) == side
    assert json.loads(files["mean.json"]) == [0.3] * channels
    assert b"logits" in typing.cast(bytes, files["README.txt"])
    for batch in (images[:1], images[5:8]):
        x, logits = reference(folder, batch)
        with torch.no_grad():
            got = module(torch.from_numpy(x)).numpy()
        assert np.abs(got - logits).max() < TOLERANCE


def test_the_onnx_metadata_round_trips(tmp_path: Path, fmnist_arrays: dict[str, np.ndarray]) -> None:
    folder = make_checkpoint(tmp_path / "ckpt", real_images(fmnist_arrays, 3), name="custom_resnet", width=4)
    proto = onnx.load(str(export.export_checkpoint(folder, "onnx", checkpoint_id="abc123")))
    meta = {prop.key: prop.value for prop in proto.metadata_props}
    assert json.loads(meta["classes"]) == CLASSES
    assert json.loads(meta["mean"]) == [0.3] * 3 and json.loads(meta["std"]) == [0.35] * 3
    assert (meta["image_size"], meta["in_channels"]) == ("32", "3")
    assert (meta["model"], meta["width"], meta["lrcam_checkpoint_id"]) == ("custom_resnet", "4", "abc123")
    assert (meta["dataset"], meta["test_time_flip"]) == ("cifar10", "false")
    assert len(meta["weights_sha256"]) == 64
    assert "float32 N x 3 x 32 x 32" in proto.doc_string and "'logits'" in proto.doc_string


def test_test_time_flip_is_exported_as_predict_applies_it(tmp_path: Path, fmnist_arrays: dict[str, np.ndarray]) -> None:
    images = real_images(fmnist_arrays, 3)
    folder = make_checkpoint(tmp_path / "ckpt", images, name="resnet18", width=4, test_time_flip=True)
    session = ort.InferenceSession(str(export.export_checkpoint(folder, "onnx")), providers=["CPUExecutionProvider"])
    lopsided = images[:3].copy()
    lopsided[:, :, :8] = 255  # a white band on the left: the mirror image differs
    x, plain = reference(folder, lopsided)
    model, _ = load_model(folder)
    with torch.no_grad():
        mirrored = model(torch.from_numpy(x).flip(3)).numpy()
    (got,) = session.run(["logits"], {"input": x})
    error = np.abs(got - (plain + mirrored) / 2).max()
    assert error < TOLERANCE
    assert error < np.abs(got - plain).max() / 100  # far closer to the flip's logits than to the plain ones
    meta = session.get_modelmeta().custom_metadata_map
    assert meta["test_time_flip"] == "true" and "lrcam_checkpoint_id" not in meta


def test_an_export_is_written_once_per_weights(
    tmp_path: Path, fmnist_arrays: dict[str, np.ndarray], monkeypatch: pytest.MonkeyPatch
) -> None:
    images = real_images(fmnist_arrays, 1)
    folder = make_checkpoint(tmp_path / "ckpt", images, name="resnet18", width=4)
    first = export.export_checkpoint(folder, "onnx")
    assert first.parent == folder / "export" and [p.name for p in first.parent.iterdir()] == [first.name]
    written = first.stat().st_mtime_ns

    def refuse(*args: object) -> None:
        raise AssertionError("exported again although the file is there")

    monkeypatch.setattr(export, "write_onnx", refuse)
    assert export.export_checkpoint(folder, "onnx") == first and first.stat().st_mtime_ns == written
    monkeypatch.undo()
    make_checkpoint(folder, images, name="resnet18", width=4, seed=1)  # new weights, same folder
    second = export.export_checkpoint(folder, "onnx")
    assert second != first and second.is_file()


def test_a_failed_export_leaves_no_file(
    tmp_path: Path, fmnist_arrays: dict[str, np.ndarray], monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = make_checkpoint(tmp_path / "ckpt", real_images(fmnist_arrays, 1), name="resnet18", width=4)

    def half_then_fail(model: object, facts: object, path: Path) -> None:
        path.write_bytes(b"half an onnx file")
        raise RuntimeError("the exporter failed")

    monkeypatch.setattr(export, "write_onnx", half_then_fail)
    with pytest.raises(RuntimeError, match="the exporter failed"):
        export.export_checkpoint(folder, "onnx")
    assert list((folder / "export").iterdir()) == []


def test_tampered_weights_and_unknown_formats_are_refused(tmp_path: Path, fmnist_arrays: dict[str, np.ndarray]) -> None:
    folder = make_checkpoint(tmp_path / "ckpt", real_images(fmnist_arrays, 1), name="resnet18", width=4)
    with pytest.raises(ValueError, match=r"unknown export format 'keras'; expected one of \['onnx', 'torchscript'\]"):
        export.export_checkpoint(folder, "keras")
    weights = folder / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-4] + b"\0\0\0\0")
    with pytest.raises(CheckpointError, match="sha256"):
        export.export_checkpoint(folder, "onnx")
