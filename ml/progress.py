"""How long-running ml work reports progress and learns it should stop.

The trainer and the LR range test call these hooks; the CLI prints them, the worker writes them to
the job store. Nothing here imports torch."""

from __future__ import annotations

from typing import Any, Protocol


class Callbacks(Protocol):
    def on_progress(self, progress: dict[str, Any]) -> None:
        """Called every few batches with {"epoch", "epochs", "step", "steps", "fraction"}
        (the LR finder sends {"step", "steps", "fraction"})."""

    def on_epoch(self, record: dict[str, Any]) -> None:
        """Called after each epoch with one record of `metrics["epochs"]`."""

    def should_stop(self) -> bool:
        """Polled every few batches; True ends the run early with stop_reason "cancelled"."""


class NullCallbacks:
    """Callbacks that report nowhere and never stop."""

    def on_progress(self, progress: dict[str, Any]) -> None:
        pass

    def on_epoch(self, record: dict[str, Any]) -> None:
        pass

    def should_stop(self) -> bool:
        return False
