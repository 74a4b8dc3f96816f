"""Learning-rate schedulers built from a `SchedulerSpec`, and when each one steps."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Required, TypedDict

import torch
from torch.optim.lr_scheduler import CyclicLR, LRScheduler, OneCycleLR, ReduceLROnPlateau

from ml.specs import CyclicSpec, NoSchedulerSpec, OneCycleSpec, ReduceOnPlateauSpec, TrainSpec


@dataclass
class Schedule:
    """A scheduler and its stepping rule: per batch (OneCycle, Cyclic) or per epoch on test accuracy."""

    scheduler: LRScheduler | ReduceLROnPlateau | None
    per_batch: bool

    def after_batch(self) -> None:
        if self.per_batch and self.scheduler is not None:
            self.scheduler.step()

    def after_epoch(self, *, test_acc: float, test_loss: float) -> None:
        if isinstance(self.scheduler, ReduceLROnPlateau):
            self.scheduler.step(test_acc if self.scheduler.mode == "max" else test_loss)


def build_schedule(spec: TrainSpec, optimizer: torch.optim.Optimizer, *, steps_per_epoch: int) -> Schedule:
    lr = spec.optimizer.lr
    assert isinstance(lr, float), "resolve lr 'auto' with TrainSpec.with_lr before training"
    sched = spec.scheduler
    if isinstance(sched, ReduceOnPlateauSpec):
        plateau = ReduceLROnPlateau(
            optimizer,
            mode=sched.mode,
            factor=sched.factor,
            patience=sched.patience,
            threshold=sched.threshold,
            threshold_mode=sched.threshold_mode,
            cooldown=sched.cooldown,
            min_lr=sched.min_lr,
            eps=sched.eps,
        )
        return Schedule(plateau, per_batch=False)
    if isinstance(sched, OneCycleSpec):
        one_cycle = OneCycleLR(
            optimizer,
            max_lr=sched.max_lr or lr,
            epochs=spec.epochs,
            steps_per_epoch=steps_per_epoch,
            pct_start=sched.resolved_pct_start(spec.epochs),
            anneal_strategy=sched.anneal_strategy,
            div_factor=sched.div_factor,
            final_div_factor=sched.final_div_factor,
            three_phase=sched.three_phase,
            **_momentum(sched, spec.optimizer.momentum),
        )
        return Schedule(one_cycle, per_batch=True)
    if isinstance(sched, CyclicSpec):
        cyclic = CyclicLR(
            optimizer,
            base_lr=sched.base_lr,
            max_lr=sched.max_lr or lr,
            step_size_up=sched.step_size_up,
            step_size_down=sched.step_size_down,
            mode=sched.mode,
            gamma=sched.gamma,
            **_momentum(sched, spec.optimizer.momentum),
        )
        return Schedule(cyclic, per_batch=True)
    assert isinstance(sched, NoSchedulerSpec), f"unhandled scheduler {sched!r}"
    return Schedule(None, per_batch=False)


class _MomentumArgs(TypedDict, total=False):
    cycle_momentum: Required[bool]
    base_momentum: float
    max_momentum: float


def _momentum(sched: OneCycleSpec | CyclicSpec, momentum: float) -> _MomentumArgs:
    """torch's momentum arguments: cycling only when asked and when there is momentum to cycle, between
    the spec's range (whose defaults follow the optimizer's momentum); otherwise torch leaves it alone."""
    base, top = sched.momentum_range(momentum)
    if not sched.cycle_momentum or top == 0:
        return {"cycle_momentum": False}
    return {"cycle_momentum": True, "base_momentum": base, "max_momentum": top}


def current_lr(optimizer: torch.optim.Optimizer) -> float:
    return float(optimizer.param_groups[0]["lr"])
