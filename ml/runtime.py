"""What every run entrypoint (training, the LR range test) decides the same way: the device, the
seeds, the data-loading processes, the memory layout and precision, and how result files are written."""

from __future__ import annotations

import json
import os
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch


def resolve_device(device: str | torch.device | None) -> torch.device:
    """Entrypoints choose the device; None means the GPU when there is one."""
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def default_num_workers(device: torch.device) -> int:
    """On 2 CPU cores the main process keeps up with the model; a GPU needs loading processes."""
    return 0 if device.type == "cpu" else min(8, os.cpu_count() or 1)


def memory_format(device: torch.device) -> torch.memory_format:
    """channels_last on CUDA (tensor cores want NHWC). On CPU it would gain 10-20%, but:

    The oneDNN defect, explained here once: torch 2.14.1's CPU oneDNN convolution corrupts memory when
    it takes its channels_last path at odd batch sizes (3, 5, 25, 77...; a segfault or "corrupted size
    vs. prev_size"), in the forward and in an eval-mode backward after a training run in the process;
    the last batch of a test set can be any size. The workaround is applied in three places, each
    pointing here: this function (contiguous on CPU), ml.batch_augment._normalize_planar (standard NCHW
    strides, which a permuted one-channel batch lacks while counting as contiguous), and
    tests/ml/gradcam_reference.py (oneDNN off for pytorch-grad-cam's full backward)."""
    return torch.channels_last if device.type == "cuda" else torch.contiguous_format


def autocast(device: torch.device) -> torch.autocast:
    # bf16 on CUDA; on CPU bf16 is 2.4x slower than fp32 (bench/README.md, "Baselines"), so autocast is a no-op there.
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda")


def write_json(path: Path, payload: Any, *, allow_nan: bool = True) -> None:
    """Writes atomically: a crash leaves the previous file, never half of one."""
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(payload, indent=1, allow_nan=allow_nan))
    os.replace(tmp, path)
