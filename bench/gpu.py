"""Every GPU row of the README in one call, within a time budget, printed as one table: target and
measured side by side. Each row is one of the other benchmarks run as it is documented, so the
figures are the same ones those commands print.

    python bench/gpu.py --data-dir DATA_DIR               # on a CUDA machine, CIFAR-10 staged there
    python bench/gpu.py --dry-run                         # on a CPU, tiny sizes: the script cannot rot (CI)

A row whose script cannot run on the machine (a missing package, no dataset) says why, and the
others go on. Rows run in order, each within what is left of --budget (480 s by default); a row that
would start past it is reported as not run. Ends with `gpu: <n> of <m> rows measured`."""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from ml.presets import PRESETS  # noqa: E402

FIGURE = re.compile(
    r"^(?P<name>[\w ]+): ours (?P<ours>[\d.]+) (?P<unit>[^,(]*)(?P<extra>\([^)]*\))?[^,]*, "
    r"baseline (?P<baseline>[\d.]+)"
)
TINY_DATASET = {"name": "fashion_mnist", "train_subset": 256, "test_subset": 128}


@dataclass(frozen=True)
class Row:
    what: str
    target: str
    script: str
    args: tuple[str, ...]  # on a GPU
    dry_args: tuple[str, ...]  # on a CPU with --dry-run
    figure: str  # the name of the line to read


def tiny(preset: str) -> dict:
    """The preset's spec at dry-run size: its optimizer, schedule and augmentation, on little data."""
    spec = next(p["spec"] for p in PRESETS if p["name"] == preset)
    scheduler = spec.get("scheduler", {}) | ({"peak_epoch": 1} if "peak_epoch" in spec.get("scheduler", {}) else {})
    return spec | {
        "dataset": TINY_DATASET,
        "model": spec["model"] | {"width": 4},
        "epochs": 2,
        "batch_size": 32,
        "scheduler": scheduler,
        "compile": "off",
        "gradcam_misclassified": 2,
    }


def rows(seeds: int, spec_dir: Path) -> list[Row]:
    def to_accuracy(preset: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
        path = spec_dir / f"{preset}.json"
        path.write_text(json.dumps(tiny(preset)))
        return (
            ("--to-accuracy", "--preset", preset, "--seeds", str(seeds), "--device", "cuda"),
            ("--to-accuracy", "--preset", preset, "--spec", str(path), "--device", "cpu"),
        )

    resnet18, resnet9 = to_accuracy("cifar10_resnet18_gpu"), to_accuracy("cifar10_custom_resnet_gpu")
    return [
        Row(
            "ResNet18 throughput, width 64, batch 512, CIFAR-10, bf16, channels_last, compiled",
            ">= 60,000 img/s",
            "train.py",
            ("--device", "cuda"),
            ("--quick", "--width", "4", "--batch-size", "64", "--rounds", "1", "--device", "cpu"),
            "train",
        ),
        Row(
            f"ResNet18 to >= 93%, job start to finish, median of {seeds} seeds",
            "<= 30 s, mean >= 0.93",
            "train.py",
            *resnet18,
            "train_to_accuracy",
        ),
        Row(
            f"ResNet9 (custom_resnet) to >= 94%, median of {seeds} seeds",
            "<= 12 s, mean >= 0.94",
            "train.py",
            *resnet9,
            "train_to_accuracy",
        ),
        Row(
            "LR range test, 100 iterations, ResNet18 width 64",
            "<= 3 s",
            "lr_finder.py",
            ("--device", "cuda"),
            ("--quick", "--rounds", "1", "--device", "cpu"),
            "lr_finder",
        ),
        Row(
            "/predict with GradCAM, 64 images a request, over HTTP",
            ">= 3,000 img/s",
            "predict.py",
            ("--device", "cuda", "--seconds", "2"),
            ("--quick", "--rounds", "1", "--seconds", "1", "--device", "cpu"),
            "gradcam_batch64",
        ),
    ]


def run_row(row: Row, *, dry_run: bool, data_dir: Path | None, seconds: float) -> tuple[str, str]:
    """(measured, the command) for one row; measured says why when there is no figure."""
    args = [
        *(row.dry_args if dry_run else row.args),
        *(["--data-dir", str(data_dir)] if data_dir and row.script != "predict.py" else []),
    ]
    command = [sys.executable, str(REPO / "bench" / row.script), *args]
    shown = " ".join(["python", f"bench/{row.script}", *args])
    try:
        done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=seconds)
    except subprocess.TimeoutExpired:
        return f"not measured: still running after {seconds:.0f} s (the budget)", shown
    for line in reversed(done.stdout.splitlines()):
        figure = FIGURE.match(line.strip())
        if figure and figure["name"] == row.figure:
            extra = f" {figure['extra']}" if figure["extra"] else ""
            return f"{figure['ours']} {figure['unit'].strip()}{extra}", shown
    why = (done.stderr.strip().splitlines() or done.stdout.strip().splitlines() or ["no output"])[-1]
    return f"not measured (exit {done.returncode}): {why[:160]}", shown


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--dry-run", action="store_true", help="tiny sizes on the CPU: checks the script, measures nothing"
    )
    parser.add_argument("--seeds", type=int, default=5, help="seeds of the to-accuracy rows (mean accuracy)")
    parser.add_argument("--budget", type=float, default=480.0, help="seconds for all rows together")
    parser.add_argument("--data-dir", type=Path, help="where cifar-10-batches-py is (default: DATA_DIR or var/data)")
    args = parser.parse_args()
    started = time.monotonic()
    results = []
    with tempfile.TemporaryDirectory(prefix="bench-gpu-") as tmp:
        for row in rows(args.seeds, Path(tmp)):
            left = args.budget - (time.monotonic() - started)
            if left <= 5:
                results.append((row, "not run: the budget was spent", f"python bench/{row.script} ..."))
                continue
            measured, command = run_row(row, dry_run=args.dry_run, data_dir=args.data_dir, seconds=left)
            results.append((row, measured, command))
            print(f"{row.what}: {measured} ({time.monotonic() - started:.0f} s so far)", flush=True)
    print(f"\n{'DRY RUN (tiny sizes on the CPU): ' if args.dry_run else ''}{time.monotonic() - started:.0f} s in all\n")
    print("| GPU figure | target | measured | command |\n| --- | --- | --- | --- |")
    for row, measured, command in results:
        print(f"| {row.what} | {row.target} | {measured} | `{command}` |")
    measured_rows = sum(not measured.startswith("not ") for _, measured, _ in results)
    print(f"\ngpu: {measured_rows} of {len(results)} rows measured")


if __name__ == "__main__":
    main()
