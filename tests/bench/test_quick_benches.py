"""Each benchmark's `--quick` run, as CI runs them: it must finish and end with its figure,
`<name>: ours X ..., baseline Y ..., ratio Z`, with Z the ratio of the two, and every ratio it prints
on the way (`ratio Z` on any line) must be a finite positive number: a benchmark that prints `n/a`,
`nan`, `inf` or 0 is broken and fails here. The figures are not held to their targets (a timed unit
test on a shared, noisy machine proves nothing): the targets are read off the full runs, whose
commands and results are in the README."""

from __future__ import annotations

import math
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
FIGURE = re.compile(
    r"^(?P<name>[\w ]+): ours (?P<ours>[\d.]+) [^,]*, baseline (?P<baseline>[\d.]+) [^,]*, "
    r"ratio (?P<ratio>[\d.]+)$"
)
RATIO = re.compile(r"\bratio (?P<ratio>[^\s,;)]+)")  # `ratio 0.990`, `ratio 1.08 (...)`, `ratio 0.95 to ...`
NO_RATIO = "no `ratio Z` printed"
BENCHES = {  # script (and options besides --quick): the figure's name on its last line
    "augment.py": "augment",
    "train.py": "train",
    "lr_finder.py": "lr_finder",
    "predict.py": "batching_10",
    "predict.py --batching-only": "batching_10",
    "load.py": "load train",
    "concurrency.py": "concurrency_10",
    "explain_cost.py": "explain_cost",
}


def ratio_problems(stdout: str) -> list[str]:
    """What is wrong with the ratios in a benchmark's output: none printed, or the lines whose ratio
    is not a finite positive number."""
    lines = [line for line in stdout.splitlines() if RATIO.search(line)]
    if not lines:
        return [NO_RATIO]
    return [line for line in lines if not all(finite_positive(found["ratio"]) for found in RATIO.finditer(line))]


def finite_positive(text: str) -> bool:
    try:
        value = float(text)
    except ValueError:
        return False
    return math.isfinite(value) and value > 0


@pytest.mark.slow
@pytest.mark.parametrize("command", list(BENCHES))
def test_a_quick_benchmark_ends_with_its_figure(command: str, tmp_path: Path) -> None:
    script, *options = command.split()
    env = {**os.environ, "DATA_DIR": str(tmp_path)}  # no CIFAR-10 there: random CIFAR-shaped images
    run = subprocess.run(
        [sys.executable, str(REPO / "bench" / script), "--quick", *options],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-4000:]
    assert ratio_problems(run.stdout) == [], run.stdout[-2000:]
    last = run.stdout.strip().splitlines()[-1]
    figure = FIGURE.match(last)
    assert figure is not None and figure["name"] == BENCHES[command], last
    ours, baseline, ratio = (float(figure[k]) for k in ("ours", "baseline", "ratio"))
    assert ours > 0 and baseline > 0
    assert ratio == pytest.approx(ours / baseline, rel=0.02, abs=0.01), last


@pytest.mark.parametrize(
    "stdout",
    [
        "round 1 ours: 10 img/s\naugment: ours 10 img/s, baseline 5 img/s, ratio 2.000",
        "model_batch10 vs model_batch1: ours 1.00 ms, baseline 2.00 ms, ratio 0.50 (gains at most 2.00x)",
        "load train with predictions: 90 img/s, ratio 0.90 to unpolled\nload train: ours 9 s, baseline 9 s, ratio 1.00",
    ],
)
def test_finite_positive_ratios_pass(stdout: str) -> None:
    assert ratio_problems(stdout) == []


@pytest.mark.parametrize(
    ("stdout", "problem"),
    [
        ("load train: ours 0 img/s, baseline 0 img/s, ratio n/a (no progress unpolled)", None),
        ("a: ours 1 s, baseline 0 s, ratio inf", None),
        ("a: ours 1 s, baseline 1 s, ratio nan", None),
        ("a: ours 0 s, baseline 1 s, ratio 0.000", None),
        ("a: ours 1 s, baseline 1 s, ratio -1.0", None),
        (
            "a: ours 1 s, baseline 1 s, ratio 1.0\nb: ours 1 s, baseline 0 s, ratio inf",
            "b: ours 1 s, baseline 0 s, ratio inf",
        ),
        ("round 1 ours: 10 img/s\ndone", NO_RATIO),
    ],
)
def test_a_missing_or_meaningless_ratio_is_caught(stdout: str, problem: str | None) -> None:
    assert ratio_problems(stdout) == [problem or stdout]
