"""GET /checkpoints/{id}/export: the model as one file, written once, and the README's example that runs
it without lrcam giving /predict's answers."""

from __future__ import annotations

import contextlib
import io
import json
import re
import typing
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
import torch
from api_support import TestClient, put_job
from datasets import gray28_to_cifar
from PIL import Image, ImageOps
from sqlalchemy.orm import Session
from test_api_predict import CLASSES, save_checkpoint

from core import store
from core.config import Settings
from ml import export
from service.exports import ExportFormat

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = re.compile(r"<!-- the export example: [^\n]*-->\n```python\n(.*?)```", re.S)


def test_the_onnx_file_is_written_once(
    client: TestClient, settings: Settings, session: Session, monkeypatch: pytest.MonkeyPatch
) -> None:
    checkpoint = save_checkpoint(settings, session)
    first = client.get(f"/checkpoints/{checkpoint}/export", params={"format": "onnx"})
    assert first.status_code == 200, first.text
    assert first.headers["content-type"] == "application/octet-stream"
    assert first.headers["content-disposition"] == f'attachment; filename="{checkpoint}.onnx"'
    model = onnx.load_from_string(first.content)
    meta = {prop.key: prop.value for prop in model.metadata_props}
    assert (json.loads(meta["classes"]), meta["lrcam_checkpoint_id"], meta["image_size"]) == (CLASSES, checkpoint, "32")
    cached = list(settings.ARTIFACTS_DIR.glob("*/checkpoints/tiny/export/*"))
    assert len(cached) == 1 and cached[0].read_bytes() == first.content

    def refuse(*args: object) -> None:
        raise AssertionError("exported again although the file is there")

    monkeypatch.setattr(export, "write_onnx", refuse)
    second = client.get(f"/checkpoints/{checkpoint}/export")  # onnx is the default
    assert second.status_code == 200 and second.content == first.content


@pytest.mark.filterwarnings("ignore:`torch.jit.load` is deprecated")  # TorchScript is the format asked for
def test_the_torchscript_file_loads_in_torch(client: TestClient, settings: Settings, session: Session) -> None:
    checkpoint = save_checkpoint(settings, session, in_channels=1)
    answer = client.get(f"/checkpoints/{checkpoint}/export?format=torchscript")
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-disposition"] == f'attachment; filename="{checkpoint}.pt"'
    files = {"classes.json": "", "lrcam_checkpoint_id.json": ""}
    module = torch.jit.load(io.BytesIO(answer.content), _extra_files=files)  # type: ignore[no-untyped-call]
    assert json.loads(files["classes.json"]) == CLASSES and json.loads(files["lrcam_checkpoint_id.json"]) == checkpoint
    assert module(torch.zeros(2, 1, 32, 32)).shape == (2, len(CLASSES))


def test_unknown_checkpoints_and_formats(client: TestClient, settings: Settings, session: Session) -> None:
    answer = client.get("/checkpoints/" + "0" * 32 + "/export")
    assert answer.status_code == 404 and "no checkpoint with id" in answer.json()["detail"]
    checkpoint = save_checkpoint(settings, session)
    answer = client.get(f"/checkpoints/{checkpoint}/export?format=keras")
    assert answer.status_code == 422
    (error,) = answer.json()["detail"]
    assert error["loc"] == ["query", "format"] and "'onnx'" in error["msg"] and "'torchscript'" in error["msg"]


def test_a_checkpoint_with_tampered_weights_is_a_422(client: TestClient, settings: Settings, session: Session) -> None:
    checkpoint = save_checkpoint(settings, session)
    (weights,) = settings.ARTIFACTS_DIR.glob("*/checkpoints/tiny/model.safetensors")
    weights.write_bytes(weights.read_bytes()[:-4] + b"\0\0\0\0")
    answer = client.get(f"/checkpoints/{checkpoint}/export")
    assert answer.status_code == 422
    assert "cannot be exported" in answer.text and "sha256" in answer.text


def test_the_api_offers_the_formats_ml_exports() -> None:
    assert set(typing.get_args(ExportFormat)) == set(export.FORMATS)


def images_for(channels: int, fmnist: dict[str, np.ndarray]) -> list[Image.Image]:
    """Real Fashion-MNIST images of different classes: 28 px grayscale, or tinted RGB at 48 x 36 px
    (resized and cropped by /predict and the example)."""
    picked = fmnist["test_images"][[int(np.flatnonzero(fmnist["test_labels"] == label)[0]) for label in range(10)]]
    if channels == 1:
        return [Image.fromarray(image[..., 0], "L") for image in picked]
    return [Image.fromarray(image).resize((48, 36)) for image in gray28_to_cifar(picked)]


def varied_checkpoint(settings: Settings, session: Session, images: list[Image.Image]) -> str:
    """A width-8 ResNet18 checkpoint with a class per image: BatchNorm statistics from `images`, and a
    head that scores each class by how its image's features align with the given one's (centred), so
    that each image gets its own answer (random weights answer one class for all)."""
    from ml.checkpoints import save_checkpoint as ml_save
    from ml.models import ResNet18, build_model
    from ml.normalization import Normalization
    from ml.specs import ModelSpec

    torch.manual_seed(0)
    channels, side = (1, 28) if images[0].mode == "L" else (3, 32)
    fitted = [ImageOps.fit(image, (side, side), Image.Resampling.BILINEAR) for image in images]
    pixels = np.stack([np.asarray(image, np.uint8).reshape(side, side, -1) for image in fitted])
    spec, classes = {"name": "resnet18", "width": 8}, [f"class {i}" for i in range(len(images))]
    model = build_model(ModelSpec.model_validate(spec), in_channels=channels, num_classes=len(classes))
    assert isinstance(model, ResNet18)
    normalization = Normalization.of([0.3] * channels, [0.35] * channels)
    x = normalization.normalize(torch.from_numpy(pixels))
    with torch.no_grad():
        model.train()(x)
        features = model.eval().pool(model.forward_features(x)).flatten(1)
        centre = features.mean(0)
        weights = (features - centre) / (features - centre).norm(dim=1, keepdim=True)
        model.fc.weight.copy_(weights)
        model.fc.bias.copy_(-weights @ centre)
    manifest = {
        "model": spec,
        "in_channels": channels,
        "num_classes": len(classes),
        "image_size": side,
        "classes": classes,
        "mean": list(normalization.mean),
        "std": list(normalization.std),
    }
    job = put_job(session, status="succeeded")
    relative = f"{job.id}/checkpoints/best"
    ml_save(settings.ARTIFACTS_DIR / relative, model=model.eval(), manifest=manifest)
    row = store.add_checkpoint(
        session,
        job_id=job.id,
        model=spec,
        dataset="fashion_mnist",
        classes=classes,
        test_acc=0.5,
        epoch=1,
        path=relative,
    )
    assert row is not None
    return row.id


def photo_of(image: Image.Image) -> bytes:
    """`image` as a phone stores a photo: a JPEG three times the size, kept on its side with an EXIF
    orientation that says to turn it upright (a JPEG that large also decodes at a reduced scale)."""
    large = image.resize((image.width * 3, image.height * 3), Image.Resampling.BICUBIC)
    exif = Image.Exif()
    exif[0x0112] = 6  # Orientation: turn 90 degrees clockwise to show
    out = io.BytesIO()
    large.transpose(Image.Transpose.ROTATE_90).save(out, format="JPEG", quality=95, exif=exif)
    return out.getvalue()


def png_of(image: Image.Image) -> bytes:
    out = io.BytesIO()
    image.save(out, format="PNG")
    return out.getvalue()


@pytest.mark.parametrize(("channels", "encode"), [(1, png_of), (3, png_of), (3, photo_of)])
def test_the_readme_example_gives_predicts_answers(
    client: TestClient,
    settings: Settings,
    session: Session,
    fmnist_arrays: dict[str, np.ndarray],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    channels: int,
    encode: Callable[[Image.Image], bytes],
) -> None:
    """The README's lines classify with the exported file as /predict does, to the probability: small
    images, and photos that decode at a reduced scale and turn upright by their EXIF orientation."""
    match = EXAMPLE.search((ROOT / "README.md").read_text(encoding="utf-8"))
    assert match is not None, "README.md has no export example"
    code = match.group(1)
    images = images_for(channels, fmnist_arrays)
    checkpoint = varied_checkpoint(settings, session, images)
    work = tmp_path / "example"
    (work / "examples").mkdir(parents=True)
    (work / "model.onnx").write_bytes(client.get(f"/checkpoints/{checkpoint}/export").content)
    monkeypatch.chdir(work)
    labels = set()
    for image in images:
        data = encode(image)
        (work / "examples" / "shirt.png").write_bytes(data)  # the example's path; Pillow reads the format inside
        predicted = client.post(f"/predict?checkpoint={checkpoint}", files={"file": ("shirt.png", data)})
        assert predicted.status_code == 200, predicted.text
        answer = predicted.json()["predictions"][0]
        printed, namespace = io.StringIO(), dict[str, Any]()
        with contextlib.redirect_stdout(printed):
            exec(compile(code, "README.md", "exec"), namespace)
        assert printed.getvalue().strip() == answer["label"]
        logits = namespace["model"].run(["logits"], {"input": namespace["x"].astype(np.float32)})[0][0]
        exps = np.exp(logits - logits.max())
        probabilities = exps / exps.sum()
        assert float(probabilities.max()) == pytest.approx(answer["confidence"], abs=1e-5)
        labels.add(printed.getvalue().strip())
    assert len(labels) == len(images)  # each image its own answer: a wrong preparation would show
