"""The longest pause of a live worker's heartbeat: what JOB_LEASE_SECONDS must outlast.

A worker's heartbeat runs in a thread of its own (worker.reporting.Heartbeat) while the job trains in
the main thread. Whatever holds the GIL long (decoding a dataset, torch.compile's Python, a long C
call that does not release it) delays the beats. This trains the Fashion-MNIST preset's model for
one epoch with torch.compile on an empty Inductor cache (the worst case: the first job of a fresh
worker) while the real Heartbeat class beats every --interval s, and prints the longest gap between
beats beside the lease it must fit in:

    python bench/heartbeat.py                 # the preset's 60,000 images, one epoch, compiled cold
    python bench/heartbeat.py --quick         # 2,048 images (CI's smoke run)

Ends with `heartbeat: ours <longest gap> s, baseline <lease> s, ratio <gap / lease>`: the lease holds
while the ratio stays well under 1 - (interval / lease)."""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

# an empty Inductor cache, set before torch is imported: the first job of a fresh worker
os.environ["TORCHINDUCTOR_CACHE_DIR"] = tempfile.mkdtemp(prefix="lrcam-heartbeat-inductor-")

from core.config import Settings
from ml.presets import PRESETS
from ml.specs import TrainSpec
from ml.trainer import train
from worker.reporting import Heartbeat


class Beats:
    """What Heartbeat calls: records when each beat came."""

    job_id = "bench"

    def __init__(self) -> None:
        self.times: list[float] = []

    def beat(self) -> None:
        self.times.append(time.monotonic())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="2,048 images (the CI smoke run)")
    parser.add_argument("--interval", type=float, default=0.5, help="seconds between beats (the worker: 10)")
    parser.add_argument("--data-dir", type=Path, default=Path(os.environ.get("DATA_DIR", "var/data")))
    args = parser.parse_args()

    preset = next(p["spec"] for p in PRESETS if p["name"] == "fashion_mnist_cpu")
    dataset = preset["dataset"] | ({"train_subset": 2048, "test_subset": 512} if args.quick else {})
    spec = TrainSpec.model_validate(preset | {"dataset": dataset, "epochs": 1, "compile": "default"})
    beats = Beats()
    started = time.monotonic()
    with tempfile.TemporaryDirectory() as out, Heartbeat(beats, interval=args.interval):  # type: ignore[arg-type]
        train(spec, data_dir=args.data_dir, out_dir=Path(out), device="cpu")
    ended = time.monotonic()
    points = [started, *beats.times, ended]
    gaps = [b - a for a, b in zip(points, points[1:])]
    longest = max(gaps)
    lease = Settings.model_fields["JOB_LEASE_SECONDS"].default
    print(f"job: {ended - started:.1f} s, {len(beats.times)} beats every {args.interval} s")
    print(f"heartbeat: ours {longest:.2f} s, baseline {lease:.2f} s, ratio {longest / lease:.3f}")


if __name__ == "__main__":
    main()
