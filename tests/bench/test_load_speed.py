"""bench/load.py's training speed: the worker's progress reports inside one epoch's training, with an
epoch's end (evaluation, checkpoint, probe maps) left out of whichever phase it falls into."""

from __future__ import annotations

import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))

from load import LOADED, training_speed  # the bench folder is not a package: on the path above

START = datetime(2026, 1, 1, tzinfo=UTC)


def report(seconds: float, epoch: int, step: int, phase: str = "training") -> dict:
    return {
        "epoch": epoch,
        "step": step,
        "steps": 900,
        "phase": phase,
        "updated_at": (START + timedelta(seconds=seconds)).isoformat(),
    }


def test_steps_per_second_within_an_epoch() -> None:
    reports = [report(0, 3, 100), report(1, 3, 116), report(2, 3, 132)]
    speed, ends = training_speed(reports)
    assert speed == pytest.approx(16 * LOADED["batch_size"]) and ends == 0


def test_an_epoch_end_is_left_out_not_charged_as_slowness() -> None:
    reports = [
        report(0, 3, 870),
        report(1, 3, 886),
        report(2, 3, 900, "evaluating"),  # the epoch's training ended; evaluation and the checkpoint follow
        report(6, 4, 10),  # four seconds later, the next epoch's first steps
        report(7, 4, 26),
    ]
    speed, ends = training_speed(reports)
    assert speed == pytest.approx(16 * LOADED["batch_size"]) and ends == 1


def test_no_interval_inside_an_epoch_gives_zero() -> None:
    assert training_speed([report(0, 3, 890), report(3, 4, 5)]) == (0.0, 1)
    assert training_speed([]) == (0.0, 0)


def test_a_busy_spinner_spins_while_the_script_that_started_it_lives_and_ends_with_it() -> None:
    """--busy's processes must not outlive bench/load.py however it ends (a kill included)."""
    from load import SPIN

    starter = (
        "import os, subprocess, sys, time\n"
        f"spinner = subprocess.Popen([sys.executable, '-c', {SPIN!r}, str(os.getpid())], stdout=subprocess.DEVNULL)\n"
        "print(spinner.pid, flush=True)\n"
        "time.sleep(2)\n"
        "os._exit(0)\n"  # as a kill would: no clean-up of the child
    )
    with subprocess.Popen([sys.executable, "-c", starter], stdout=subprocess.PIPE, text=True) as parent:
        assert parent.stdout is not None
        stat = Path(f"/proc/{int(parent.stdout.readline())}/stat")
        time.sleep(1)
        assert parent.poll() is None and state(stat) == "R", "the spinner does not spin while its parent lives"
        parent.wait(timeout=30)
    deadline = time.monotonic() + 20
    while state(stat) not in ("gone", "Z"):  # a zombie has ended too, only not yet reaped
        assert time.monotonic() < deadline, "a spinner went on after its parent ended"
        time.sleep(0.1)


def state(stat: Path) -> str:
    """A process's state letter (R running, S sleeping, Z zombie...) from its /proc stat, or 'gone'."""
    try:
        return stat.read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return "gone"
