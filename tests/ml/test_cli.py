"""`python -m ml` as a user runs it: LR range test, training with its suggested LR, prediction."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parents[2]


def run_cli(*args: str, data_dir: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "DATA_DIR": str(data_dir), "LRCAM_OFFLINE": "1"}
    return subprocess.run(
        [sys.executable, "-m", "ml", *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300
    )


@pytest.mark.slow  # three real runs on Fashion-MNIST through the CLI
def test_lr_find_then_train_with_auto_lr_then_predict(fmnist_data_dir: Path, tmp_path: Path) -> None:
    dataset = {"name": "fashion_mnist", "train_subset": 300, "test_subset": 100}
    (tmp_path / "lr.json").write_text(
        json.dumps(
            {
                "dataset": dataset,
                "model": {"name": "custom_resnet", "width": 4},
                "batch_size": 32,
                "num_iter": 20,
                "start_lr": 1e-3,  # from 1e-3, without augmentation: the loss falls clearly (8%) in 20 steps
                "augmentation": "none",
                "smooth_f": 0.1,
            }
        )
    )
    lr = run_cli("lr-find", str(tmp_path / "lr.json"), "--out", str(tmp_path / "lr1"), data_dir=fmnist_data_dir)
    assert lr.returncode == 0, lr.stderr
    suggested = json.loads(lr.stdout)["suggested_lr"]
    assert suggested > 0 and (tmp_path / "lr1" / "lr_finder.png").is_file()

    (tmp_path / "train.json").write_text(
        json.dumps(
            {
                "dataset": dataset,
                "model": {"name": "custom_resnet", "width": 4},
                "epochs": 1,
                "batch_size": 32,
                "optimizer": {"lr": "auto", "lr_finder_job": str(tmp_path / "lr1")},
                "gradcam_misclassified": 2,
            }
        )
    )
    run = run_cli("train", str(tmp_path / "train.json"), "--out", str(tmp_path / "t1"), data_dir=fmnist_data_dir)
    assert run.returncode == 0, run.stderr
    assert f"lr auto: using {suggested:.4g}" in run.stderr and "epoch 1:" in run.stderr
    metrics = json.loads((tmp_path / "t1" / "metrics.json").read_text())
    assert metrics["epochs"][0]["lr"] == suggested

    image = tmp_path / "shirt.png"
    Image.new("L", (28, 28), 128).save(image)
    best = json.loads(run.stdout)["best_checkpoint"]
    pred = run_cli(
        "predict",
        "--checkpoint",
        best,
        str(image),
        "--gradcam",
        "--out",
        str(tmp_path / "cams"),
        data_dir=fmnist_data_dir,
    )
    assert pred.returncode == 0, pred.stderr
    line = json.loads(pred.stdout.splitlines()[0])
    assert len(line["topk"]) == 3 and line["label"] in metrics["per_class_accuracy"]
    with Image.open(line["gradcam_overlay"]) as overlay:
        assert overlay.size[0] >= 128


def test_bad_spec_names_the_field(tmp_path: Path) -> None:
    (tmp_path / "bad.json").write_text(json.dumps({"dataset": {"name": "mnist"}}))
    run = run_cli("train", str(tmp_path / "bad.json"), "--out", str(tmp_path / "x"), data_dir=tmp_path)
    assert run.returncode != 0 and "dataset.name" in run.stderr and "fashion_mnist" in run.stderr


def test_missing_dataset_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "c.json").write_text(json.dumps({"dataset": {"name": "cifar10"}, "epochs": 1}))
    run = run_cli("train", str(tmp_path / "c.json"), "--out", str(tmp_path / "x"), data_dir=tmp_path)
    assert run.returncode == 2 and "cifar-10-batches-py" in run.stderr and "Traceback" not in run.stderr
