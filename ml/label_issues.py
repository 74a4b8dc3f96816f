"""Likely label errors: the held-out images (the validation split when the run held one out, else the test
set) whose given label the best model contradicts, found by cleanlab's confident learning
(`cleanlab.filter.find_label_issues` on the model's probabilities) and ranked by cleanlab's label quality
score (`cleanlab.rank.get_label_quality_scores`, self-confidence: the probability of the given class),
lowest first. `label_issues.json` holds them; `label_issues/<index>_given.png` and `_predicted.png` the
GradCAM overlays of the given and the predicted class of the first `TOP_OVERLAYS` (ml.trust writes them).

Torch-free: the API pages through the file. cleanlab is imported by `rank` only, on the worker."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

FILE_NAME = "label_issues.json"
OVERLAY_FOLDER = "label_issues"  # beside label_issues.json: label_issues/<index>_<target>.png
FORMAT = 1  # label_issues.json's "format"; a reader refuses others
TOP_OVERLAYS = 50  # the highest-ranked issues get overlays of both classes: ~0.9 MB of PNGs at 96 px
DIGITS = 4  # probabilities and scores kept to 1e-4
Target = Literal["given", "predicted"]
TARGETS: tuple[Target, ...] = ("given", "predicted")


def rank(labels: np.ndarray, probabilities: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(the indices of the likely label errors, most likely first; every image's label quality score).
    Confident learning (prune by noise rate) picks them; ties in the score keep index order."""
    from cleanlab.filter import find_label_issues  # scikit-learn and pandas: the worker's, not the API's
    from cleanlab.rank import get_label_quality_scores

    labels = np.asarray(labels, dtype=np.int64)
    scores = np.asarray(get_label_quality_scores(labels, probabilities), dtype=np.float64)
    if len(np.unique(labels)) < 2:  # confident learning needs two classes to confuse
        return np.zeros(0, dtype=np.int64), scores
    mask = find_label_issues(labels, probabilities, n_jobs=1)  # n_jobs=1: no process pool inside a worker
    issues = np.flatnonzero(mask)
    return issues[np.argsort(scores[issues], kind="stable")].astype(np.int64), scores


def overlay_name(index: int, target: Target) -> str:
    return f"{index}_{target}.png"


@dataclass(frozen=True)
class LabelIssues:
    """label_issues.json in memory: the issues in rank order, each an image of `set_name`."""

    set_name: str  # "validation" or "test"
    classes: list[str]
    scored: int  # images scored: the size of the set
    index: np.ndarray  # int64: each issue's position in its set
    given: np.ndarray  # int64: its label
    predicted: np.ndarray  # int64: the model's class
    score: np.ndarray  # float64: cleanlab's label quality score (lower: more likely wrong)
    given_probability: np.ndarray  # float64: the model's probability of the given class
    overlays: int = 0  # the first this many issues have overlays of both classes
    test_time_flip: bool = False

    def __post_init__(self) -> None:
        n = len(self.index)
        if any(len(a) != n for a in (self.given, self.predicted, self.score, self.given_probability)):
            raise ValueError(f"label issues: index, given, predicted, score and given_probability need {n} each")
        if n and (self.index.min() < 0 or self.index.max() >= self.scored):
            raise ValueError(f"label issues: an index outside 0-{self.scored - 1}")

    def position(self, index: int) -> int | None:
        """The rank (0-based) of the issue of image `index`, or None when that image is none."""
        found = np.flatnonzero(self.index == index)
        return int(found[0]) if len(found) else None

    def has_overlay(self, index: int) -> bool:
        position = self.position(index)
        return position is not None and position < self.overlays

    def to_json(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "set": self.set_name,
            "classes": list(self.classes),
            "scored": self.scored,
            "overlays": self.overlays,
            "test_time_flip": self.test_time_flip,
            "issues": [
                {
                    "index": int(i),
                    "given_class": self.classes[g],
                    "predicted_class": self.classes[p],
                    "score": round(float(s), DIGITS),
                    "given_probability": round(float(q), DIGITS),
                }
                for i, g, p, s, q in zip(self.index, self.given, self.predicted, self.score, self.given_probability)
            ],
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> LabelIssues:
        if data.get("format") != FORMAT:
            raise ValueError(f"{FILE_NAME} of format {data.get('format')!r}; this reader knows format {FORMAT}")
        classes = [str(c) for c in data["classes"]]
        issues = data["issues"]
        return cls(
            set_name=str(data["set"]),
            classes=classes,
            scored=int(data["scored"]),
            index=np.asarray([i["index"] for i in issues], dtype=np.int64),
            given=np.asarray([classes.index(i["given_class"]) for i in issues], dtype=np.int64),
            predicted=np.asarray([classes.index(i["predicted_class"]) for i in issues], dtype=np.int64),
            score=np.asarray([i["score"] for i in issues], dtype=np.float64),
            given_probability=np.asarray([i["given_probability"] for i in issues], dtype=np.float64),
            overlays=int(data.get("overlays", 0)),
            test_time_flip=bool(data.get("test_time_flip", False)),
        )


def find(
    labels: np.ndarray, probabilities: np.ndarray, classes: list[str], *, set_name: str, test_time_flip: bool = False
) -> LabelIssues:
    """The likely label errors of a set from the model's probabilities (N, K) of its images."""
    labels = np.asarray(labels, dtype=np.int64)
    issues, scores = rank(labels, probabilities)
    return LabelIssues(
        set_name=set_name,
        classes=list(classes),
        scored=len(labels),
        index=issues,
        given=labels[issues],
        predicted=np.asarray(probabilities, dtype=np.float64)[issues].argmax(axis=1).astype(np.int64),
        score=scores[issues],
        given_probability=np.asarray(probabilities, dtype=np.float64)[issues, labels[issues]],
        overlays=min(TOP_OVERLAYS, len(issues)),
        test_time_flip=test_time_flip,
    )


def save(issues: LabelIssues, path: Path) -> Path:
    path.write_text(json.dumps(issues.to_json(), separators=(",", ":")))
    return path


def load(path: Path) -> LabelIssues:
    return LabelIssues.from_json(json.loads(path.read_text()))
