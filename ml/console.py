"""Progress for a person at a terminal: a tqdm bar on a TTY, plain lines otherwise. Ctrl-C asks the
run to stop cleanly (it keeps its metrics, checkpoint and plots); a second Ctrl-C aborts."""

from __future__ import annotations

import signal
import sys
import time
from typing import Any, TextIO

from tqdm import tqdm

PLAIN_EVERY_SECONDS = 10.0  # plain-line progress is rate limited so logs stay readable


class ConsoleCallbacks:
    def __init__(self, *, label: str, stream: TextIO = sys.stderr, tty: bool | None = None) -> None:
        self.label, self.stream = label, stream
        self.tty = stream.isatty() if tty is None else tty
        self._bar: tqdm | None = None
        self._last_plain = 0.0
        self._stop_requested = False

    def __enter__(self) -> ConsoleCallbacks:
        self._previous = signal.signal(signal.SIGINT, self._on_sigint)
        return self

    def __exit__(self, *exc: object) -> None:
        signal.signal(signal.SIGINT, self._previous)
        self.close_bar()

    def _on_sigint(self, signum: int, frame: object) -> None:
        if self._stop_requested:
            raise KeyboardInterrupt
        self._stop_requested = True
        self.write("stopping after the current batch (Ctrl-C again to abort)")

    def should_stop(self) -> bool:
        return self._stop_requested

    def write(self, line: str) -> None:
        if self._bar is not None:
            self._bar.write(line, file=self.stream)
        else:
            print(line, file=self.stream, flush=True)

    def close_bar(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None

    def on_progress(self, progress: dict[str, Any]) -> None:
        if "step" not in progress:  # a phase without steps: loading data, a download
            if progress.get("phase") not in (None, "downloading"):
                self.write(f"{self.label}: {progress['phase']}")
            return
        step, steps = progress["step"], progress["steps"]
        desc = f"{self.label} epoch {progress['epoch']}/{progress['epochs']}" if "epoch" in progress else self.label
        if self.tty:
            if self._bar is None or self._bar.total != steps or self._bar.desc != desc:
                self.close_bar()
                self._bar = tqdm(total=steps, desc=desc, file=self.stream, leave=False, dynamic_ncols=True)
            self._bar.update(step - self._bar.n)
            return
        now = time.monotonic()
        if now - self._last_plain >= PLAIN_EVERY_SECONDS or step == steps:
            self._last_plain = now
            print(f"{desc}: step {step}/{steps} ({progress['fraction']:.1%} of the run)", file=self.stream, flush=True)

    def on_epoch(self, record: dict[str, Any]) -> None:
        self.close_bar()
        self.write(
            f"epoch {record['epoch']}: lr {record['lr']:.4g}  train loss {record['train_loss']:.4f} "
            f"acc {record['train_acc']:.2%}  test loss {record['test_loss']:.4f} acc {record['test_acc']:.2%}  "
            f"{record['seconds']:.1f}s ({record['images_per_second']} img/s)"
        )
