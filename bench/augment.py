"""The default augmentation (reflect pad-and-crop, flip, Cutout, normalize) on CIFAR-shaped images:
ml.batch_augment through the loader the trainer uses, on the device, vs albumentations through a
DataLoader with 2 workers (the image-by-image path). Both produce whole normalized float32 NCHW
batches; tests/ml/test_batch_augment.py checks that they draw the same distributions.

    python bench/augment.py --quick          # 10,000 images, batch 512, 3 rounds: < 1 min on 2 cores
    python bench/augment.py                  # 50,000 images (CIFAR-10's training set), 3 rounds
    python bench/augment.py --device cuda --workers 8

Rounds alternate the two sides and medians are reported (these machines have slow spells). Data:
CIFAR-10 under --data-dir when it is there, else random CIFAR-shaped images. Ends with
`augment: ours <img/s> img/s, baseline <img/s> img/s, ratio <ours/baseline>`."""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.train import bundle_for
from ml.loaders import make_loaders
from ml.transforms import RunTransforms


def epoch(loader, device: torch.device) -> int:
    images = 0
    for x, y in loader:
        x = x.to(device, non_blocking=True)  # the DataLoader's batches still have to get there
        images += len(y)
    if device.type == "cuda":
        torch.cuda.synchronize()
    return images


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="10,000 images instead of 50,000")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--workers", type=int, default=2, help="the baseline DataLoader's workers")
    parser.add_argument("--batch-size", type=int, default=512)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--data-dir", type=Path, default=Path(os.environ.get("DATA_DIR", "var/data")))
    args = parser.parse_args()
    device = torch.device(args.device)
    bundle = bundle_for(args.data_dir, 10_000 if args.quick else 50_000)
    common = {"batch_size": args.batch_size, "seed": 0}
    ours = make_loaders(bundle, RunTransforms.for_bundle("default", bundle), **common, device=device).train
    baseline = make_loaders(
        bundle,
        RunTransforms.for_bundle("default", bundle, batched=False),
        **common,
        num_workers=args.workers,
        pin_memory=device.type == "cuda",
    ).train
    print(
        f"device {device}, {torch.get_num_threads()} threads, {len(bundle.train)} {bundle.name} images, "
        f"batch {args.batch_size}, baseline {args.workers} workers, load {os.getloadavg()[0]:.2f}"
    )
    sides = {"ours": ours, "baseline": baseline}
    rates: dict[str, list[float]] = {"ours": [], "baseline": []}
    epoch(ours, device)  # warm-up; the baseline's first epoch also starts its (persistent) workers
    epoch(baseline, device)
    for i in range(args.rounds):
        for name in list(sides) if i % 2 == 0 else list(sides)[::-1]:
            started = time.perf_counter()
            images = epoch(sides[name], device)
            rates[name].append(images / (time.perf_counter() - started))
            print(f"round {i + 1} {name}: {rates[name][-1]:,.0f} img/s")
    ours_rate, base_rate = statistics.median(rates["ours"]), statistics.median(rates["baseline"])
    print(f"augment: ours {ours_rate:.0f} img/s, baseline {base_rate:.0f} img/s, ratio {ours_rate / base_rate:.3f}")


if __name__ == "__main__":
    main()
