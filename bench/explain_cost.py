"""What explaining costs a training job: the probe set's GradCAM maps recorded after every epoch
(ml.probes.Probes.record), and at the end the faithfulness scores (Probes.faithfulness) and the
calibration and label issues (Trainer._write_trust), each timed inside one whole job of a preset run
by ml.trainer.train, against that job's training time (the sum of its epochs' `seconds`) and its
wall time.

    python bench/explain_cost.py                               # the fashion_mnist_cpu preset
    python bench/explain_cost.py --preset cifar10_cpu --data-dir DIR
    python bench/explain_cost.py --quick                       # 2,000 images, 2 epochs: < 1 min

Ends with `explain_cost: ours <s> s, baseline <s> s, ratio <ours/baseline>`: the training time with the
per-epoch maps added against the training time alone (what the per-epoch work costs), after a line with
what the end of the job adds."""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ml.presets import PRESETS
from ml.probes import Probes
from ml.specs import TrainSpec
from ml.trainer import Trainer, train

TIMED = {  # what is timed: (owner, attribute, when it runs)
    "probe maps": (Probes, "record", "per epoch"),
    "faithfulness": (Probes, "faithfulness", "at the end"),
    "calibration and label issues": (Trainer, "_write_trust", "at the end"),
}


def timing(seconds: dict[str, list[float]]) -> Callable[[], None]:
    """Wraps each TIMED method so that its calls' durations go to seconds[name]; returns the undo."""
    originals = []
    for name, (owner, attribute, _) in TIMED.items():
        original = getattr(owner, attribute)
        originals.append((owner, attribute, original))

        def timed(*args: Any, _original: Callable[..., Any] = original, _name: str = name, **kwargs: Any) -> Any:
            started = time.perf_counter()
            try:
                return _original(*args, **kwargs)
            finally:
                seconds[_name].append(time.perf_counter() - started)

        setattr(owner, attribute, timed)
    return lambda: [setattr(owner, attribute, original) for owner, attribute, original in originals] and None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="fashion_mnist_cpu", choices=[p["name"] for p in PRESETS])
    parser.add_argument("--train-subset", type=int, help="train on this many images (default: all)")
    parser.add_argument("--quick", action="store_true", help="2,000 training and 1,000 test images, 2 epochs")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--data-dir", type=Path, default=Path(os.environ.get("DATA_DIR", "var/data")))
    args = parser.parse_args()

    body = next(p["spec"] for p in PRESETS if p["name"] == args.preset)
    if args.train_subset:
        body = body | {"dataset": body["dataset"] | {"train_subset": args.train_subset}}
    if args.quick:
        body = body | {"dataset": body["dataset"] | {"train_subset": 2000, "test_subset": 1000}, "epochs": 2}
    spec = TrainSpec.model_validate(body)
    print(
        f"device {args.device}, {torch.get_num_threads()} threads, load {os.getloadavg()[0]:.2f}, "
        f"spec {json.dumps(body)}"
    )

    seconds: dict[str, list[float]] = defaultdict(list)
    undo = timing(seconds)
    try:
        with tempfile.TemporaryDirectory() as out:
            started = time.perf_counter()
            result = train(spec, data_dir=args.data_dir, out_dir=Path(out), device=args.device)
            wall = time.perf_counter() - started
    finally:
        undo()

    epochs = result.metrics["epochs"]
    training = sum(e["seconds"] for e in epochs)
    probes = result.metrics.get("faithfulness", {}).get("probes")
    print(
        f"{len(epochs)} epochs, {training:.1f} s training, {wall:.1f} s in all, final test accuracy "
        f"{epochs[-1]['test_acc']:.4f}, {probes} probe images, load {os.getloadavg()[0]:.2f}"
    )
    for name, (_, _, when) in TIMED.items():
        calls = seconds[name]
        print(f"  {name} ({when}): {len(calls)} calls, {sum(calls):.2f} s, each {[round(s, 3) for s in calls]}")
    per_epoch = sum(seconds["probe maps"])
    at_end = sum(sum(seconds[name]) for name, (_, _, when) in TIMED.items() if when == "at the end")
    print(f"at the end: {at_end:.2f} s, {100 * at_end / wall:.2f}% of the job's {wall:.1f} s")
    print(f"per epoch: {per_epoch / len(epochs):.3f} s, {100 * per_epoch / training:.2f}% of the training time")
    print(
        f"explain_cost: ours {training + per_epoch:.2f} s (training and the probe maps), baseline {training:.2f} s "
        f"(training), ratio {(training + per_epoch) / training:.4f}"
    )


if __name__ == "__main__":
    main()
