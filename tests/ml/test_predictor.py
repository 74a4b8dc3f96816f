"""ml.predictor: any PIL image in, sorted top-k out, GradCAM overlays as PNG, bad targets refused."""

from __future__ import annotations

import base64
import io
import threading
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from ml.checkpoints import save_checkpoint
from ml.models import build_model
from ml.predictor import Predictor
from ml.specs import ModelSpec

CIFAR = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def write_checkpoint(
    folder: Path, *, in_channels: int, image_size: int, name: str = "custom_resnet", spec: dict | None = None
) -> Path:
    torch.manual_seed(0)
    model = build_model(ModelSpec(name=name, width=4), in_channels=in_channels, num_classes=len(CIFAR))
    manifest = {
        "model": {"name": name, "width": 4},
        "in_channels": in_channels,
        "num_classes": len(CIFAR),
        "image_size": image_size,
        "dataset": "cifar10",
        "classes": CIFAR,
        "mean": [0.49, 0.48, 0.45][:in_channels],
        "std": [0.25, 0.24, 0.26][:in_channels],
        "epoch": 1,
        "test_acc": 0.1,
        "spec": spec or {},
    }
    return save_checkpoint(folder, model=model.eval(), manifest=manifest)


@pytest.fixture(scope="module")
def rgb(tmp_path_factory: pytest.TempPathFactory) -> Predictor:
    return Predictor(write_checkpoint(tmp_path_factory.mktemp("rgb") / "best", in_channels=3, image_size=32))


@pytest.fixture(scope="module")
def gray(tmp_path_factory: pytest.TempPathFactory) -> Predictor:
    folder = tmp_path_factory.mktemp("gray") / "best"
    return Predictor(write_checkpoint(folder, in_channels=1, image_size=28, name="resnet18"))


def noise(size: tuple[int, int] = (32, 32), mode: str = "RGB", seed: int = 0) -> Image.Image:
    channels = {"RGB": 3, "RGBA": 4, "CMYK": 4, "L": 1}[mode]
    array = np.random.default_rng(seed).integers(0, 256, (size[1], size[0], channels), dtype=np.uint8)
    return Image.fromarray(array.squeeze(-1) if channels == 1 else array, mode=mode)


def test_topk_is_sorted_and_named_from_the_manifest(rgb: Predictor) -> None:
    results = rgb.predict([noise(seed=0), noise(seed=1)], topk=5)
    assert len(results) == 2
    for result in results:
        probabilities = [entry["probability"] for entry in result["topk"]]
        assert len(probabilities) == 5 and probabilities == sorted(probabilities, reverse=True)
        assert 0 < sum(probabilities) <= 1 + 1e-6
        assert all(entry["label"] in CIFAR for entry in result["topk"])
        assert result["label"] == CIFAR[result["class_index"]] == result["topk"][0]["label"]
        assert result["confidence"] == probabilities[0]
        assert result["gradcam"] is None


@pytest.mark.parametrize(("topk", "expected"), [(0, 1), (-3, 1), (1, 1), (100, 10)])
def test_topk_is_clamped(rgb: Predictor, topk: int, expected: int) -> None:
    result = rgb.predict([noise()], topk=topk)[0]
    assert len(result["topk"]) == expected
    if expected == 10:
        assert sum(entry["probability"] for entry in result["topk"]) == pytest.approx(1.0, abs=1e-5)


def test_preprocessing_matches_the_training_pipeline(rgb: Predictor) -> None:
    image = noise((40, 40))
    pixels = np.asarray(image.resize((32, 32), Image.Resampling.BILINEAR), dtype=np.float32) / 255
    mean, std = (np.float32(v) for v in (rgb.normalization.mean, rgb.normalization.std))
    x = torch.from_numpy(((pixels - mean) / std).transpose(2, 0, 1)).unsqueeze(0)
    with torch.no_grad():
        expected = torch.softmax(rgb.model(x), dim=1)[0]
    result = rgb.predict([image], topk=10)[0]
    for entry in result["topk"]:
        assert entry["probability"] == pytest.approx(expected[CIFAR.index(entry["label"])].item(), abs=1e-5)


@pytest.mark.parametrize("mode", ["RGBA", "CMYK", "L", "P", "1", "I;16", "F"])
@pytest.mark.parametrize("predictor_name", ["rgb", "gray"])
def test_any_image_mode_works(request: pytest.FixtureRequest, predictor_name: str, mode: str) -> None:
    predictor: Predictor = request.getfixturevalue(predictor_name)
    base = noise(mode="RGBA" if mode in ("RGBA", "CMYK") else "RGB")
    image = base.convert(mode) if mode not in ("I;16", "F") else base.convert("L").convert(mode)
    result = predictor.predict([image])[0]
    assert result["label"] in CIFAR


def test_sixteen_bit_images_are_scaled_not_clipped(gray: Predictor) -> None:
    eight = np.random.default_rng(0).integers(0, 256, (28, 28), dtype=np.uint8)
    sixteen = Image.fromarray(eight.astype(np.uint16) * 257)  # the same picture at 16 bits
    assert sixteen.mode.startswith("I;16")
    ours, theirs = gray.predict([Image.fromarray(eight), sixteen], topk=10)
    assert ours["topk"] == theirs["topk"]


def test_big_non_square_image_and_mixed_batch(rgb: Predictor, gray: Predictor) -> None:
    images = [noise((300, 200)), noise((32, 32), mode="RGBA"), noise((17, 90), mode="L")]
    for predictor in (rgb, gray):
        assert len(predictor.predict(images)) == 3
    assert rgb.predict([]) == []


def decode_overlay(result: dict) -> Image.Image:
    png = base64.b64decode(result["gradcam"]["overlay_png_base64"])
    assert png.startswith(b"\x89PNG")
    return Image.open(io.BytesIO(png))


@pytest.mark.parametrize("method", ["gradcam", "gradcam++"])
def test_gradcam_overlay_is_a_png_of_at_least_128px(rgb: Predictor, gray: Predictor, method: str) -> None:
    for predictor in (rgb, gray):
        result = predictor.predict([noise((300, 200)), noise(mode="L")], gradcam=True, method=method)[0]
        assert result["gradcam"]["method"] == method
        assert result["gradcam"]["target"] == result["label"]  # target "pred"
        overlay = decode_overlay(result)
        assert overlay.mode == "RGB" and min(overlay.size) >= 128


@pytest.mark.parametrize("method", ["gradcam", "gradcam++"])
def test_gradcam_predictions_equal_the_plain_ones(rgb: Predictor, gray: Predictor, method: str) -> None:
    images = [noise(seed=seed) for seed in range(5)]  # several: the overlays are encoded in a thread pool
    for predictor in (rgb, gray):
        plain = predictor.predict(images, topk=4)
        explained = predictor.predict(images, topk=4, gradcam=True, method=method)
        for ours, theirs in zip(explained, plain):
            assert ours["label"] == theirs["label"] and ours["gradcam"]["target"] == ours["label"]
            assert [t["label"] for t in ours["topk"]] == [t["label"] for t in theirs["topk"]]
            assert ours["confidence"] == pytest.approx(theirs["confidence"], abs=1e-5)
        overlays = [decode_overlay(result) for result in explained]
        assert len({image.tobytes() for image in overlays}) == len(images)  # one per image, in order


def test_gradcam_overlay_is_the_images_heat_map(rgb: Predictor) -> None:
    from ml.gradcam import cam_for_batch, overlay

    image = noise(seed=7)
    result = rgb.predict([image], gradcam=True)[0]
    pixels = np.asarray(image)[None]
    cam = cam_for_batch(rgb.model, rgb._tensor(pixels), targets=[result["class_index"]])[0]
    assert np.array_equal(np.asarray(decode_overlay(result)), overlay(pixels[0], cam, size=128))


def test_gradcam_for_a_named_class(rgb: Predictor) -> None:
    image = noise(seed=3)
    predicted = rgb.predict([image], gradcam=True)[0]
    other = next(name for name in CIFAR if name != predicted["label"])
    named = rgb.predict([image], gradcam=True, target=other)[0]
    assert named["gradcam"]["target"] == other
    assert named["label"] == predicted["label"]  # the prediction itself does not change
    assert named["gradcam"]["overlay_png_base64"] != predicted["gradcam"]["overlay_png_base64"]


def test_unknown_target_and_method_are_refused(rgb: Predictor) -> None:
    with pytest.raises(ValueError, match=r"unknown target 'cow'; expected 'pred' or one of \['airplane'"):
        rgb.predict([noise()], gradcam=True, target="cow")
    with pytest.raises(ValueError, match="unknown GradCAM method 'eigencam'"):
        rgb.predict([noise()], gradcam=True, method="eigencam")
    with pytest.raises(TypeError, match="expected a PIL.Image.Image; got ndarray"):
        rgb.predict([np.zeros((32, 32, 3), dtype=np.uint8)])


def test_concurrent_gradcam_predictions_match_sequential_ones(rgb: Predictor) -> None:
    images = [noise(seed=seed) for seed in range(4)]
    expected = [rgb.predict([image], gradcam=True)[0] for image in images]
    results: dict[int, dict] = {}

    def work(i: int) -> None:
        for _ in range(3):
            results[i] = rgb.predict([images[i]], gradcam=i % 2 == 0)[0]

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for i, result in results.items():
        assert result["topk"] == expected[i]["topk"]
        if i % 2 == 0:
            assert result["gradcam"] == expected[i]["gradcam"]
    assert sorted(results) == [0, 1, 2, 3]
    assert sum(len(m._forward_hooks) for m in rgb.model.modules()) == 0


def test_predictor_keeps_the_manifest(rgb: Predictor, gray: Predictor) -> None:
    assert rgb.classes == CIFAR and rgb.in_channels == 3 and rgb.image_size == 32
    assert gray.in_channels == 1 and gray.image_size == 28 and len(gray.normalization.std) == 1
    assert not rgb.model.training


def test_a_test_time_flip_checkpoint_predicts_on_the_image_and_its_mirror(tmp_path: Path) -> None:
    from ml.gradcam import explain

    plain = Predictor(write_checkpoint(tmp_path / "plain", in_channels=3, image_size=32))
    flipping = Predictor(
        write_checkpoint(tmp_path / "flip", in_channels=3, image_size=32, spec={"test_time_flip": True})
    )
    with torch.no_grad():  # the same weights, made decisive: random ones predict one class for all noise
        for predictor in (plain, flipping):
            predictor.model.fc.weight.mul_(200)
    images = [noise(seed=i) for i in range(32)]
    batch = flipping._tensor(np.stack([flipping._pixels(image) for image in images]))
    with torch.inference_mode():
        expected = torch.softmax((flipping.model(batch) + flipping.model(batch.flip(3))) / 2, dim=1).numpy()
    for gradcam in (False, True):
        results = flipping.predict(images, topk=10, gradcam=gradcam)
        for result, probs in zip(results, expected):
            by_label = {entry["label"]: entry["probability"] for entry in result["topk"]}
            assert [by_label[c] for c in CIFAR] == pytest.approx(probs.tolist(), abs=1e-4)
            assert result["label"] == CIFAR[int(probs.argmax())]
            if gradcam:  # the map explains the class predicted with the mirror
                assert result["gradcam"]["target"] == result["label"]
    unflipped = np.array([r["class_index"] for r in plain.predict(images)])
    changed = np.flatnonzero(unflipped != expected.argmax(1))
    assert changed.size, "some image whose prediction its mirror changes (else the test proves little)"
    for i in changed[:3]:  # its map: the new class's, averaged with its mirror image's (as explain(flip=True))
        target, one = int(expected[i].argmax()), batch[i : i + 1]
        answer = flipping.predict([images[i]], gradcam=True)[0]["gradcam"]["overlay_png_base64"]
        _, maps, _ = explain(flipping.model, one, targets=[target], flip=True)
        _, unflipped_map, _ = explain(flipping.model, one, targets=[target])
        _, other, _ = explain(flipping.model, one, targets=[int(unflipped[i])], flip=True)
        assert not np.allclose(maps, other) and not np.allclose(maps, unflipped_map, atol=1e-2)
        pixels = np.stack([flipping._pixels(images[i])])
        rendered = [flipping._overlays(pixels, cam, [target], "gradcam")[0] for cam in (maps, unflipped_map)]
        assert answer == rendered[0]["overlay_png_base64"] != rendered[1]["overlay_png_base64"]
