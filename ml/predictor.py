"""Inference on a checkpoint: preprocess any PIL image, predict top-k classes, optionally explain.

The model is loaded once, rebuilt from the checkpoint's manifest, and fed as the trainer fed it:
converted to the manifest's channel count, resized to its image size, normalized with its mean
and std.
"""

from __future__ import annotations

import base64
import os
import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from ml.calibration import applied_temperature
from ml.checkpoints import load_model
from ml.data import fit_image
from ml.gradcam import check_method, explain, overlay, overlay_size, to_png_bytes
from ml.models import flip_averaged
from ml.normalization import Normalization

# Overlays are resized and PNG-encoded (in C code that releases the GIL), then base64-encoded: a batch's
# spread over the cores (one image is rendered in the caller's thread; the pool's threads start on first use).
_ENCODERS = ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1), thread_name_prefix="overlay")


@dataclass(frozen=True)
class Query:
    """One request's images, as `Predictor.query` prepares them, and what it asks of them."""

    pixels: np.ndarray  # (N, S, S, C) uint8: upright, in the model's channels and size
    topk: int = 3  # classes to list per image, already capped at the class count
    target: str = "pred"  # GradCAM's class: "pred" (each image's predicted class) or a class name


class Predictor:
    """A checkpoint loaded for inference; safe to share between threads."""

    def __init__(self, folder: Path, device: str | torch.device | None = None) -> None:
        """`device` None means the CPU: the API process leaves the GPU to training unless told."""
        self.folder = Path(folder)
        self.model, self.manifest = load_model(self.folder, device=device or "cpu")
        self.classes: list[str] = list(self.manifest["classes"])
        self.in_channels: int = self.manifest["in_channels"]
        self.image_size: int = self.manifest["image_size"]
        self.normalization = Normalization.of(self.manifest["mean"], self.manifest["std"])
        # evaluated on each image and its mirror image (TrainSpec.test_time_flip): predict and explain the same way
        self.test_time_flip = bool(self.manifest.get("spec", {}).get("test_time_flip", False))
        # the temperature fitted on the validation split (ml.calibration), or None and why there is none
        self.temperature, self.uncalibrated_reason = applied_temperature(self.manifest)
        # One lock for every forward pass: parallel passes would only fight over the same cores.
        self._lock = threading.Lock()

    def predict(
        self,
        images: list[Image.Image],
        *,
        topk: int = 3,
        gradcam: bool = False,
        method: str = "gradcam",
        target: str = "pred",
        calibrated: bool = False,
    ) -> list[dict[str, Any]]:
        """One dict per image: label, class_index, confidence, topk [{label, probability}], gradcam."""
        query = self.query(images, topk=topk, target=target)
        return self.predict_many([query], gradcam=gradcam, method=method, calibrated=calibrated)[0]

    def query(self, images: list[Image.Image], *, topk: int = 3, target: str = "pred") -> Query:
        """`images` made ready for the model (upright, its channels and size) with what is asked of
        them; ValueError for an unknown target or an image the model cannot take."""
        if target != "pred" and target not in self.classes:
            raise ValueError(f"unknown target {target!r}; expected 'pred' or one of {self.classes}")
        shape = (0, self.image_size, self.image_size, self.in_channels)
        pixels = np.stack([self._pixels(image) for image in images]) if images else np.zeros(shape, np.uint8)
        return Query(pixels, topk=max(1, min(int(topk), len(self.classes))), target=target)

    def predict_many(
        self, queries: Sequence[Query], *, gradcam: bool = False, method: str = "gradcam", calibrated: bool = False
    ) -> list[list[dict[str, Any]]]:
        """Each query's results (as `predict`'s), from one forward pass, and one GradCAM backward, over
        the images of all of them: how the API serves concurrent requests (service.batching). With
        `calibrated`, the probabilities of the logits divided by the checkpoint's fitted temperature
        (ValueError when it has none); the predicted class, and so GradCAM's, stays the same."""
        check_method(method)
        if calibrated and self.temperature is None:
            raise ValueError(f"the checkpoint has no fitted temperature: {self.uncalibrated_reason}")
        sizes = [len(query.pixels) for query in queries]
        if not sum(sizes):
            return [[] for _ in queries]
        pixels = np.concatenate([query.pixels for query in queries])  # (N, S, S, C) uint8
        batch = self._tensor(pixels)
        with self._lock:
            if gradcam:  # one forward pass gives the predictions and the maps
                targets = [
                    None if q.target == "pred" else self.classes.index(q.target)
                    for q in queries
                    for _ in range(len(q.pixels))
                ]
                chosen_by = None if all(t is None for t in targets) else targets
                logits, cams, chosen = explain(
                    self.model, batch, targets=chosen_by, method=method, flip=self.test_time_flip
                )
            else:
                with torch.inference_mode():
                    logits = self.model(batch)
                    if self.test_time_flip:
                        logits = flip_averaged(self.model, batch, logits)
        scale = self.temperature if calibrated and self.temperature is not None else 1.0
        probs = torch.softmax(logits.float() / scale, dim=1).cpu().numpy()
        ks = [query.topk for query in queries for _ in range(len(query.pixels))]
        results = [self._describe(row, k) for row, k in zip(probs, ks)]
        if calibrated:  # said with each result: a batch's requests share the checkpoint, and so the T
            for result in results:
                result["temperature"] = scale
        if gradcam:
            for result, explanation in zip(results, self._overlays(pixels, cams, chosen, method)):
                result["gradcam"] = explanation
        ends = np.cumsum(sizes).tolist()
        return [results[end - size : end] for size, end in zip(sizes, ends)]

    def _overlays(self, pixels: np.ndarray, cams: np.ndarray, chosen: list[int], method: str) -> list[dict[str, Any]]:
        """The `gradcam` field of each result: the map over its image as a base64 PNG."""
        size = overlay_size(self.image_size)

        def render(image: np.ndarray, cam: np.ndarray) -> str:
            return base64.b64encode(to_png_bytes(overlay(image, cam, size=size))).decode("ascii")

        encoded = (_ENCODERS.map if len(pixels) > 1 else map)(render, pixels, cams)
        return [
            {"method": method, "target": self.classes[i], "overlay_png_base64": png} for png, i in zip(encoded, chosen)
        ]

    def _describe(self, probs: np.ndarray, k: int) -> dict[str, Any]:
        order = np.argsort(-probs, kind="stable")[:k]
        best = int(order[0])
        return {
            "label": self.classes[best],
            "class_index": best,
            "confidence": float(probs[best]),
            "topk": [{"label": self.classes[i], "probability": float(probs[i])} for i in order],
            "gradcam": None,
        }

    def fit(self, image: Image.Image) -> Image.Image:
        """`image` as the model takes it: upright, in its channels ("L" or "RGB"), resized in one step from
        the pixels given to its size, as an image folder's training images (ml.data.fit_image). Fitting
        it again changes nothing. ValueError for a mode that cannot be converted."""
        if not isinstance(image, Image.Image):
            raise TypeError(f"expected a PIL.Image.Image; got {type(image).__name__}")
        mode = "L" if self.in_channels == 1 else "RGB"
        try:  # upright, alpha on white, aspect kept
            return fit_image(image, self.image_size, mode)
        except ValueError as exc:
            raise ValueError(f"cannot convert an image of mode {image.mode!r} to {mode!r}: {exc}") from exc

    def _pixels(self, image: Image.Image) -> np.ndarray:
        """`image` as uint8 (S, S, C): `fit`, as an array."""
        array = np.asarray(self.fit(image), dtype=np.uint8)
        return array.reshape(self.image_size, self.image_size, -1)

    def _tensor(self, pixels: np.ndarray) -> torch.Tensor:
        """uint8 (N, H, W, C) -> normalized float32 (N, C, H, W) on the model's device, as evaluation
        normalizes them."""
        device = next(self.model.parameters()).device
        return self.normalization.normalize(torch.from_numpy(pixels).to(device))
