"""The API's one contact with torch: checkpoints loaded for inference, a few kept in memory.

Imported lazily by the predict route (never by `import service.main`), so the API starts, and
answers everything but /predict, without loading torch."""

from __future__ import annotations

import threading
from collections import OrderedDict
from pathlib import Path
from typing import Any

from PIL import Image

from ml.checkpoints import CheckpointError
from ml.predictor import Predictor

CACHE_SIZE = 4  # checkpoints kept loaded; a ResNet18 at width 64 is ~45 MB of weights


class UnusableCheckpoint(RuntimeError):
    """A checkpoint whose files are missing, malformed or do not fit its model."""


class PredictorCache:
    """Least-recently-used `Predictor`s by checkpoint id."""

    def __init__(self, size: int = CACHE_SIZE) -> None:
        self.size = size
        self._predictors: OrderedDict[str, Predictor] = OrderedDict()
        self._lock = threading.Lock()  # also serializes loading: one load of a checkpoint at a time

    def get(self, checkpoint_id: str, folder: Path) -> Predictor:
        with self._lock:
            predictor = self._predictors.get(checkpoint_id)
            if predictor is None:
                try:
                    predictor = Predictor(folder)
                except CheckpointError as exc:
                    raise UnusableCheckpoint(f"checkpoint {checkpoint_id} cannot be loaded: {exc}") from exc
                self._predictors[checkpoint_id] = predictor
            self._predictors.move_to_end(checkpoint_id)
            while len(self._predictors) > self.size:
                self._predictors.popitem(last=False)
            return predictor

    def __len__(self) -> int:
        return len(self._predictors)


cache = PredictorCache()


def predict(checkpoint_id: str, folder: Path, images: list[Image.Image], **options: Any) -> list[dict[str, Any]]:
    """`ml.predictor.Predictor.predict` on the (cached) checkpoint: one dict per image."""
    return cache.get(checkpoint_id, folder).predict(images, **options)
