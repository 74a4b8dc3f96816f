"""A checkpoint's model card in Markdown: what the model is, what it learned from, how well it did and
what it is not for, written from the facts the store keeps (the checkpoint's row, its train job, the
job's artifacts, an uploaded dataset's summary) and the parameter count in its weights file's header.
Nothing here imports torch.

Every figure comes from a record; a fact that was not recorded is said to be unknown, never guessed."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any

from pydantic import ValidationError
from safetensors import SafetensorError, safe_open
from sqlalchemy.orm import Session

from core import store
from core.db import Checkpoint
from ml.specs import MODEL_INFO, NATIVE_SIDES, DatasetSpec

WEIGHTS_FILE, MANIFEST_FILE = "model.safetensors", "manifest.json"  # ml.checkpoints' (which imports torch)
BUFFERS = ("running_mean", "running_var", "num_batches_tracked")  # BatchNorm statistics: saved, not parameters
CONFUSION_MATRIX = "confusion_matrix.png"
_MARKDOWN = re.compile(r"([\\`\[\]<>|])")  # what could make a link, HTML, code or a table cell of text


def model_card(session: Session, checkpoint: Checkpoint, artifacts_dir: Path) -> str:
    """The card of `checkpoint`, a row of the store `session` reads."""
    job = checkpoint.job
    spec, result = job.params or {}, job.result or {}
    dataset = spec.get("dataset") or {}
    uploaded = store.get_dataset(session, dataset["id"]) if dataset.get("name") == "uploaded" else None
    counts: dict[str, dict[str, int]] = (uploaded.summary or {}).get("counts", {}) if uploaded else {}
    manifest, parameters = _weights(artifacts_dir, checkpoint.path)
    facts = {
        "side": _side(dataset, checkpoint.dataset),
        "channels": manifest.get("in_channels"),
        "dataset_name": uploaded.name if uploaded else checkpoint.dataset,
        "train_images": _images(counts.get("train"), dataset.get("train_subset")),
        "test_images": _images(counts.get("test"), dataset.get("test_subset")),
        "validation_split": spec.get("validation_split"),
    }
    names = {artifact.name for artifact in store.list_artifacts(session, job.id)}
    sections = [
        _model(checkpoint, parameters, facts),
        _dataset(checkpoint, spec, counts, facts),
        "## Training spec\n\n" + _fenced(json.dumps(spec, indent=2), "json"),
        _results(checkpoint, result, job.id, CONFUSION_MATRIX in names),
        _limits(checkpoint, result, facts),
    ]
    return "\n\n".join(sections) + "\n"


def _model(checkpoint: Checkpoint, parameters: int | None, facts: dict[str, Any]) -> str:
    name, width = checkpoint.model.get("name", "unknown"), checkpoint.model.get("width", "unknown")
    description = str(MODEL_INFO.get(name, {}).get("description", "unknown architecture"))
    side, channels = facts["side"], facts["channels"]
    mode = {1: "grayscale (L) ", 3: "RGB "}.get(channels, "")
    return "\n".join(
        [
            f"# Model card: checkpoint {checkpoint.id}",
            "",
            f"Left by train job `{checkpoint.job_id}` on {checkpoint.created_at:%Y-%m-%d %H:%M} UTC.",
            "",
            "## Model",
            "",
            f"- Model: {name}, {description}",
            f"- Width: {width}",
            f"- Parameters: {parameters:,}" if parameters is not None else "- Parameters: unknown (no weights file)",
            f"- Input: {mode}images of {side} x {side} px, the shorter side resized to {side} px and centre-cropped",
            f"- Output: one of {len(checkpoint.classes)} classes",
            f"- Download: `/checkpoints/{checkpoint.id}/export?format=onnx` (or `torchscript`)",
        ]
    )


def _dataset(
    checkpoint: Checkpoint, spec: dict[str, Any], counts: dict[str, dict[str, int]], facts: dict[str, Any]
) -> str:
    named = _text(facts["dataset_name"])
    lines = ["## Dataset", "", f"- Name: {named}" + (f" ({checkpoint.dataset})" if named != checkpoint.dataset else "")]
    lines.append(f"- Classes ({len(checkpoint.classes)}): " + ", ".join(_text(c) for c in checkpoint.classes))
    for split in ("train", "test"):
        images = facts[f"{split}_images"]
        subset = " (a stratified subset)" if (spec.get("dataset") or {}).get(f"{split}_subset") else ""
        number = f"{images:,}{subset}" if images is not None else f"the whole {split} set (its size was not recorded)"
        lines.append(f"- {split.capitalize()} images: {number}")
    if facts["validation_split"]:
        lines.append(
            f"- Validation: {facts['validation_split']:.0%} of the training images held out (validation_split)"
        )
    if counts:
        lines += ["", "| class | train images | test images |", "| --- | ---: | ---: |"]
        lines += [
            f"| {_text(c)} | {counts.get('train', {}).get(c, 0)} | {counts.get('test', {}).get(c, 0)} |"
            for c in checkpoint.classes
        ]
    return "\n".join(lines)


def _results(checkpoint: Checkpoint, result: dict[str, Any], job_id: str, confusion: bool) -> str:
    best = result.get("best") or {"epoch": checkpoint.epoch, "test_acc": checkpoint.test_acc}
    flip = " (each image averaged with its mirror image: test-time flip)" if checkpoint.test_time_flip else ""
    chosen = f"chosen on the {checkpoint.selected_on} set"
    if best.get("val_acc") is not None:
        chosen += f" (validation accuracy {_percent(best['val_acc'])})"
    lines = ["## Results", ""]
    if best.get("epoch") is None:
        lines.append("- Best: not recorded")
    else:
        lines.append(f"- Best: test accuracy {_percent(best.get('test_acc'))} at epoch {best['epoch']}, {chosen}{flip}")
    if checkpoint.last_epoch is None:
        lines.append("- Last: not recorded (the job has no result)")
    else:
        lines.append(f"- Last: test accuracy {_percent(checkpoint.last_test_acc)} at epoch {checkpoint.last_epoch}")
    if result.get("stop_reason"):
        lines.append(f"- Stopped: {_text(result['stop_reason'])}")
    per_class = result.get("per_class_accuracy") or {}
    if per_class:
        lines += ["", "Per-class accuracy of the best epoch on the test set:", ""]
        lines += ["| class | accuracy |", "| --- | ---: |"]
        lines += [f"| {_text(c)} | {_percent(per_class.get(c))} |" for c in checkpoint.classes]
    if confusion:
        url = f"/jobs/{job_id}/artifacts/{CONFUSION_MATRIX}"
        lines += ["", f"Confusion matrix: [{url}]({url})"]
    return "\n".join(lines)


def _limits(checkpoint: Checkpoint, result: dict[str, Any], facts: dict[str, Any]) -> str:
    classes = ", ".join(_text(c) for c in checkpoint.classes)
    images, split = facts["train_images"], facts["validation_split"]
    trained = f"{images:,} images" if images is not None else "the images"
    trained += f" ({split:.0%} of them held out for validation)" if split else ""
    side, test = facts["side"], facts["test_images"]
    lines = [
        "## Intended use and limits",
        "",
        f"- Trained on {trained} of these {len(checkpoint.classes)} classes at {side} x {side} px: {classes}.",
        "- It assigns one of these classes to any image, including images of none of them: it has no "
        '"none of these" answer, and its confidence is not a guarantee.',
        f"- Accuracy was measured on the test set of {_text(facts['dataset_name'])} only"
        + (f" ({test:,} images)" if test is not None else "")
        + ": images from elsewhere (other cameras, framing, backgrounds, sizes) may score lower.",
    ]
    if checkpoint.selected_on == "test":
        lines.append(
            f"- The best epoch was chosen on the test set, the set that also measures it: its figure "
            f"({_percent((result.get('best') or {}).get('test_acc', checkpoint.test_acc))}) is optimistic. "
            "Train with validation_split for an unbiased one."
        )
    per_class = {c: a for c, a in (result.get("per_class_accuracy") or {}).items() if isinstance(a, (int, float))}
    if per_class:
        weakest = min(per_class, key=lambda c: per_class[c])
        lines.append(f"- Weakest class: {_text(weakest)} ({_percent(per_class[weakest])} on the test set).")
    return "\n".join(lines)


def _side(dataset: dict[str, Any], name: str) -> int | None:
    """The side in px of the images the model takes, by the rule training follows (DatasetSpec.side)."""
    try:
        return DatasetSpec.model_validate(dataset).side
    except ValidationError:  # a row older than the spec's current rules
        return NATIVE_SIDES.get(name)


def _images(per_class: dict[str, int] | None, subset: int | None) -> int | None:
    """A split's image count: the uploaded dataset's, capped by the spec's subset, else the subset."""
    if per_class:
        total = sum(per_class.values())
        return min(total, subset) if subset else total
    return subset


def _weights(artifacts_dir: Path, relative: str) -> tuple[dict[str, Any], int | None]:
    """The checkpoint's manifest (as written: JSON) and its parameter count from the weights file's
    header (no tensor is read), BatchNorm statistics left out as ml.models.count_parameters leaves
    them; ({}, None) when its files are gone or unreadable."""
    root = artifacts_dir.resolve()
    folder = (root / relative).resolve()
    if not folder.is_relative_to(root) or not folder.is_dir():
        return {}, None
    try:
        manifest = json.loads((folder / MANIFEST_FILE).read_text(encoding="utf-8"))
        with safe_open(str(folder / WEIGHTS_FILE), framework="numpy") as weights:
            keys = [key for key in weights.keys() if not key.endswith(BUFFERS)]  # noqa: SIM118 (not iterable)
            parameters = sum(math.prod(weights.get_slice(key).get_shape()) for key in keys)
    except (SafetensorError, OSError, UnicodeDecodeError, json.JSONDecodeError):
        return {}, None
    return (manifest if isinstance(manifest, dict) else {}), parameters


def _fenced(text: str, language: str) -> str:
    """`text` in a code block whose fence no run of backticks in it can close."""
    fence = "`" * max([3, *(len(run) + 1 for run in re.findall("`+", text))])
    return f"{fence}{language}\n{text}\n{fence}"


def _percent(value: Any) -> str:
    return f"{value:.2%}" if isinstance(value, (int, float)) else "unknown"


def _text(value: Any) -> str:
    """Untrusted text (class and dataset names) as literal Markdown on one line."""
    return _MARKDOWN.sub(r"\\\1", " ".join(str(value).split()))
