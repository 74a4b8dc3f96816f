"""Documented training recipes, served by GET /models and copied in examples/ (a test keeps the
copies equal). Each `spec` is a POST /jobs/train body; the dataset can be swapped freely."""

from __future__ import annotations

from typing import Any


PRESETS: list[dict[str, Any]] = [
    {
        "name": "fashion_mnist_cpu",
        "description": "Fashion-MNIST to ~92% test accuracy on a laptop CPU: ResNet9 at width 8, "
        "4 epochs of OneCycle (peak 0.2, nesterov), batch 256, flip-only augmentation (batched on tensors); "
        "92.4% on the full test set",
        "spec": {
            "dataset": {"name": "fashion_mnist"},
            "model": {"name": "custom_resnet", "width": 8},
            "epochs": 4,
            "batch_size": 256,
            "optimizer": {"name": "sgd", "lr": 0.2, "momentum": 0.9, "weight_decay": 0.0005, "nesterov": True},
            "scheduler": {"name": "one_cycle", "max_lr": 0.2, "pct_start": 0.25},
            "augmentation": [{"name": "HorizontalFlip", "p": 0.5}],
            "gradcam_misclassified": 25,
            "seed": 0,
        },
    },
    {
        "name": "cifar10_resnet18_classic",
        "description": "the assignment's recipe: ResNet18, 50 epochs, batch 128, SGD 0.05 with "
        "ReduceLROnPlateau on test accuracy, pad-crop + flip + Cutout 16x16 (~91.7% on CIFAR-10)",
        "spec": {
            "dataset": {"name": "cifar10"},
            "model": {"name": "resnet18", "width": 64},
            "epochs": 50,
            "batch_size": 128,
            "optimizer": {"name": "sgd", "lr": 0.05, "momentum": 0.9, "weight_decay": 0.0005},
            "scheduler": {"name": "reduce_on_plateau", "mode": "max", "factor": 0.1, "patience": 3,
                          "threshold": 0.001, "threshold_mode": "abs", "min_lr": 0},
            "augmentation": "default",
            "gradcam_misclassified": 25,
        },
    },
    {
        "name": "cifar10_custom_resnet_one_cycle",
        "description": "ResNet9 with OneCycle (24 epochs, peak at epoch 5, batch 512): the assignment's "
        "90% in 24 epochs on CIFAR-10",
        "spec": {
            "dataset": {"name": "cifar10"},
            "model": {"name": "custom_resnet"},
            "epochs": 24,
            "batch_size": 512,
            "optimizer": {"name": "sgd", "lr": 0.05, "momentum": 0.9, "weight_decay": 0.0005, "nesterov": True},
            "scheduler": {"name": "one_cycle", "max_lr": 0.05, "peak_epoch": 5, "div_factor": 100,
                          "final_div_factor": 100, "anneal_strategy": "linear"},
            "augmentation": "default",
        },
    },
]

EXAMPLE_FILES = {
    "fashion_mnist_cpu": "fashion_mnist_cpu",
    "cifar10_resnet18_classic": "cifar10_resnet18",
    "cifar10_custom_resnet_one_cycle": "cifar10_custom_resnet_onecycle",
}
