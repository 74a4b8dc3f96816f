"""torch.compile for training runs: when it pays, which mode, and graphs reused across jobs.

Compiled graphs are cached by TorchDynamo per code object, and with nn-module inlining (the default)
a new model of the same architecture, width and input shape hits the same cache entry: the second
job of a shape in a worker process compiles nothing. Inductor's on-disk cache
(TORCHINDUCTOR_CACHE_DIR) carries the generated kernels across processes, so a restarted worker
pays seconds, not the cold compile (20-30 s on 2 CPU cores for a small ResNet9: forward, backward and
evaluation). A backend that cannot compile (no C++ compiler in an image, say) falls back to eager
with a warning instead of failing the job."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from typing import cast

import torch
import torch._inductor.config
from torch import nn

from ml.specs import COMPILE_MIN_STEPS

# Distinct graphs one forward may keep: train and eval modes, full and last batches, each model
# shape a long-lived worker has trained. Past this, Dynamo would silently run the model eagerly.
RECOMPILE_LIMIT = 64

logger = logging.getLogger(__name__)


def resolve_mode(compile: str, *, device: torch.device, steps: int) -> str | None:
    """The torch.compile mode a run uses, or None for eager.

    "auto" compiles runs of at least COMPILE_MIN_STEPS training steps, where the cold compile is
    repaid by 1.1-1.5x faster steps on a CPU (bench/README.md, "Compilation"); CUDA graphs
    ("reduce-overhead") only when asked, since each distinct shape then holds its own copy of the
    activations' memory."""
    if compile == "off":
        return None
    if compile == "auto":
        return "default" if steps >= COMPILE_MIN_STEPS else None
    if compile == "reduce-overhead" and device.type != "cuda":
        return "default"  # CUDA graphs need CUDA; the rest of the mode still applies
    return compile


def compile_model(model: nn.Module, mode: str | None) -> nn.Module:
    """`model` compiled in `mode` (static shapes: one graph per batch shape), or itself for None.
    Compilation is lazy: run the compiled model inside `compiled_calls(mode)`."""
    if mode is None:
        return model
    logger.info("compiling the model with torch.compile(mode=%r)", mode)
    return cast(nn.Module, torch.compile(model, mode=mode, dynamic=False))  # an OptimizedModule


@contextlib.contextmanager
def compiled_calls(mode: str | None, *, device: torch.device) -> Iterator[None]:
    """The settings a compiled model's calls (and its lazy compilation) run under, scoped to the `with`
    block rather than set for the whole process: more recompiles kept (RECOMPILE_LIMIT), and a backend
    failure runs that frame eagerly, logged, instead of failing the job (suppress_errors). On a CPU,
    Inductor keeps the convolutions in the contiguous layout instead of converting them to
    channels_last (layout_optimization): that is oneDNN's path that corrupts memory in torch 2.14.1
    (ml.runtime.memory_format), seen as a hang or a heap-corruption abort in the compiled backward.
    Nothing for eager runs."""
    if mode is None:
        yield
        return
    dynamo = torch._dynamo.config
    with (
        dynamo.patch(
            recompile_limit=max(dynamo.recompile_limit, RECOMPILE_LIMIT),
            accumulated_recompile_limit=max(dynamo.accumulated_recompile_limit, 4 * RECOMPILE_LIMIT),
            suppress_errors=True,
        ),
        torch._inductor.config.patch(layout_optimization=device.type != "cpu"),
    ):
        yield
