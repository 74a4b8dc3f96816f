"""A finished training run's test examples as data: `examples.json` holds, for every test image in
dataset order, its true class, the best model's predicted class, the softmax probability of that
prediction (`confidence`) and of the true class, as compact parallel arrays (10,000 images: ~150 KB);
`examples/<index>.png` holds a GradCAM overlay for the capped set `overlay_indices` chooses.

Torch-free (numpy only): ml.reports writes it, the API pages through it."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

FILE_NAME = "examples.json"
OVERLAY_FOLDER = "examples"  # beside examples.json: examples/<test index>.png
FORMAT = 1  # examples.json's "format"; a reader refuses others
MAX_MISCLASSIFIED_OVERLAYS = 500  # the most confident mistakes get an overlay: ~1 MB of PNGs at 96 px
CORRECT_OVERLAYS_EACH_END = 50  # correct images with an overlay: this many most and least confident
DIGITS = 4  # probabilities kept to 1e-4: the page shows 0.1%, and the file stays small

Kind = Literal["misclassified", "correct", "all"]
Sort = Literal["-confidence", "confidence", "index"]
KINDS: tuple[Kind, ...] = ("misclassified", "correct", "all")
SORTS: tuple[Sort, ...] = ("-confidence", "confidence", "index")


def confusion_matrix(predictions: np.ndarray, labels: np.ndarray, num_classes: int) -> np.ndarray:
    """Rows are true classes, columns predicted ones."""
    flat = labels.astype(np.int64) * num_classes + predictions.astype(np.int64)
    return np.bincount(flat, minlength=num_classes**2).reshape(num_classes, num_classes)


def overlay_indices(
    true: np.ndarray,
    pred: np.ndarray,
    confidence: np.ndarray,
    *,
    misclassified: int = MAX_MISCLASSIFIED_OVERLAYS,
    correct_each_end: int = CORRECT_OVERLAYS_EACH_END,
) -> np.ndarray:
    """The test indices that get an overlay, ascending: the `misclassified` most confident mistakes and
    the `correct_each_end` most and least confident correct predictions (ties: the lower index first)."""
    wrong, right = np.flatnonzero(pred != true), np.flatnonzero(pred == true)
    by_confidence = np.argsort(-confidence[wrong], kind="stable")
    chosen = wrong[by_confidence[:misclassified]]
    ranked = right[np.argsort(-confidence[right], kind="stable")]
    ends = np.concatenate([ranked[:correct_each_end], ranked[::-1][:correct_each_end]])
    return np.unique(np.concatenate([chosen, ends]).astype(np.int64))


@dataclass(frozen=True)
class Examples:
    """examples.json in memory: parallel arrays indexed by the test image's position in the test set."""

    classes: list[str]
    true: np.ndarray  # int64 (N,)
    pred: np.ndarray  # int64 (N,)
    confidence: np.ndarray  # float64 (N,): the softmax probability of `pred`
    true_probability: np.ndarray  # float64 (N,): the softmax probability of `true`
    overlays: np.ndarray  # int64, ascending: the indices with examples/<index>.png
    overlay_size: int = 0  # px, the side of an overlay
    test_time_flip: bool = False  # probabilities and overlays from the image and its mirror

    def __post_init__(self) -> None:
        n, k = len(self.true), len(self.classes)
        if any(len(a) != n for a in (self.pred, self.confidence, self.true_probability)):
            raise ValueError(f"examples: true, pred, confidence and true_probability must have {n} entries each")
        for name, values in (("true", self.true), ("pred", self.pred)):
            if n and (values.min() < 0 or values.max() >= k):
                raise ValueError(f"examples: {name} holds a class index outside 0-{k - 1}")
        if len(self.overlays) and (self.overlays.min() < 0 or self.overlays.max() >= n):
            raise ValueError(f"examples: an overlay index outside 0-{n - 1}")

    @property
    def correct(self) -> np.ndarray:
        correct: np.ndarray = self.pred == self.true
        return correct

    def confusion(self) -> np.ndarray:
        return confusion_matrix(self.pred, self.true, len(self.classes))

    def has_overlay(self, index: int) -> bool:
        position = int(np.searchsorted(self.overlays, index))
        return position < len(self.overlays) and int(self.overlays[position]) == index

    def select(
        self, *, kind: Kind = "misclassified", true_class: int | None = None, pred_class: int | None = None, sort: Sort
    ) -> np.ndarray:
        """The test indices of `kind` with those classes (None: any), in `sort` order ("-confidence": the
        most confident first; ties in index order)."""
        mask = np.ones(len(self.true), dtype=bool) if kind == "all" else self.correct == (kind == "correct")
        if true_class is not None:
            mask &= self.true == true_class
        if pred_class is not None:
            mask &= self.pred == pred_class
        indices = np.flatnonzero(mask)
        if sort == "index":
            return indices
        keys = self.confidence[indices]
        return indices[np.argsort(-keys if sort == "-confidence" else keys, kind="stable")]

    def to_json(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "classes": list(self.classes),
            "count": len(self.true),
            "true": self.true.tolist(),
            "pred": self.pred.tolist(),
            "correct": self.correct.astype(np.int8).tolist(),
            "confidence": np.round(self.confidence, DIGITS).tolist(),
            "true_probability": np.round(self.true_probability, DIGITS).tolist(),
            "overlays": self.overlays.tolist(),
            "overlay_size": self.overlay_size,
            "test_time_flip": self.test_time_flip,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Examples:
        if data.get("format") != FORMAT:
            raise ValueError(f"examples.json of format {data.get('format')!r}; this reader knows format {FORMAT}")
        return cls(
            classes=[str(c) for c in data["classes"]],
            true=np.asarray(data["true"], dtype=np.int64),
            pred=np.asarray(data["pred"], dtype=np.int64),
            confidence=np.asarray(data["confidence"], dtype=np.float64),
            true_probability=np.asarray(data["true_probability"], dtype=np.float64),
            overlays=np.unique(np.asarray(data["overlays"], dtype=np.int64)),
            overlay_size=int(data.get("overlay_size", 0)),
            test_time_flip=bool(data.get("test_time_flip", False)),
        )


def save(examples: Examples, path: Path) -> Path:
    path.write_text(json.dumps(examples.to_json(), separators=(",", ":")))
    return path


def load(path: Path) -> Examples:
    return Examples.from_json(json.loads(path.read_text()))
