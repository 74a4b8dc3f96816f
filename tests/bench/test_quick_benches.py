"""Each benchmark's `--quick` run, as CI runs them: it must finish and end with its figure,
`<name>: ours X ..., baseline Y ..., ratio Z`, with Z the ratio of the two. The figures are not held
to their targets here (a timed unit test on a shared, noisy machine proves nothing): the targets are
read off the full runs, whose commands and results are in the README."""

from __future__ import annotations

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
BENCHES = {  # script (and options besides --quick): the figure's name on its last line
    "augment.py": "augment",
    "train.py": "train",
    "lr_finder.py": "lr_finder",
    "predict.py": "batching_10",
    "predict.py --batching-only": "batching_10",
    "load.py": "load train",
    "concurrency.py": "concurrency_10",
}


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
    last = run.stdout.strip().splitlines()[-1]
    figure = FIGURE.match(last)
    assert figure is not None and figure["name"] == BENCHES[command], last
    ours, baseline, ratio = (float(figure[k]) for k in ("ours", "baseline", "ratio"))
    assert ours > 0 and baseline > 0
    assert ratio == pytest.approx(ours / baseline, rel=0.02, abs=0.01), last
