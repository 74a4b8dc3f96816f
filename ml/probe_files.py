"""Where a run's probe explanations lie in its folder (ml.probes writes them, the API reads them):
probes/set.npz (indices, images, labels, classes) and probes/epoch_<N>.npz (maps, predicted,
confidence, true_probability) per epoch. Importing this module never imports torch."""

from __future__ import annotations

import re
from pathlib import Path

FOLDER = "probes"
SET_FILE = "set.npz"
EPOCH_FILE = re.compile(r"epoch_([1-9][0-9]*)\.npz")


def epoch_file(folder: Path, epoch: int) -> Path:
    return folder / f"epoch_{epoch}.npz"


def recorded_epochs(folder: Path) -> list[int]:
    """The epochs whose maps `folder` holds, in order (none without the probe set itself)."""
    if not (folder / SET_FILE).is_file():
        return []
    found = (EPOCH_FILE.fullmatch(path.name) for path in folder.glob("epoch_*.npz"))
    return sorted(int(match.group(1)) for match in found if match)
