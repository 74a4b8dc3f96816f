"""The API's one contact with torch: checkpoints loaded for inference, a few kept in memory.

Imported lazily by the prediction engine (service.predictions; never by `import service.main`), so
the API starts, and answers everything but /predict, without loading torch."""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from pathlib import Path

import torch

from ml.checkpoints import CheckpointError
from ml.predictor import Predictor
from service.predictions import UnusableCheckpoint

logger = logging.getLogger(__name__)
CACHE_SIZE = 4  # checkpoints kept loaded; a ResNet18 at width 64 is ~45 MB of weights


class PredictorCache:
    """Least-recently-used `Predictor`s by checkpoint id and device: loaded once, kept warm."""

    def __init__(self, size: int = CACHE_SIZE) -> None:
        self.size = size
        self._predictors: OrderedDict[tuple[str, str], Predictor] = OrderedDict()  # by (id, device)
        self._lock = threading.Lock()  # also serializes loading: one load of a checkpoint at a time

    def get(self, checkpoint_id: str, folder: Path, device: str = "cpu") -> Predictor:
        if device != "cpu" and not torch.cuda.is_available():
            logger.warning("PREDICT_DEVICE=%s but torch sees no GPU: predicting on the CPU", device)
            device = "cpu"
        key = (checkpoint_id, device)
        with self._lock:
            predictor = self._predictors.get(key)
            if predictor is None:
                try:
                    predictor = Predictor(folder, device=device)
                except CheckpointError as exc:
                    raise UnusableCheckpoint(f"checkpoint {checkpoint_id} cannot be loaded: {exc}") from exc
                self._predictors[key] = predictor
            self._predictors.move_to_end(key)
            while len(self._predictors) > self.size:
                self._predictors.popitem(last=False)
            return predictor

    def __len__(self) -> int:
        return len(self._predictors)


cache = PredictorCache()
DEFAULT_THREADS = torch.get_num_threads()  # torch's own choice: one per core


def use_threads(threads: int) -> None:
    """torch's intra-op threads for the calling thread's work (0: torch's default). Beside a worker
    training on the same 2 cores, predictions on both cores made the two processes' OpenMP teams
    fight (bench/load.py): the API took 0.44 cores for 8.8 one-image predictions a second, p99 4 s,
    training at 0.70x; on one thread 0.07 cores for 9.8 a second plus 50 polls, training at 0.95x."""
    wanted = threads or DEFAULT_THREADS
    if torch.get_num_threads() != wanted:
        torch.set_num_threads(wanted)


def load(checkpoint_id: str, folder: Path, *, device: str = "cpu", threads: int = 0) -> Predictor:
    """The checkpoint's (cached) `ml.predictor.Predictor`, the calling thread set to `threads`."""
    use_threads(threads)
    return cache.get(checkpoint_id, folder, device)
