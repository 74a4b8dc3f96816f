"""Checkpoints as folders of safetensors and JSON: nothing is ever unpickled.

A checkpoint folder holds `model.safetensors` (the uncompiled module's state dict) and
`manifest.json` (what the model is, how to feed it, what trained it, and the weights' sha256);
with an optimizer or scheduler also `training_state.safetensors` (their tensors) and
`training_state.json` (everything else, tensors replaced by references into the first file).
A folder is untrusted input: the manifest is validated, the model is rebuilt from it (never from
flags), the weights' hash is checked and every failure is a `CheckpointError`.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import math
import os
import shutil
import tempfile
import uuid
from pathlib import Path
from typing import Any

import torch
import torchvision
from pydantic import ValidationError
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from ml.models import build_model, unwrap
from ml.specs import MAX_IMAGE_SIZE, MIN_IMAGE_SIZE, MODELS, ModelSpec

FORMAT = 1
MODEL_FILE = "model.safetensors"
MANIFEST_FILE = "manifest.json"
STATE_TENSORS_FILE = "training_state.safetensors"
STATE_JSON_FILE = "training_state.json"
REQUIRED_KEYS = ("format", "model", "in_channels", "num_classes", "image_size", "classes", "mean", "std", "sha256")
_CHUNK = 1 << 20  # bytes read at a time while hashing


class CheckpointError(ValueError):
    """A checkpoint folder that is missing, malformed, tampered with or does not fit its model."""


# ----------------------------------------------------------------------------------- saving


def save_checkpoint(
    folder: Path, *, model: nn.Module, manifest: dict[str, Any], optimizer: Any = None, scheduler: Any = None
) -> Path:
    """Write a complete checkpoint to `folder` (replacing one already there) and return `folder`.

    Everything is written to a temporary sibling folder first and renamed into place, so a crash
    leaves either the previous checkpoint or the new one, never half of one."""
    folder = Path(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.tmp-", dir=folder.parent))
    try:
        tensors = _model_tensors(model)
        save_file(tensors, tmp / MODEL_FILE)
        full = {**manifest, "format": FORMAT, "sha256": _sha256(tmp / MODEL_FILE), "versions": _versions()}
        full = json.loads(_dumps(full))  # what load_manifest will see
        _check_manifest(full, source="manifest given to save_checkpoint")
        _check_fits(full, tensors)
        (tmp / MANIFEST_FILE).write_text(_dumps(full, indent=2))
        if optimizer is not None or scheduler is not None:
            _save_training_state(tmp, optimizer, scheduler)
        os.chmod(tmp, 0o755)  # mkdtemp makes it private; a checkpoint is read by the service too
        _replace_folder(tmp, folder)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return folder


def _model_tensors(model: nn.Module) -> dict[str, torch.Tensor]:
    state = unwrap(model).state_dict()
    return {key.replace("_orig_mod.", ""): value.detach().contiguous().cpu() for key, value in state.items()}


def _versions() -> dict[str, str]:
    try:
        lrcam = importlib.metadata.version("lrcam")
    except importlib.metadata.PackageNotFoundError:  # running from a source tree
        lrcam = "unknown"
    return {"torch": torch.__version__, "torchvision": torchvision.__version__, "lrcam": lrcam}


def _json_default(value: Any) -> Any:
    if hasattr(value, "model_dump"):  # a pydantic spec
        return value.model_dump(mode="json")
    if isinstance(value, Path):
        return str(value)
    if hasattr(value, "tolist"):  # numpy arrays and scalars
        return value.tolist()
    raise CheckpointError(f"manifest values must be JSON data; got a {type(value).__name__}: {value!r}")


def _dumps(value: Any, indent: int | None = None) -> str:
    return json.dumps(value, default=_json_default, allow_nan=False, indent=indent)


def _check_fits(manifest: dict[str, Any], tensors: dict[str, torch.Tensor]) -> None:
    """The manifest describes these weights: same keys and shapes as the model it names."""
    with torch.device("meta"):  # builds the module without allocating its weights
        reference = _build(manifest).state_dict()
    if set(reference) != set(tensors):
        extra, missing = sorted(set(tensors) - set(reference)), sorted(set(reference) - set(tensors))
        raise CheckpointError(
            f"the weights do not belong to the manifest's model {manifest['model']}: "
            f"unexpected keys {extra[:5]}, missing keys {missing[:5]}"
        )
    for key, ref in reference.items():
        if ref.shape != tensors[key].shape:
            raise CheckpointError(
                f"the weights do not fit the manifest's model {manifest['model']}: {key} has shape "
                f"{tuple(tensors[key].shape)}, expected {tuple(ref.shape)} "
                f"(in_channels={manifest['in_channels']}, num_classes={manifest['num_classes']})"
            )


def _replace_folder(tmp: Path, folder: Path) -> None:
    """Rename `tmp` to `folder`; an existing `folder` is moved aside first and deleted after."""
    old = None
    if folder.exists():
        if not folder.is_dir():
            raise CheckpointError(f"cannot write a checkpoint to {folder}: it exists and is not a folder")
        old = folder.with_name(f".{folder.name}.old-{uuid.uuid4().hex[:8]}")
        folder.rename(old)
    try:
        tmp.rename(folder)
    except OSError:
        if old is not None:
            old.rename(folder)  # put the previous checkpoint back
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def update_manifest(folder: Path, **fields: Any) -> dict[str, Any]:
    """Add (or replace) `fields` in the manifest of the checkpoint in `folder`, e.g. the temperature fitted
    after training; the weights and their hash stay. Written to a sibling file and renamed into place."""
    folder = Path(folder)
    manifest: dict[str, Any] = load_manifest(folder) | json.loads(_dumps(fields))
    _check_manifest(manifest, source=f"manifest of {folder} with {sorted(fields)}")
    tmp = folder / f".{MANIFEST_FILE}.tmp-{uuid.uuid4().hex[:8]}"
    tmp.write_text(_dumps(manifest, indent=2))
    os.replace(tmp, folder / MANIFEST_FILE)
    return manifest


# ----------------------------------------------------------------------------------- loading


def load_manifest(folder: Path) -> dict[str, Any]:
    """The validated manifest of the checkpoint in `folder`."""
    path = _require_file(Path(folder), MANIFEST_FILE)
    try:
        manifest: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))  # checked below
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"{path} is not valid JSON: {exc}") from exc
    _check_manifest(manifest, source=str(path))
    return manifest


def load_model(folder: Path, device: str | torch.device = "cpu") -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild the model the manifest names, load its verified weights, and return it in eval mode."""
    folder = Path(folder)
    manifest = load_manifest(folder)
    path = _require_file(folder, MODEL_FILE)
    digest = _sha256(path)
    if digest != manifest["sha256"]:
        raise CheckpointError(
            f"{path} has sha256 {digest}, but the manifest says {manifest['sha256']}: "
            "the weights were modified or corrupted after saving"
        )
    state = _load_tensors(path)
    model = _build(manifest)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise CheckpointError(f"{path} does not fit the manifest's model {manifest['model']}: {exc}") from exc
    return model.to(device).eval(), manifest


def _build(manifest: dict[str, Any]) -> nn.Module:
    spec = ModelSpec.model_validate(manifest["model"])
    return build_model(spec, in_channels=manifest["in_channels"], num_classes=manifest["num_classes"])


def _require_file(folder: Path, name: str) -> Path:
    if not folder.is_dir():
        raise CheckpointError(f"checkpoint folder {folder} does not exist or is not a folder")
    path = folder / name
    if not path.is_file():
        raise CheckpointError(f"checkpoint folder {folder} has no {name}")
    return path


def _load_tensors(path: Path) -> dict[str, torch.Tensor]:
    try:
        return load_file(path, device="cpu")
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(f"{path} is not a readable safetensors file (truncated or garbage?): {exc}") from exc


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


# ------------------------------------------------------------------------- manifest validation


def _is_int(value: Any, minimum: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= minimum


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _check_manifest(manifest: Any, *, source: str) -> None:
    """Raise a CheckpointError naming the first field that is missing or of the wrong kind."""
    if not isinstance(manifest, dict):
        raise CheckpointError(f"{source}: a manifest is a JSON object; got {type(manifest).__name__}")
    missing = [key for key in REQUIRED_KEYS if key not in manifest]
    if missing:
        raise CheckpointError(f"{source}: missing keys {missing}; a manifest needs {list(REQUIRED_KEYS)}")
    if manifest["format"] != FORMAT:
        raise CheckpointError(f"{source}: unsupported format {manifest['format']!r}; this lrcam reads {FORMAT}")
    _check_model(manifest["model"], source)
    for key in ("in_channels", "num_classes", "image_size"):
        if not _is_int(manifest[key], 1):
            raise CheckpointError(f"{source}: {key} must be a positive int; got {manifest[key]!r}")
    if not MIN_IMAGE_SIZE <= manifest["image_size"] <= MAX_IMAGE_SIZE:  # /predict resizes every upload to it
        raise CheckpointError(
            f"{source}: image_size must be {MIN_IMAGE_SIZE}-{MAX_IMAGE_SIZE} px; got {manifest['image_size']!r}"
        )
    classes, channels = manifest["classes"], manifest["in_channels"]
    if not (isinstance(classes, list) and all(isinstance(c, str) for c in classes)):
        raise CheckpointError(f"{source}: classes must be a list of strings; got {classes!r}")
    if len(classes) != manifest["num_classes"]:
        raise CheckpointError(f"{source}: {len(classes)} classes for num_classes={manifest['num_classes']}")
    for key in ("mean", "std"):
        values = manifest[key]
        if not (isinstance(values, list) and len(values) == channels and all(map(_is_number, values))):
            raise CheckpointError(f"{source}: {key} must be {channels} numbers (one per channel); got {values!r}")
    if not all(value > 0 for value in manifest["std"]):
        raise CheckpointError(f"{source}: std must be > 0; got {manifest['std']!r}")
    sha = manifest["sha256"]
    if not (isinstance(sha, str) and len(sha) == 64 and all(c in "0123456789abcdef" for c in sha)):
        raise CheckpointError(f"{source}: sha256 must be 64 lowercase hex digits; got {sha!r}")
    _check_optional(manifest, source)


def _check_model(model: Any, source: str) -> None:
    if not isinstance(model, dict) or model.get("name") not in MODELS:
        name = model.get("name") if isinstance(model, dict) else model
        raise CheckpointError(f"{source}: unknown model {name!r}; expected one of {list(MODELS)}")
    try:
        ModelSpec.model_validate(model)
    except ValidationError as exc:
        raise CheckpointError(f"{source}: invalid model {model!r}: {exc.errors()[0]['msg']}") from exc


def _check_optional(manifest: dict[str, Any], source: str) -> None:
    if "epoch" in manifest and not _is_int(manifest["epoch"], 0):
        raise CheckpointError(f"{source}: epoch must be an int >= 0; got {manifest['epoch']!r}")
    test_acc = manifest.get("test_acc")
    if test_acc is not None and not _is_number(test_acc):
        raise CheckpointError(f"{source}: test_acc must be a number or null; got {test_acc!r}")
    for key, kind in (("dataset", str), ("spec", dict), ("versions", dict)):
        if key in manifest and not isinstance(manifest[key], kind):
            raise CheckpointError(f"{source}: {key} must be a {kind.__name__}; got {manifest[key]!r}")
    _check_temperature(manifest.get("temperature"), source)


def _check_temperature(temperature: Any, source: str) -> None:
    """`temperature` (ml.calibration; absent from checkpoints saved before it): {"value": T > 0, "applied":
    bool, "fitted_on": "validation" | "test"}."""
    if temperature is None:
        return
    if not (
        isinstance(temperature, dict)
        and _is_number(temperature.get("value"))
        and temperature["value"] > 0
        and isinstance(temperature.get("applied"), bool)
        and temperature.get("fitted_on") in ("validation", "test")
    ):
        raise CheckpointError(
            f"{source}: temperature must be {{'value': a number > 0, 'applied': a bool, 'fitted_on': "
            f"'validation' or 'test'}}; got {temperature!r}"
        )


# ----------------------------------------------------------------------------- training state


def _save_training_state(folder: Path, optimizer: Any, scheduler: Any) -> None:
    tensors: dict[str, torch.Tensor] = {}
    dropped: list[str] = []
    doc: dict[str, Any] = {"dropped": dropped}
    for name, obj in (("optimizer", optimizer), ("scheduler", scheduler)):
        doc[f"{name}_class"] = None if obj is None else type(obj).__name__
        doc[name] = None if obj is None else _encode(obj.state_dict(), name, tensors, dropped)
    save_file(tensors, folder / STATE_TENSORS_FILE)
    doc["sha256"] = _sha256(folder / STATE_TENSORS_FILE)
    (folder / STATE_JSON_FILE).write_text(_dumps(doc, indent=1))


def load_training_state(folder: Path, *, optimizer: Any, scheduler: Any = None) -> None:
    """Restore the optimizer's (and the scheduler's) state saved with the checkpoint in `folder`.

    Build them as for a fresh run first (same parameters, same scheduler arguments): entries that
    were dropped on save (callables) keep the values their constructor gave them."""
    folder = Path(folder)
    path = _require_file(folder, STATE_JSON_FILE)
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"{path} is not valid JSON: {exc}") from exc
    if not isinstance(doc, dict) or not isinstance(doc.get("sha256"), str):
        raise CheckpointError(f"{path}: expected an object with optimizer, scheduler and sha256")
    tensor_path = _require_file(folder, STATE_TENSORS_FILE)
    if _sha256(tensor_path) != doc["sha256"]:
        raise CheckpointError(f"{tensor_path} does not match the sha256 in {path}: modified or corrupted")
    tensors = _load_tensors(tensor_path)
    targets = [("optimizer", optimizer)] + ([("scheduler", scheduler)] if scheduler is not None else [])
    for name, obj in targets:
        if doc.get(f"{name}_class") != type(obj).__name__:
            raise CheckpointError(
                f"{path} holds the state of {name} {doc.get(f'{name}_class')!r}, not of the {type(obj).__name__} given"
            )
        try:
            obj.load_state_dict(_decode(doc[name], tensors, path))
        except (KeyError, TypeError, ValueError, RuntimeError) as exc:
            raise CheckpointError(f"{path}: the saved {name} state does not fit the {name} given: {exc}") from exc


# A state dict is JSON except for tensors, non-finite floats, tuples and non-string dict keys
# (the optimizer's state is keyed by parameter index); each is written as a one-key object.
_TENSOR, _FLOAT, _TUPLE, _ITEMS = "__tensor__", "__float__", "__tuple__", "__items__"
_MARKERS = (_TENSOR, _FLOAT, _TUPLE, _ITEMS)
_DROP = object()


def _encode(value: Any, path: str, tensors: dict[str, torch.Tensor], dropped: list[str]) -> Any:
    """JSON data for `value`; tensors go into `tensors`, referenced by key.

    Callables are dropped and their paths listed in `dropped`: schedulers keep functions in
    their state (CyclicLR's `_scale_fn_ref`, a weak method, in older torch; custom scale or
    lambda functions) that cannot be stored without pickle. Each is rebuilt by the scheduler's
    constructor from plain settings that are stored (mode, gamma), and `load_state_dict`
    updates `__dict__` with what it gets, so an absent key keeps the constructor's value."""
    if isinstance(value, torch.Tensor):
        key = f"{path}#{len(tensors)}"
        tensors[key] = value.detach().contiguous().cpu()
        return {_TENSOR: key}
    if isinstance(value, float) and not math.isfinite(value):
        return {_FLOAT: repr(value)}  # "inf", "-inf" or "nan": ReduceLROnPlateau starts at +-inf
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, (list, tuple)):
        items = [_encode(v, f"{path}/{i}", tensors, dropped) for i, v in enumerate(value)]
        items = [item for item in items if item is not _DROP]
        return {_TUPLE: items} if isinstance(value, tuple) else items
    if isinstance(value, dict):
        pairs = [(k, _encode(v, f"{path}/{k}", tensors, dropped)) for k, v in value.items()]
        pairs = [(k, v) for k, v in pairs if v is not _DROP]
        if all(isinstance(k, str) and k not in _MARKERS for k, _ in pairs):
            return dict(pairs)
        return {_ITEMS: [[_encode(k, path, tensors, dropped), v] for k, v in pairs]}
    if callable(value):
        dropped.append(path)
        return _DROP
    raise CheckpointError(f"cannot store {path} without pickle: a {type(value).__name__} ({value!r})")


def _decode(value: Any, tensors: dict[str, torch.Tensor], source: Path) -> Any:
    if isinstance(value, list):
        return [_decode(v, tensors, source) for v in value]
    if not isinstance(value, dict):
        return value
    if len(value) == 1 and next(iter(value)) in _MARKERS:
        marker, inner = next(iter(value.items()))
        if marker == _TENSOR:
            if inner not in tensors:
                raise CheckpointError(f"{source} refers to tensor {inner!r}, absent from {STATE_TENSORS_FILE}")
            return tensors[inner]
        if marker == _FLOAT:
            if inner not in ("inf", "-inf", "nan"):
                raise CheckpointError(f"{source}: {_FLOAT} must be inf, -inf or nan; got {inner!r}")
            return float(inner)
        if marker == _TUPLE:
            return tuple(_decode(inner, tensors, source))
        return {_decode(k, tensors, source): _decode(v, tensors, source) for k, v in inner}
    return {k: _decode(v, tensors, source) for k, v in value.items()}
