"""lrcam's engine: data, augmentation, models, training, LR range test, GradCAM, checkpoints."""

import os

# albumentations asks the network for a newer release on import; this service runs offline.
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
