"""bench/gpu.py, the one call that measures every GPU row, run as CI runs it: --dry-run, tiny sizes
on the CPU. Every row must run its benchmark and read back its figure, so the script cannot rot
on the machines that have no GPU. bench/gpu.py prints no ratios (its rows are held to absolute
targets, not to a baseline): each measured figure must be a finite positive number."""

from __future__ import annotations

import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_the_gpu_script_runs_every_row_and_prints_the_table(tmp_path: Path) -> None:
    env = {**os.environ, "DATA_DIR": str(tmp_path)}  # no CIFAR-10 there: random CIFAR-shaped images
    run = subprocess.run(
        [sys.executable, str(REPO / "bench" / "gpu.py"), "--dry-run", "--seeds", "1"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    lines = run.stdout.strip().splitlines()
    assert lines[-1] == "gpu: 5 of 5 rows measured", run.stdout[-3000:]
    table = [line for line in lines if line.startswith("| ") and "---" not in line][1:]
    assert len(table) == 5
    for row in table:
        what, target, measured, command = (cell.strip() for cell in row.strip("|").split(" | "))
        assert target and command.startswith("`python bench/"), row
        figure = measured.split()[0]  # a row that was not measured says so in words
        assert figure.replace(".", "", 1).isdigit() and math.isfinite(float(figure)) and float(figure) > 0, row
