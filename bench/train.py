"""Training throughput: the trainer's epoch (ml.trainer.Trainer.train_epoch: schedule, progress
reports, device-side metrics) vs a bare PyTorch loop over the same model, data and batched
augmentation, without metrics. Or, with --to-accuracy, a whole job of a preset through
ml.trainer.train (data, compilation, training, evaluation, checkpoints, plots and GradCAM) timed from
start to finish against the preset's baseline (BASELINES; where each figure comes from: bench/README.md,
"Baselines").

    python bench/train.py --quick            # ResNet18 width 16, batch 128, 2,560 images a side: < 1 min
    python bench/train.py                    # the same, 10,240 images a side, 3 rounds
    python bench/train.py --to-accuracy      # the fashion_mnist_cpu preset, full test set
    python bench/train.py --to-accuracy --compile off   # the same, eager: what compilation buys
    python bench/train.py --to-accuracy --spec my_spec.json --repeat 3
    python bench/train.py --device cuda     # ResNet18 width 64, batch 512, all of CIFAR-10: the GPU row
    python bench/train.py --to-accuracy --preset cifar10_resnet18_gpu --seeds 5        # GPU rows
    python bench/train.py --to-accuracy --preset cifar10_custom_resnet_gpu --seeds 5

Rounds alternate the two sides and medians are reported (these machines have slow spells). Data:
CIFAR-10 under --data-dir when it is there, else random CIFAR-shaped images. Ends with
`train: ours <img/s> img/s, baseline <img/s> img/s, ratio <ours/baseline>` or, with --to-accuracy,
`train_to_accuracy: ours <s> s (<acc> test accuracy), baseline <s> s, ratio <ours/baseline>`, the
time being the median over runs and the accuracy the mean over seeds (--seeds) or the worst of
repeats (--repeat)."""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import get_args

import numpy as np
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ml.compilation import compiled_calls
from ml.data import DatasetBundle, ImageSet
from ml.presets import PRESETS
from ml.progress import NullCallbacks
from ml.runtime import autocast
from ml.specs import CompileMode, TrainSpec
from ml.trainer import Trainer, train

# preset: (baseline seconds, what the baseline is, target seconds, target accuracy)
BASELINES = {
    "fashion_mnist_cpu": (154.0, "a reference Fashion-MNIST recipe, training alone, 2 CPU cores", 90.0, 0.93),
    "cifar10_cpu": (
        43_860.0,
        "the classic recipe (ResNet18 w64, 50 epochs) on 2 CPU cores at 57 img/s",
        900.0,
        0.88,
    ),
    "cifar10_resnet18_gpu": (240.0, "the classic recipe, 50 epochs on an H100 (91.7%)", 30.0, 0.93),
    "cifar10_custom_resnet_gpu": (26.0, "the ResNet9 record on a V100", 12.0, 0.94),
    "cifar10_resnet18_long_gpu": (240.0, "the classic recipe, 50 epochs on an H100 (91.7%)", None, 0.95),
    "fashion_mnist_resnet18_gpu": (240.0, "the classic recipe's length on an H100", None, 0.95),
    "cifar10_resnet18_classic": (240.0, "the classic recipe, 50 epochs on an H100 (91.7%)", None, 0.88),
    "cifar10_custom_resnet_one_cycle": (240.0, "the classic recipe, 50 epochs on an H100 (91.7%)", None, 0.90),
}


def bundle_for(data_dir: Path, images: int) -> DatasetBundle:
    """CIFAR-10 (the first `images` training images) if present, else random 32x32 RGB images."""
    if (data_dir / "cifar-10-batches-py").is_dir():
        from ml.data import load_dataset
        from ml.specs import DatasetSpec

        return load_dataset(DatasetSpec(name="cifar10", train_subset=images, test_subset=100), data_dir)
    rng = np.random.default_rng(0)
    split = ImageSet(
        rng.integers(0, 256, (images, 32, 32, 3), dtype=np.uint8), rng.integers(0, 10, images).astype(np.int64)
    )
    return DatasetBundle("random", split, split, [str(i) for i in range(10)], (0.5,) * 3, (0.25,) * 3)


def bare_epoch(trainer: Trainer) -> int:
    """The baseline: one epoch of plain SGD steps over the trainer's own loader and model, its
    compiled calls under the trainer's settings (ml.compilation.compiled_calls)."""
    model, optimizer, device = trainer.model, trainer.optimizer, trainer.device
    criterion, images = nn.CrossEntropyLoss(), 0
    model.train()
    with compiled_calls(trainer.compile_mode, device=device):
        for x, y in trainer.train_loader:
            x = x.to(device, non_blocking=True, memory_format=trainer.memory_format)
            y = y.to(device, non_blocking=True)
            with autocast(device):
                loss = criterion(model(x), y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            images += len(y)
    return images


def timed(fn, device: torch.device) -> tuple[int, float]:
    started = time.perf_counter()
    images = fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return images, time.perf_counter() - started


def throughput(args: argparse.Namespace) -> None:
    device = torch.device(args.device)
    gpu = device.type == "cuda"  # the GPU row: ResNet18 at full width, batch 512, all of CIFAR-10
    width = args.width or (64 if gpu else 16)
    batch = args.batch_size or (512 if gpu else 128)
    images, rounds = (2560, 3) if args.quick else ((50_000 if gpu else 10240), 3)
    spec = TrainSpec.model_validate(
        {
            "dataset": {"name": "cifar10"},
            "model": {"name": "resnet18", "width": width},
            "epochs": 100,  # schedule room
            "batch_size": batch,
            "optimizer": {"lr": 0.05},
            "scheduler": {"name": "one_cycle", "max_lr": 0.05},
            "augmentation": "default",
            "compile": args.compile or "auto",
        }
    )
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as out:
        trainer = Trainer(
            spec,
            bundle_for(args.data_dir, images),
            out_dir=Path(out),
            device=device,
            callbacks=NullCallbacks(),
            num_workers=0,
        )
        print(
            f"device {device}, {torch.get_num_threads()} threads, resnet18 width {width}, batch {batch}, "
            f"{len(trainer.train_loader)} batches a side, {type(trainer.train_loader).__name__}, "
            f"compile {trainer.compile_mode}"
        )
        sides = {"ours": lambda: trainer.train_epoch(1).images, "baseline": lambda: bare_epoch(trainer)}
        count, seconds = timed(sides["baseline"], device)  # warm-up: compilation, oneDNN primitives
        print(f"warm-up (compilation included): {seconds:.1f} s")
        rates: dict[str, list[float]] = {"ours": [], "baseline": []}
        for i in range(args.rounds or rounds):
            for name in list(sides) if i % 2 == 0 else list(sides)[::-1]:
                count, seconds = timed(sides[name], device)
                rates[name].append(count / seconds)
                print(f"round {i + 1} {name}: {count / seconds:,.0f} img/s ({seconds:.2f} s)")
    ours, base = statistics.median(rates["ours"]), statistics.median(rates["baseline"])
    print(f"train: ours {ours:.0f} img/s, baseline {base:.0f} img/s, ratio {ours / base:.3f}")


def to_accuracy(args: argparse.Namespace) -> None:
    body = (
        json.loads(args.spec.read_text()) if args.spec else next(p["spec"] for p in PRESETS if p["name"] == args.preset)
    )
    if args.compile:
        body = body | {"compile": args.compile}
    spec = TrainSpec.model_validate(body)
    baseline, what, target_seconds, target_accuracy = BASELINES[args.preset]
    print(
        f"device {args.device}, {torch.get_num_threads()} threads, load {os.getloadavg()[0]:.2f}, "
        f"spec {json.dumps(body)}"
    )
    runs = (
        [spec.model_copy(update={"seed": seed}) for seed in range(args.seeds)] if args.seeds else ([spec] * args.repeat)
    )
    results = []
    for i, run in enumerate(runs):
        with tempfile.TemporaryDirectory() as out:
            started = time.perf_counter()
            result = train(run, data_dir=args.data_dir, out_dir=Path(out), device=args.device)
            seconds = time.perf_counter() - started
        epochs = result.metrics["epochs"]
        accuracy = epochs[-1]["test_acc"]
        trained = sum(e["seconds"] for e in epochs)
        print(
            f"run {i + 1} (seed {run.seed}, compile {run.compile}): {seconds:.1f} s in all ({trained:.1f} s "
            f"training, first epoch {epochs[0]['seconds']:.1f} s), final test accuracy {accuracy:.4f}, "
            f"per epoch {[e['test_acc'] for e in epochs]}, load {os.getloadavg()[0]:.2f}"
        )
        results.append((seconds, accuracy))
    seconds = statistics.median(s for s, _ in results)
    accuracies = [a for _, a in results]
    accuracy = statistics.mean(accuracies) if args.seeds else min(accuracies)
    within = f" in <= {target_seconds:.0f} s" if target_seconds is not None else ""
    if args.spec is None:  # a spec file has no target of its own; the preset's baseline still frames it
        print(f"target: >= {target_accuracy:.2f}{within}; baseline: {what}")
    print(
        f"train_to_accuracy: ours {seconds:.1f} s ({accuracy:.4f} test accuracy"
        f"{f', mean of {len(runs)} seeds' if args.seeds else ''}; slowest run {max(s for s, _ in results):.1f} s), "
        f"baseline {baseline:.0f} s, "
        f"ratio {seconds / baseline:.3f}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="2,560 images a side instead of 10,240")
    parser.add_argument("--to-accuracy", action="store_true", help="a whole job of --preset, timed")
    parser.add_argument("--preset", default="fashion_mnist_cpu", choices=[p["name"] for p in PRESETS])
    parser.add_argument("--spec", type=Path, help="with --to-accuracy: a TrainSpec JSON file instead of the preset")
    parser.add_argument("--compile", choices=get_args(CompileMode), help="override the spec's compile")
    parser.add_argument("--repeat", type=int, default=1, help="with --to-accuracy: runs (median time, worst accuracy)")
    parser.add_argument("--seeds", type=int, default=0, help="with --to-accuracy: runs of seeds 0..N-1 (mean accuracy)")
    parser.add_argument("--rounds", type=int, default=None)
    parser.add_argument("--width", type=int, help="throughput: ResNet18 width (default 16 on CPU, 64 on a GPU)")
    parser.add_argument("--batch-size", type=int, help="throughput: batch (default 128 on CPU, 512 on a GPU)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--data-dir", type=Path, default=Path(os.environ.get("DATA_DIR", "var/data")))
    args = parser.parse_args()
    to_accuracy(args) if args.to_accuracy else throughput(args)


if __name__ == "__main__":
    main()
