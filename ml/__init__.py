"""lrcam's engine: data, augmentation, models, training, LR range test, GradCAM, checkpoints."""

import os
import sys

# albumentations asks the network for a newer release on import; this service runs offline.
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

# albumentations imports its PyTorch helpers (ToTensorV2) when it can, and so torch; lrcam never uses
# them (its loaders make the tensors). Kept out, validating a spec's augmentation (the API does, on
# every submission) loads albumentations alone: no torch in the API, no seconds of import on a request.
sys.modules.setdefault("albumentations.pytorch", None)  # type: ignore[arg-type]
