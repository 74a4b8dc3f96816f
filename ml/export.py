"""A checkpoint exported to run without lrcam: ONNX (onnxruntime, in any language) or TorchScript (torch alone).

Either file takes `input`, float32 (N, C, H, W) images already prepared as /predict prepares them (in the
checkpoint's channels, "L" or "RGB", its shorter side resized to `image_size` and centre-cropped,
normalized as (pixel / 255 - mean) / std), and gives `logits` (N, classes); with the spec's test-time
flip each image's logits are averaged with its mirror image's, as /predict does. What a caller needs
to prepare images and read the answer travels inside the file: the ONNX model's `metadata_props`, and
TorchScript's extra files `<key>.json`.

An export is written once, next to the checkpoint it came from (`<checkpoint>/export/`), under a name
made of the weights' sha256: a second request for the same weights is a file that is there.
"""

from __future__ import annotations

import json
import os
import tempfile
import warnings
from pathlib import Path
from typing import Any

import onnx
import torch
from torch import Tensor, nn

from ml.checkpoints import load_manifest, load_model
from ml.models import flip_averaged

FORMATS = {"onnx": "onnx", "torchscript": "pt"}  # format -> file suffix
EXPORT_FOLDER = "export"
EXPORT_VERSION = 1  # part of each file's name: bump it when what an export holds changes, older files are then ignored
INPUT, OUTPUT = "input", "logits"
OPSET = 18  # ONNX opset: onnxruntime 1.16 (2023) and later run it
EXAMPLE_BATCH = 2  # the example's batch: with 1 the exporters could fix the batch axis to 1


class Exportable(nn.Module):
    """The model as /predict runs it: its logits, averaged with the mirror images' under test-time flip."""

    def __init__(self, model: nn.Module, *, flip: bool) -> None:
        super().__init__()
        self.model = model
        self.flip = flip

    def forward(self, images: Tensor) -> Tensor:
        logits: Tensor = self.model(images)
        return flip_averaged(self.model, images, logits) if self.flip else logits


def check_format(fmt: str) -> str:
    if fmt not in FORMATS:
        raise ValueError(f"unknown export format {fmt!r}; expected one of {sorted(FORMATS)}")
    return fmt


def export_path(folder: Path, fmt: str, sha256: str) -> Path:
    """Where the export of the weights with this `sha256` lives in the checkpoint `folder`."""
    return Path(folder) / EXPORT_FOLDER / f"model-v{EXPORT_VERSION}-{sha256[:16]}.{FORMATS[check_format(fmt)]}"


def export_checkpoint(folder: Path, fmt: str, *, checkpoint_id: str | None = None) -> Path:
    """The checkpoint in `folder` exported as `fmt` ("onnx" or "torchscript"): the cached file when there
    is one, else written now (to a temporary file renamed into place: readers never see half of one).
    `checkpoint_id`, the store's id of the checkpoint, is recorded in the file. CheckpointError for a
    checkpoint that cannot be loaded, ValueError for an unknown format."""
    check_format(fmt)
    path = export_path(folder, fmt, load_manifest(folder)["sha256"])
    if path.is_file():
        return path
    model, manifest = load_model(folder, device="cpu")  # verifies the weights against the sha256
    facts = metadata(manifest, checkpoint_id)
    exportable = Exportable(model, flip=facts["test_time_flip"]).eval()
    path.parent.mkdir(exist_ok=True)
    handle, name = tempfile.mkstemp(prefix=f".{path.name}.tmp-", dir=path.parent)
    os.close(handle)
    tmp = Path(name)
    try:
        with torch.no_grad():
            (write_onnx if fmt == "onnx" else write_torchscript)(exportable, facts, tmp)
        os.chmod(tmp, 0o644)  # mkstemp makes it private; the export folder is shared as the checkpoint is
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def metadata(manifest: dict[str, Any], checkpoint_id: str | None = None) -> dict[str, Any]:
    """What a file needs to be used without lrcam, from the checkpoint's (validated) manifest."""
    facts = {
        "classes": list(manifest["classes"]),
        "mean": list(manifest["mean"]),
        "std": list(manifest["std"]),
        "image_size": manifest["image_size"],
        "in_channels": manifest["in_channels"],
        "model": manifest["model"]["name"],
        "width": manifest["model"]["width"],
        # as ml.predictor reads it: /predict and the export average the same logits
        "test_time_flip": bool(manifest.get("spec", {}).get("test_time_flip", False)),
        "dataset": manifest.get("dataset"),
        "weights_sha256": manifest["sha256"],
        "lrcam_checkpoint_id": checkpoint_id,
    }
    return {key: value for key, value in facts.items() if value is not None}


def doc_string(facts: dict[str, Any]) -> str:
    mode = "L (grayscale)" if facts["in_channels"] == 1 else "RGB"
    flip = " averaged with the horizontally mirrored image's" if facts["test_time_flip"] else ""
    return (
        f"lrcam {facts['model']} (width {facts['width']}), {len(facts['classes'])} classes; "
        f"input {INPUT!r}: float32 N x {facts['in_channels']} x {facts['image_size']} x {facts['image_size']}, "
        f"{mode} images turned upright by their EXIF orientation (JPEGs decoded at the smallest scale that "
        f"keeps {facts['image_size']} px, as in training), resized bilinearly so that the shorter side is "
        f"{facts['image_size']} px and centre-cropped, "
        f"then (pixel / 255 - mean) / std per channel; output {OUTPUT!r}: N x {len(facts['classes'])} "
        f"logits{flip}, in the order of the metadata's classes"
    )


def _example(facts: dict[str, Any]) -> Tensor:
    size = facts["image_size"]
    return torch.zeros(EXAMPLE_BATCH, facts["in_channels"], size, size)


def write_onnx(model: nn.Module, facts: dict[str, Any], path: Path) -> None:
    """torch.export's ONNX exporter (torch's default; the TorchScript-based one is deprecated), a
    dynamic batch axis, the facts as metadata_props (lists as JSON, the rest as text)."""
    program = torch.onnx.export(
        model,
        (_example(facts),),
        dynamo=True,
        input_names=[INPUT],
        output_names=[OUTPUT],
        dynamic_shapes=({0: torch.export.Dim("batch")},),
        opset_version=OPSET,
        verbose=False,
    )
    assert program is not None, "torch.onnx.export with dynamo=True returns the program"
    proto = program.model_proto
    proto.doc_string = doc_string(facts)
    onnx.helper.set_model_props(proto, {key: _text(value) for key, value in facts.items()})
    onnx.checker.check_model(proto)
    onnx.save(proto, str(path))


def write_torchscript(model: nn.Module, facts: dict[str, Any], path: Path) -> None:
    """A traced TorchScript module (`torch.jit.load` in Python, `torch::jit::load` in C++), each fact in
    an extra file `<key>.json`, and the description in `README.txt`."""
    files = {f"{key}.json": json.dumps(value) for key, value in facts.items()} | {"README.txt": doc_string(facts)}
    with warnings.catch_warnings():
        # TorchScript is the format asked for by name; torch says its successor is torch.export
        warnings.filterwarnings("ignore", message=r"`torch\.jit\.\w+` is deprecated")
        traced = torch.jit.trace(model, _example(facts))  # type: ignore[no-untyped-call]
        torch.jit.save(traced, str(path), _extra_files=files)


def _text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value)
