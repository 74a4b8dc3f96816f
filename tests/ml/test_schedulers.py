"""OneCycle and Cyclic honour the optimizer's momentum unless asked to cycle it, and then cycle it
in the range the spec says (torch's own defaults force 0.95 -> 0.85 whatever the optimizer says)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from pydantic import ValidationError

from ml.schedulers import build_schedule
from ml.specs import TrainSpec
from ml.trainer import train


class RecordingSGD(torch.optim.SGD):
    """SGD that remembers the momentum of every step it actually takes."""

    def __init__(self, params, **kwargs) -> None:
        super().__init__(params, **kwargs)
        self.momenta: list[float] = []

    def step(self, closure=None):
        self.momenta.append(self.param_groups[0]["momentum"])
        return super().step(closure)


def momenta(scheduler: dict, *, momentum: float, steps: int = 20) -> list[float]:
    spec = TrainSpec.model_validate(
        {
            "dataset": {"name": "fashion_mnist"},
            "epochs": 2,
            "scheduler": scheduler,
            "optimizer": {"lr": 0.1, "momentum": momentum},
        }
    )
    weight = torch.nn.Parameter(torch.ones(3))
    optimizer = RecordingSGD([weight], lr=0.1, momentum=momentum)
    schedule = build_schedule(spec, optimizer, steps_per_epoch=steps // 2)
    for _ in range(steps):
        weight.sum().backward()
        optimizer.step()
        schedule.after_batch()
    return optimizer.momenta


@pytest.mark.parametrize("name", [{"name": "one_cycle"}, {"name": "cyclic", "step_size_up": 5}])
def test_by_default_every_step_uses_the_optimizers_momentum(name):
    assert momenta(name, momentum=0.5) == [0.5] * 20


@pytest.mark.parametrize("name", [{"name": "one_cycle"}, {"name": "cyclic", "step_size_up": 5}])
def test_cycled_momentum_defaults_to_the_optimizers_momentum_and_a_tenth_below(name):
    used = momenta({**name, "cycle_momentum": True}, momentum=0.5)
    assert used[0] == pytest.approx(0.5) and max(used) == pytest.approx(0.5)
    assert min(used) == pytest.approx(0.4, abs=0.01)  # at the highest LR


def test_an_explicit_momentum_range_is_used():
    used = momenta(
        {"name": "one_cycle", "cycle_momentum": True, "base_momentum": 0.7, "max_momentum": 0.8}, momentum=0.5
    )
    assert used[0] == pytest.approx(0.8) and min(used) == pytest.approx(0.7, abs=0.01)


def test_no_momentum_is_never_cycled_into_existence():
    assert momenta({"name": "one_cycle", "cycle_momentum": True}, momentum=0.0) == [0.0] * 20


def test_a_range_upside_down_is_refused():
    with pytest.raises(ValidationError, match=r"base_momentum \(0.9\) must be <= scheduler.max_momentum \(0.8\)"):
        momenta({"name": "cyclic", "cycle_momentum": True, "base_momentum": 0.9, "max_momentum": 0.8}, momentum=0.5)


def test_a_one_cycle_run_ends_with_the_momentum_it_was_given(small_fmnist_dir: Path, tmp_path: Path) -> None:
    spec = TrainSpec.model_validate(
        {
            "dataset": {"name": "fashion_mnist", "train_subset": 100, "test_subset": 50},
            "model": {"name": "custom_resnet", "width": 4},
            "epochs": 1,
            "batch_size": 50,
            "augmentation": "none",
            "optimizer": {"lr": 0.05, "momentum": 0.5},
            "scheduler": {"name": "one_cycle"},
            "gradcam_misclassified": 0,
        }
    )
    train(spec, data_dir=small_fmnist_dir, out_dir=tmp_path, device="cpu")
    state = json.loads((tmp_path / "checkpoints" / "last" / "training_state.json").read_text())
    assert {group["momentum"] for group in state["optimizer"]["param_groups"]} == {0.5}  # torch's default: 0.95
