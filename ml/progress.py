"""How long-running ml work reports progress and learns it should stop.

The trainer and the LR range test call these hooks; the CLI prints them, the worker writes them to
the job store. Nothing here imports torch."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol


class Callbacks(Protocol):
    def on_progress(self, progress: dict[str, Any]) -> None:
        """Called every few batches with {"epoch", "epochs", "step", "steps", "fraction"}
        (the LR finder sends {"step", "steps", "fraction", "curve"}: "curve" the lrs, losses,
        smoothed_losses and trend_losses so far, thinned; its last report, "stop_reason" where it
        stopped early); before the run, while a dataset
        downloads, with {"downloading", "downloaded_bytes", "total_bytes"} (see `download_progress`)."""

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


def download_progress(callbacks: Callbacks, dataset: str) -> Callable[[int, int | None], None]:
    """`ml.data.load_dataset`'s on_download hook reporting to `callbacks` as progress:
    {"phase": "downloading", "downloading": dataset, "downloaded_bytes": n, "total_bytes": total or None}."""

    def on_bytes(done: int, total: int | None) -> None:
        callbacks.on_progress(
            {"phase": "downloading", "downloading": dataset, "downloaded_bytes": done, "total_bytes": total}
        )

    return on_bytes
