"""One job run: rebuild the spec, resolve an "auto" learning rate, choose the device, call ml, and
register what it left. Returns the fields that end the job; raises what ml raises."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from pydantic import ValidationError
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from core import store
from core.config import Settings
from core.db import session_for
from ml.audit import audit
from ml.lr_finder import run_lr_finder
from ml.specs import AuditSpec, LRFinderSpec, TrainSpec, no_suggestion
from ml.trainer import train
from worker.outputs import live_artifacts, register_artifacts, register_checkpoint
from worker.reporting import StoreReporter

logger = logging.getLogger(__name__)


@dataclass
class Outcome:
    status: str  # succeeded | cancelled
    result: dict[str, Any]
    checkpoint_id: str | None = None
    progress: dict[str, Any] = field(default_factory=dict)


def choose_device(wanted: str = "auto") -> str:
    """The worker is the entrypoint that picks the device (CUDA is initialised here, in the task):
    WORKER_DEVICE, where auto is a GPU when torch sees one."""
    if wanted == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return wanted


def device_memory(device: str) -> int:
    """Bytes of memory on `device`: the GPU's, or this machine's RAM."""
    if device.startswith("cuda"):
        return int(torch.cuda.get_device_properties(torch.device(device)).total_memory)
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


@dataclass
class JobRun:
    job_id: str
    settings: Settings
    reporter: StoreReporter

    @property
    def root(self) -> Path:
        return self.settings.ARTIFACTS_DIR.resolve()

    @property
    def out_dir(self) -> Path:
        return self.root / self.job_id

    def run(self, kind: str, params: dict[str, Any]) -> Outcome:
        if kind == "lr_finder":
            lr_spec = LRFinderSpec.model_validate(params)
            self.check_memory(lr_spec)
            return self.lr_finder(lr_spec)
        if kind == "train":
            spec = TrainSpec.model_validate(params)
            self.check_memory(spec)
            return self.train(spec)
        if kind == "audit":
            audit_spec = AuditSpec.model_validate(params)
            self.check_memory(audit_spec)
            return self.audit(audit_spec)
        raise ValueError(f"unknown job kind {kind!r}; expected 'lr_finder', 'train' or 'audit'")

    def check_memory(self, spec: LRFinderSpec | TrainSpec) -> None:
        """Fail at once (a ValueError: the job fails, it is not redelivered) when the spec's training step
        would not fit in WORKER_MEMORY_MB, else in the device's memory: never an out-of-memory kill."""
        if self.settings.WORKER_MEMORY_MB is not None:
            budget, setting = self.settings.WORKER_MEMORY_MB * 2**20, "WORKER_MEMORY_MB"
        else:
            device = choose_device(self.settings.WORKER_DEVICE)
            budget, setting = device_memory(device), f"this worker's {device} memory"
        refusal = spec.memory_refusal(budget, setting=setting)
        if refusal is not None:
            raise ValueError(refusal)

    def lr_finder(self, spec: LRFinderSpec) -> Outcome:
        found = run_lr_finder(
            spec,
            data_dir=self.settings.DATA_DIR,
            out_dir=self.out_dir,
            callbacks=self.reporter,
            device=choose_device(self.settings.WORKER_DEVICE),
        )
        with session_for(self.settings.DATABASE_URL) as session:
            self._register(session, found.artifacts)
        return self._outcome(found.stop_reason, found.metrics | {"stop_reason": found.stop_reason})

    def train(self, spec: TrainSpec) -> Outcome:
        warnings: list[str] = []
        if spec.optimizer.lr == "auto":
            spec, warnings = resolve_auto_lr(self.settings, spec)
        self.reporter.live_files = lambda: live_artifacts(out_dir=self.out_dir, root=self.root)
        trained = train(
            spec,
            data_dir=self.settings.DATA_DIR,
            out_dir=self.out_dir,
            callbacks=self.reporter,
            device=choose_device(self.settings.WORKER_DEVICE),
            resume=True,  # a redelivery continues after the last finished epoch
        )
        checkpoint_id = None
        with session_for(self.settings.DATABASE_URL) as session:
            self._register(session, trained.artifacts)
            if trained.best_checkpoint is not None:
                best = trained.best_checkpoint
                checkpoint_id = register_checkpoint(
                    session, self.job_id, folder=best, root=self.root, claim=self.reporter.claim
                )
        result = {
            "best": trained.metrics.get("best"),
            "last": trained.metrics.get("last"),
            "test_time_flip": trained.metrics.get("test_time_flip", False),
            "per_class_accuracy": trained.metrics.get("per_class_accuracy"),
            "stop_reason": trained.stop_reason,
            "lr": spec.optimizer.lr,
            "warnings": warnings + trained.metrics.get("warnings", []),
            "selected_on": trained.metrics.get("selected_on", "test"),
            "faithfulness": trained.metrics.get("faithfulness"),
            "calibration": trained.metrics.get("calibration"),
        }
        return self._outcome(trained.stop_reason, result, checkpoint_id)

    def audit(self, spec: AuditSpec) -> Outcome:
        warnings: list[str] = []
        if spec.optimizer.lr == "auto":
            resolved, warnings = resolve_auto_lr(self.settings, spec)
            spec = AuditSpec.model_validate(resolved.model_dump())
        audited = audit(
            spec,
            data_dir=self.settings.DATA_DIR,
            out_dir=self.out_dir,
            callbacks=self.reporter,
            device=choose_device(self.settings.WORKER_DEVICE),
        )
        with session_for(self.settings.DATABASE_URL) as session:
            self._register(session, audited.artifacts)
        result = audited.metrics | {"lr": spec.optimizer.lr, "warnings": warnings + audited.metrics.get("warnings", [])}
        return self._outcome(audited.stop_reason, result)

    def salvage(self) -> None:
        """After a failure: register whatever plots and metrics the run left (best effort)."""
        try:
            if self.out_dir.is_dir():
                with session_for(self.settings.DATABASE_URL) as session:
                    self._register(session, [])
        except (OSError, SQLAlchemyError) as exc:
            logger.warning("job %s: could not register the artifacts of the failed run: %s", self.job_id, exc)

    def _register(self, session: Session, extra: list[Path]) -> None:
        """The files the run left in its folder (and `extra` there) as the job's artifacts."""
        register_artifacts(
            session, self.job_id, out_dir=self.out_dir, root=self.root, extra=extra, claim=self.reporter.claim
        )

    def _outcome(self, stop_reason: str, result: dict[str, Any], checkpoint_id: str | None = None) -> Outcome:
        # the LR finder's live curve leaves the progress once the result holds the whole one
        progress = {key: value for key, value in self.reporter.progress.items() if key != "curve"}
        if stop_reason == "cancelled":
            return Outcome("cancelled", result, checkpoint_id, progress=progress)
        return Outcome("succeeded", result, checkpoint_id, progress=progress | {"fraction": 1.0})


def resolve_auto_lr(settings: Settings, spec: TrainSpec) -> tuple[TrainSpec, list[str]]:
    """A spec with lr "auto" given its LR-finder job's suggestion (checked again: the API checked at
    submission, and the job may have changed since), and a warning when that job ran with settings
    other than this one's."""
    job_id = spec.optimizer.lr_finder_job or ""
    with session_for(settings.DATABASE_URL) as session:
        job = store.get_job(session, job_id) if job_id else None
    if job is None or job.kind != "lr_finder" or job.status != "succeeded":
        raise ValueError(
            f'optimizer.lr "auto": lr_finder job {job_id!r} is not a succeeded LR-finder job; give optimizer.lr '
            "as a number"
        )
    lr = (job.result or {}).get("suggested_lr")
    if not lr:
        raise ValueError(f'optimizer.lr "auto": {no_suggestion(job_id)}')
    try:
        mismatch = spec.lr_finder_mismatch(LRFinderSpec.model_validate(job.params), job_id)
    except ValidationError as exc:  # a job stored by an older version: its spec no longer reads
        mismatch = f"LR-finder job {job_id}'s spec could not be compared with this job's ({exc.error_count()} errors)"
    return spec.with_lr(float(lr)), [mismatch] if mismatch else []
