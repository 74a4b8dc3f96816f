"""Documented training recipes, served by GET /models and copied in examples/ (a test keeps the
copies equal). Each `spec` is a POST /jobs/train body; the dataset can be swapped freely. Each
`figure` says what its accuracy is: `measured` (by its `command`, bench/README.md has the runs) or a
`target` (published, or not yet measured since the recipe changed), and of which epoch and set.
Recipes that schedule on accuracy (ReduceLROnPlateau) or stop at a target hold out a validation split,
so that the test set only measures.

The GPU recipes ("gpu" in the name) follow the literature (Page's ResNet9 schedule, OneCycle with
label smoothing and Cutout) and a reference H100 run (bench/README.md, "Baselines"); each one's
figure is one command on a machine with a GPU: `python bench/train.py --to-accuracy --preset NAME --seeds 5`."""

from __future__ import annotations

from typing import Any

PRESETS: list[dict[str, Any]] = [
    {
        "name": "fashion_mnist_cpu",
        "description": "Fashion-MNIST on a laptop CPU: ResNet9 at width 8, 5 epochs of OneCycle (peak 0.2, "
        "nesterov), batch 256, flip-only augmentation (batched on tensors), label smoothing 0.1, test-time flip",
        "figure": {
            "test_acc": 0.932,
            "status": "measured",
            "of": "the last epoch, on the full test set, with test-time flip; mean of 5 seeds",
            "command": "python bench/train.py --to-accuracy --seeds 5",
        },
        "spec": {
            "dataset": {"name": "fashion_mnist"},
            "model": {"name": "custom_resnet", "width": 8},
            "epochs": 5,
            "batch_size": 256,
            "optimizer": {"name": "sgd", "lr": 0.2, "momentum": 0.9, "weight_decay": 0.0005, "nesterov": True},
            "scheduler": {"name": "one_cycle", "max_lr": 0.2, "pct_start": 0.25},
            "augmentation": [{"name": "HorizontalFlip", "p": 0.5}],
            "label_smoothing": 0.1,
            "test_time_flip": True,
            "gradcam_misclassified": 25,
            "seed": 0,
        },
    },
    {
        "name": "cifar10_cpu",
        "description": "CIFAR-10 on a laptop CPU: ResNet9 at width 16, 11 epochs of OneCycle (peak 0.3, nesterov), "
        "batch 256, label smoothing 0.2, pad-and-crop and flip without a hole (batched on tensors), test-time "
        "flip, torch.compile",
        "figure": {
            "test_acc": 0.8918,
            "status": "measured",
            "of": "the last epoch, on the full test set, with test-time flip; mean of 3 seeds",
            "command": "python bench/train.py --to-accuracy --preset cifar10_cpu --seeds 3 --data-dir DIR",
        },
        "spec": {
            "dataset": {"name": "cifar10"},
            "model": {"name": "custom_resnet", "width": 16},
            "epochs": 11,
            "batch_size": 256,
            "optimizer": {"name": "sgd", "lr": 0.3, "momentum": 0.9, "weight_decay": 0.0005, "nesterov": True},
            "scheduler": {
                "name": "one_cycle",
                "max_lr": 0.3,
                "pct_start": 0.25,
                "div_factor": 20,
                "final_div_factor": 200,
            },
            "augmentation": [
                {"name": "PadIfNeeded", "min_height": 40, "min_width": 40, "border_mode": 4},
                {"name": "RandomCrop", "height": 32, "width": 32},
                {"name": "HorizontalFlip", "p": 0.5},
            ],
            "label_smoothing": 0.2,
            "test_time_flip": True,
            "gradcam_misclassified": 25,
            "compile": "auto",
            "seed": 0,
        },
    },
    {
        "name": "cifar10_resnet18_classic",
        "description": "the classic recipe: ResNet18, 50 epochs, batch 128, SGD 0.05 with ReduceLROnPlateau on "
        "the accuracy of a 10% validation split (held out of the training set, which also chooses the best "
        "epoch), default augmentation: pad-crop, flip, Cutout 16x16 (paper: centre uniform, clipped at borders, p 1)",
        "figure": {
            "test_acc": 0.917,
            "status": "target",
            "of": "the published figure of this recipe (test set); not yet measured by lrcam",
            "command": "python bench/train.py --to-accuracy --preset cifar10_resnet18_classic --seeds 5",
        },
        "spec": {
            "dataset": {"name": "cifar10"},
            "model": {"name": "resnet18", "width": 64},
            "epochs": 50,
            "batch_size": 128,
            "optimizer": {"name": "sgd", "lr": 0.05, "momentum": 0.9, "weight_decay": 0.0005},
            "validation_split": 0.1,
            "scheduler": {
                "name": "reduce_on_plateau",
                "mode": "max",
                "factor": 0.1,
                "patience": 3,
                "threshold": 0.001,
                "threshold_mode": "abs",
                "min_lr": 0,
            },
            "augmentation": "default",
            "gradcam_misclassified": 25,
        },
    },
    {
        "name": "cifar10_custom_resnet_one_cycle",
        "description": "ResNet9 with OneCycle (24 epochs, peak at epoch 5, batch 512), default augmentation: "
        "pad-crop, flip, Cutout 16x16 (paper: centre uniform, clipped at borders, p 1)",
        "figure": {
            "test_acc": 0.90,
            "status": "target",
            "of": "the last epoch, on the test set; not yet measured by lrcam",
            "command": "python bench/train.py --to-accuracy --preset cifar10_custom_resnet_one_cycle --seeds 5",
        },
        "spec": {
            "dataset": {"name": "cifar10"},
            "model": {"name": "custom_resnet"},
            "epochs": 24,
            "batch_size": 512,
            "optimizer": {"name": "sgd", "lr": 0.05, "momentum": 0.9, "weight_decay": 0.0005, "nesterov": True},
            "scheduler": {
                "name": "one_cycle",
                "max_lr": 0.05,
                "peak_epoch": 5,
                "div_factor": 100,
                "final_div_factor": 100,
                "anneal_strategy": "linear",
            },
            "augmentation": "default",
        },
    },
]

GPU_PRESETS: list[dict[str, Any]] = [
    {
        "name": "cifar10_resnet18_gpu",
        "description": "GPU: ResNet18 on CIFAR-10 in 18 epochs (target: 30 s on an H100 with a warm compile "
        "cache): batch 512, OneCycle peak 0.4 at 25%, nesterov, label smoothing 0.1, default augmentation "
        "(pad-crop, flip, Cutout 16x16 (paper: centre uniform, clipped at borders, p 1)) on the GPU, bf16, "
        "channels_last, torch.compile",
        "figure": {
            "test_acc": 0.93,
            "status": "target",
            "of": "the last epoch, on the test set; not yet measured with this augmentation",
            "command": "python bench/train.py --to-accuracy --preset cifar10_resnet18_gpu --seeds 5",
        },
        "spec": {
            "dataset": {"name": "cifar10"},
            "model": {"name": "resnet18", "width": 64},
            "epochs": 18,
            "batch_size": 512,
            "optimizer": {"name": "sgd", "lr": 0.4, "momentum": 0.9, "weight_decay": 0.0005, "nesterov": True},
            "scheduler": {
                "name": "one_cycle",
                "max_lr": 0.4,
                "pct_start": 0.25,
                "div_factor": 20,
                "final_div_factor": 200,
            },
            "augmentation": "default",
            "label_smoothing": 0.1,
            "compile": "auto",
        },
    },
    {
        "name": "cifar10_custom_resnet_gpu",
        "description": "GPU: ResNet9 on CIFAR-10 with Page's schedule (linear ramp to 0.4 at epoch 5, down to 0 "
        "at epoch 24), batch 512, label smoothing 0.2, default augmentation (pad-crop, flip, Cutout 16x16 (paper: "
        "centre uniform, clipped at borders, p 1)); target: "
        "12 s on an H100",
        "figure": {
            "test_acc": 0.94,
            "status": "target",
            "of": "the last epoch, on the test set; not yet measured by lrcam",
            "command": "python bench/train.py --to-accuracy --preset cifar10_custom_resnet_gpu --seeds 5",
        },
        "spec": {
            "dataset": {"name": "cifar10"},
            "model": {"name": "custom_resnet", "width": 64},
            "epochs": 24,
            "batch_size": 512,
            "optimizer": {"name": "sgd", "lr": 0.4, "momentum": 0.9, "weight_decay": 0.0005, "nesterov": True},
            "scheduler": {
                "name": "one_cycle",
                "max_lr": 0.4,
                "peak_epoch": 5,
                "div_factor": 20,
                "final_div_factor": 200,
                "anneal_strategy": "linear",
            },
            "augmentation": "default",
            "label_smoothing": 0.2,
            "compile": "auto",
        },
    },
    {
        "name": "cifar10_resnet18_long_gpu",
        "description": "GPU: ResNet18 on CIFAR-10, longer: 100 epochs of OneCycle peak 0.4, batch 512, label "
        "smoothing 0.1, default augmentation (pad-crop, flip, "
        "Cutout 16x16 (paper: centre uniform, clipped at borders, p 1))",
        "figure": {
            "test_acc": 0.95,
            "status": "target",
            "of": "the last epoch, on the test set (the Cutout paper: 96.0% in 200 epochs); not yet measured by lrcam",
            "command": "python bench/train.py --to-accuracy --preset cifar10_resnet18_long_gpu --seeds 5",
        },
        "spec": {
            "dataset": {"name": "cifar10"},
            "model": {"name": "resnet18", "width": 64},
            "epochs": 100,
            "batch_size": 512,
            "optimizer": {"name": "sgd", "lr": 0.4, "momentum": 0.9, "weight_decay": 0.0005, "nesterov": True},
            "scheduler": {
                "name": "one_cycle",
                "max_lr": 0.4,
                "pct_start": 0.15,
                "div_factor": 20,
                "final_div_factor": 200,
            },
            "augmentation": "default",
            "label_smoothing": 0.1,
            "compile": "auto",
        },
    },
    {
        "name": "fashion_mnist_resnet18_gpu",
        "description": "GPU: ResNet18 on Fashion-MNIST: 30 epochs of OneCycle peak 0.2, batch "
        "256, default augmentation (pad-crop, flip, Cutout 14x14 on its 28 px images (paper: centre uniform, "
        "clipped at borders, p 1)), label smoothing 0.1",
        "figure": {
            "test_acc": 0.95,
            "status": "target",
            "of": "the last epoch, on the test set (published for ResNet18: 94.9%); not yet measured by lrcam",
            "command": "python bench/train.py --to-accuracy --preset fashion_mnist_resnet18_gpu --seeds 5",
        },
        "spec": {
            "dataset": {"name": "fashion_mnist"},
            "model": {"name": "resnet18", "width": 64},
            "epochs": 30,
            "batch_size": 256,
            "optimizer": {"name": "sgd", "lr": 0.2, "momentum": 0.9, "weight_decay": 0.0005, "nesterov": True},
            "scheduler": {"name": "one_cycle", "max_lr": 0.2, "pct_start": 0.2},
            "augmentation": "default",
            "label_smoothing": 0.1,
            "compile": "auto",
        },
    },
]
PRESETS += GPU_PRESETS

EXAMPLE_FILES = {
    "fashion_mnist_cpu": "fashion_mnist_cpu",
    "cifar10_cpu": "cifar10_cpu",
    "cifar10_resnet18_classic": "cifar10_resnet18",
    "cifar10_custom_resnet_one_cycle": "cifar10_custom_resnet_onecycle",
} | {preset["name"]: preset["name"] for preset in GPU_PRESETS}
