"""LR range test overhead: ml.lr_finder.range_test (the sweep run_lr_finder runs) vs the same number
of bare training steps (zero_grad, forward, loss, backward, step) on the same loader and model.

    python bench/lr_finder.py --quick        # ResNet18 width 8, batch 64, 30 iterations: < 1 min on 2 cores
    python bench/lr_finder.py                # ResNet18 width 64, batch 128, 100 iterations (the API's defaults)
    python bench/lr_finder.py --device cuda

The sweep runs from 1e-7 to 0.1 with diverge_th 1e9 so that it never stops early: both sides train
the same number of batches. Rounds alternate the two and the medians are reported (these machines
have slow spells). Data: CIFAR-10 under DATA_DIR when it is there, else random CIFAR-shaped images.
Ends with `lr_finder: ours <s>, baseline <s>, ratio <ours/baseline>`."""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ml.data import DatasetBundle, ImageSet
from ml.loaders import make_loaders
from ml.lr_finder import _Cycle, range_test
from ml.models import build_model
from ml.runtime import autocast, memory_format
from ml.specs import ModelSpec
from ml.transforms import RunTransforms

START_LR, END_LR = 1e-7, 0.1  # a range that does not diverge, so the sweep trains every batch
NO_DIVERGENCE = 1e9  # diverge_th


def bundle_for(data_dir: Path, subset: int) -> DatasetBundle:
    """CIFAR-10 (the first `subset` training images) if present, else random 32x32 RGB images."""
    if (data_dir / "cifar-10-batches-py").is_dir():
        from ml.data import load_dataset
        from ml.specs import DatasetSpec

        return load_dataset(DatasetSpec(name="cifar10", train_subset=subset, test_subset=100), data_dir)
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (subset, 32, 32, 3), dtype=np.uint8)
    split = ImageSet(images=images, labels=rng.integers(0, 10, subset).astype(np.int64))
    classes = [str(i) for i in range(10)]
    return DatasetBundle("random", split, split, classes, (0.5, 0.5, 0.5), (0.25, 0.25, 0.25))


def bare_steps(model: nn.Module, optimizer: torch.optim.Optimizer, loader, iterations: int) -> None:
    """The baseline: `iterations` plain SGD steps, as a hand-written training loop runs them."""
    device = next(model.parameters()).device
    criterion, cycle = nn.CrossEntropyLoss(), _Cycle(loader)
    model.train()
    for _ in range(iterations):
        inputs, labels = (t.to(device, non_blocking=True) for t in next(cycle))
        inputs = inputs.contiguous(memory_format=memory_format(device))  # as the sweep feeds them
        optimizer.zero_grad(set_to_none=True)
        with autocast(device):
            loss = criterion(model(inputs), labels)
        loss.backward()
        optimizer.step()
    if device.type == "cuda":
        torch.cuda.synchronize()


def timed(fn) -> float:
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="width 8, batch 64, 30 iterations, 3 rounds")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--rounds", type=int, default=None)
    parser.add_argument("--data-dir", type=Path, default=Path(os.environ.get("DATA_DIR", "var/data")))
    args = parser.parse_args()
    width, batch, iterations, rounds = (8, 64, 30, 3) if args.quick else (64, 128, 100, 3)
    rounds = args.rounds or rounds
    device = torch.device(args.device)
    torch.manual_seed(0)
    bundle = bundle_for(args.data_dir, subset=batch * 20)
    transforms = RunTransforms.for_bundle("default", bundle)
    loader = make_loaders(bundle, transforms, batch_size=batch, seed=0, device=device).train
    model = build_model(ModelSpec(name="resnet18", width=width), in_channels=3, num_classes=10)
    model = model.to(device, memory_format=memory_format(device))  # as run_lr_finder places it
    optimizer = torch.optim.SGD(model.parameters(), lr=START_LR, momentum=0.9, weight_decay=5e-4)
    print(f"device {device}, resnet18 width {width}, batch {batch}, {iterations} iterations, {rounds} rounds")

    def ours() -> None:
        curve = range_test(
            model,
            optimizer,
            loader,
            criterion=nn.CrossEntropyLoss(),
            start_lr=START_LR,
            end_lr=END_LR,
            num_iter=iterations,
            diverge_th=NO_DIVERGENCE,
        )
        assert len(curve.lrs) == iterations, curve.stop_reason
        if device.type == "cuda":
            torch.cuda.synchronize()

    bare_steps(model, optimizer, loader, 3)  # warm-up: first-call allocations, oneDNN primitives
    ours_s, base_s = [], []
    for i in range(rounds):
        pair = [("ours", ours), ("baseline", lambda: bare_steps(model, optimizer, loader, iterations))]
        for name, fn in pair if i % 2 == 0 else pair[::-1]:
            seconds = timed(fn)
            (ours_s if name == "ours" else base_s).append(seconds)
            print(f"round {i + 1} {name}: {seconds:.3f} s")
    ours_m, base_m = statistics.median(ours_s), statistics.median(base_s)
    print(f"lr_finder: ours {ours_m:.3f} s, baseline {base_m:.3f} s, ratio {ours_m / base_m:.3f}")


if __name__ == "__main__":
    main()
