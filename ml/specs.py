"""Job specifications: the one pydantic model per job that is the API schema, the Celery payload
and the CLI's input. Importing this module never imports torch."""

from __future__ import annotations

import json
from pathlib import PurePosixPath
from typing import Annotated, Any, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator

DATASETS = ("cifar10", "fashion_mnist", "image_folder", "uploaded")
MODELS = ("resnet18", "custom_resnet")
MAX_PROBE_INDICES = 32  # test images a run explains every epoch: a strip a person can take in
MAX_EPOCHS = 500  # a week of CPU time for a tiny model; more is a typo
MAX_BATCH_SIZE = 4096  # a full H100 holds ResNet18 at 32x32 with room to spare
COMPILE_MIN_STEPS = 500  # "auto" compiles runs with at least this many training steps
CompileMode = Literal["auto", "off", "default", "reduce-overhead", "max-autotune-no-cudagraphs"]


# The catalogue: pure data, the parameter counts at width 64, 10 classes, 3 input channels
# (asserted against the real modules in tests/ml/test_models.py). The one source of both: the spec
# description, ml.models and the API catalogue read them here (torch-free).
MODEL_INFO: dict[str, dict[str, object]] = {
    "resnet18": {
        "description": "CIFAR ResNet18 (kuangliu): 3x3 stem without max-pool, BasicBlocks [2, 2, 2, 2], "
        "widths w, 2w, 4w, 8w, global average pool, linear",
        "parameters": 11_173_962,
    },
    "custom_resnet": {
        "description": "ResNet9 of the OneCycle recipe (David Page): prep conv, three conv-pool-BN-ReLU "
        "stages with residual blocks after the first and third, global max pool, linear",
        "parameters": 6_573_130,
    },
}


class Spec(BaseModel):
    """Base for every spec: unknown fields are a 422, not silently ignored."""

    model_config = ConfigDict(extra="forbid")


MIN_IMAGE_SIZE, MAX_IMAGE_SIZE = 8, 256  # px a side: what a spec may ask, and what a checkpoint may say
NATIVE_SIDES = {"cifar10": 32, "fashion_mnist": 28}  # px; an image folder's is its `image_size`
UPLOADS_FOLDER = "uploads"  # under DATA_DIR: an uploaded dataset is the image folder uploads/<id>/


class DatasetSpec(Spec):
    name: Literal["cifar10", "fashion_mnist", "image_folder", "uploaded"] = Field(
        description="cifar10 | fashion_mnist | image_folder (then `path` is required) | uploaded (a dataset sent "
        "to POST /datasets; then `id` is required)"
    )
    path: str | None = Field(
        default=None,
        description="image_folder only: a folder under DATA_DIR holding train/<class>/* and test/<class>/*",
    )
    id: str | None = Field(
        default=None, pattern=r"^[0-9a-f]{32}$", description="uploaded only: the id POST /datasets answered"
    )
    image_size: int = Field(
        default=32,
        ge=MIN_IMAGE_SIZE,
        le=MAX_IMAGE_SIZE,
        description="image_folder and uploaded only: each image is scaled so that its shorter side is this size and "
        "centre-cropped to a square (its aspect kept); transparent pixels are composited on white. /predict "
        "prepares uploads the same way",
    )
    train_subset: int | None = Field(
        default=None, ge=10, description="use only N training images, stratified by class; null = all"
    )
    test_subset: int | None = Field(
        default=None, ge=10, description="use only N test images, stratified by class; null = all"
    )

    @field_validator("path")
    @classmethod
    def _relative_path(cls, value: str | None) -> str | None:
        if value is None:
            return None
        path = PurePosixPath(value.replace("\\", "/"))
        if path.is_absolute() or ".." in path.parts or not path.parts:
            raise ValueError(f"path must be a folder relative to DATA_DIR without '..'; got {value!r}")
        return str(path)

    @property
    def side(self) -> int:
        """The side in pixels of the (square) images the model gets."""
        return NATIVE_SIDES.get(self.name, self.image_size)

    @model_validator(mode="after")
    def _path_iff_image_folder(self) -> DatasetSpec:
        if self.name == "image_folder" and self.path is None:
            raise ValueError("dataset.path is required when dataset.name is 'image_folder'")
        if self.name != "image_folder" and self.path is not None:
            raise ValueError(f"dataset.path is only allowed with 'image_folder', not {self.name!r}")
        if (self.name == "uploaded") != (self.id is not None):
            raise ValueError("dataset.id is required with 'uploaded' (the id of POST /datasets) and allowed only there")
        return self

    @property
    def folder(self) -> str | None:
        """The image folder under DATA_DIR that the dataset reads, if it is one (image_folder, uploaded)."""
        return f"{UPLOADS_FOLDER}/{self.id}" if self.name == "uploaded" else self.path


class ModelSpec(Spec):
    name: Literal["resnet18", "custom_resnet"] = Field(
        default="resnet18",
        description=" | ".join(
            f"{name} ({info['description']}; {info['parameters']:,} parameters at width 64)"
            for name, info in MODEL_INFO.items()
        ),
    )
    width: int = Field(default=64, ge=2, le=256, description="channels of the first stage; 64 is the paper's")


class SGDSpec(Spec):
    name: Literal["sgd"] = "sgd"
    momentum: float = Field(default=0.9, ge=0, lt=1, description="SGD momentum")
    weight_decay: float = Field(default=5e-4, ge=0, le=1, description="L2 penalty")
    nesterov: bool = Field(default=False, description="Nesterov momentum (needs momentum > 0)")

    @model_validator(mode="after")
    def _nesterov_needs_momentum(self) -> SGDSpec:
        if self.nesterov and self.momentum == 0:
            raise ValueError("optimizer.nesterov requires optimizer.momentum > 0")
        return self


class TrainOptimizerSpec(SGDSpec):
    lr: float | Literal["auto"] = Field(
        default=0.05, description='a learning rate > 0, or "auto" with lr_finder_job to take its suggestion'
    )
    lr_finder_job: str | None = Field(default=None, description='a finished LR-finder job (id) when lr is "auto"')

    @field_validator("lr")
    @classmethod
    def _positive_lr(cls, value: float | str) -> float | str:
        if value != "auto" and not (0 < value <= 100):  # type: ignore[operator]
            raise ValueError(f'lr must be a number in (0, 100] or "auto"; got {value!r}')
        return value

    @model_validator(mode="after")
    def _auto_needs_job(self) -> TrainOptimizerSpec:
        if self.lr == "auto" and not self.lr_finder_job:
            raise ValueError('optimizer.lr "auto" requires optimizer.lr_finder_job (a finished LR-finder job)')
        if self.lr != "auto" and self.lr_finder_job:
            raise ValueError('optimizer.lr_finder_job is only used with optimizer.lr "auto"')
        return self


class ReduceOnPlateauSpec(Spec):
    """torch.optim.lr_scheduler.ReduceLROnPlateau, stepped every epoch on validation accuracy (with
    validation_split), else on test accuracy."""

    name: Literal["reduce_on_plateau"] = "reduce_on_plateau"
    mode: Literal["min", "max"] = "max"
    factor: float = Field(default=0.1, gt=0, lt=1)
    patience: int = Field(default=3, ge=0)
    threshold: float = Field(default=1e-3, ge=0)
    threshold_mode: Literal["rel", "abs"] = "abs"
    cooldown: int = Field(default=0, ge=0)
    min_lr: float = Field(default=0, ge=0)
    eps: float = Field(default=1e-8, ge=0)


CYCLE_MOMENTUM_DESCRIPTION = (
    "cycle the momentum inversely to the LR, from max_momentum down to base_momentum and back (torch's "
    "OneCycleLR/CyclicLR behaviour, which otherwise forces 0.95 -> 0.85); false (default) = the momentum "
    "stays optimizer.momentum throughout"
)
MAX_MOMENTUM_DESCRIPTION = "with cycle_momentum: the momentum at the lowest LR; null = optimizer.momentum"
BASE_MOMENTUM_DESCRIPTION = (
    "with cycle_momentum: the momentum at the highest LR; null = max_momentum - 0.1 (torch's span), at least 0"
)
MOMENTUM_SPAN = 0.1  # torch's defaults cycle 0.95 -> 0.85


class CycleMomentumSpec(Spec):
    """The momentum fields OneCycleLR and CyclicLR share; `momentum_range` resolves their defaults."""

    cycle_momentum: bool = Field(default=False, description=CYCLE_MOMENTUM_DESCRIPTION)
    base_momentum: float | None = Field(default=None, ge=0, lt=1, description=BASE_MOMENTUM_DESCRIPTION)
    max_momentum: float | None = Field(default=None, ge=0, lt=1, description=MAX_MOMENTUM_DESCRIPTION)

    @model_validator(mode="after")
    def _base_below_max(self) -> CycleMomentumSpec:
        base, top = self.base_momentum, self.max_momentum
        if base is not None and top is not None and base > top:
            raise ValueError(f"scheduler.base_momentum ({base}) must be <= scheduler.max_momentum ({top})")
        return self

    def momentum_range(self, momentum: float) -> tuple[float, float]:
        """(base_momentum, max_momentum) for an optimizer whose momentum is `momentum`."""
        top = momentum if self.max_momentum is None else self.max_momentum
        base = max(0.0, round(top - MOMENTUM_SPAN, 10)) if self.base_momentum is None else self.base_momentum
        return min(base, top), top


class OneCycleSpec(CycleMomentumSpec):
    """torch.optim.lr_scheduler.OneCycleLR, stepped every batch."""

    name: Literal["one_cycle"] = "one_cycle"
    max_lr: float | None = Field(default=None, gt=0, description="null = the optimizer's lr")
    pct_start: float | None = Field(default=None, gt=0, lt=1, description="default 0.3 (or from peak_epoch)")
    peak_epoch: float | None = Field(default=None, gt=0, description="epoch at which the LR peaks; sets pct_start")
    div_factor: float = Field(default=25.0, gt=0)
    final_div_factor: float = Field(default=1e4, gt=0)
    anneal_strategy: Literal["cos", "linear"] = "cos"
    three_phase: bool = False

    @model_validator(mode="after")
    def _one_of_pct_or_peak(self) -> OneCycleSpec:
        if self.pct_start is not None and self.peak_epoch is not None:
            raise ValueError("scheduler: give pct_start or peak_epoch, not both")
        return self

    def resolved_pct_start(self, epochs: int) -> float:
        if self.peak_epoch is not None:
            if self.peak_epoch >= epochs:
                raise ValueError(f"scheduler.peak_epoch must be < epochs ({epochs}); got {self.peak_epoch}")
            return self.peak_epoch / epochs
        return 0.3 if self.pct_start is None else self.pct_start


class CyclicSpec(CycleMomentumSpec):
    """torch.optim.lr_scheduler.CyclicLR, stepped every batch."""

    name: Literal["cyclic"] = "cyclic"
    base_lr: float = Field(default=1e-3, gt=0)
    max_lr: float | None = Field(default=None, gt=0, description="null = the optimizer's lr")
    step_size_up: int = Field(default=2000, ge=1, description="batches from base_lr to max_lr")
    step_size_down: int | None = Field(default=None, ge=1)
    mode: Literal["triangular", "triangular2", "exp_range"] = "triangular"
    gamma: float = Field(default=1.0, gt=0, le=1)


class NoSchedulerSpec(Spec):
    name: Literal["none"] = "none"


SchedulerSpec = Annotated[
    ReduceOnPlateauSpec | OneCycleSpec | CyclicSpec | NoSchedulerSpec, Field(discriminator="name")
]

# One albumentations transform: {"name": "<albumentations class>", ...its keyword arguments}.
TransformSpec = dict[str, Any]
Augmentation = Literal["default", "none"] | list[TransformSpec]

# Activation elements one image keeps for the backward pass, per channel of the model's first stage
# and per input pixel, measured with torch.autograd.graph.saved_tensors_hooks at widths 8-64 and
# 28-64 px (bench/README.md, "Memory"): about 28 for ResNet18, 14 for ResNet9.
ACTIVATIONS_PER_WIDTH_PIXEL = {"resnet18": 28, "custom_resnet": 14}
TRAINING_COPIES = 4  # fp32 copies of the weights a step holds: weights, gradients, momentum, a working copy
FLOAT_BYTES = 4

MAX_AUGMENTATIONS = 32  # transforms in a list: real pipelines have under ten; each costs every batch
AUGMENTATION_DESCRIPTION = (
    '"default" (pad-and-crop, horizontal flip, Cutout 16x16 (paper: centre uniform, clipped at borders, p 1) '
    "at 32 px, the hole half the image side filled with the mean, normalize), "
    '"none" (normalize only), or a list of albumentations transforms [{"name": "HorizontalFlip", "p": 0.5}, ...] '
    'or the paper\'s {"name": "Cutout", "num_holes": 1, "length": 16, "fill": 0, "p": 1} '
    f"(at most {MAX_AUGMENTATIONS}); Normalize with the dataset's statistics is appended unless the list has one"
)


def _validate_augmentation(value: Augmentation, *, side: int | None) -> Augmentation:
    if isinstance(value, list):
        if len(value) > MAX_AUGMENTATIONS:
            raise ValueError(f"augmentation lists at most {MAX_AUGMENTATIONS} transforms; got {len(value)}")
        from ml.augment import check_sizes, validate_transforms  # albumentations, not torch

        if side is not None:  # before anything is built: sizes far beyond the images would allocate gigabytes
            check_sizes(value, side=side)
        validate_transforms(value)
    return value


class CommonSpec(Spec):
    dataset: DatasetSpec
    model: ModelSpec = Field(default_factory=ModelSpec)
    batch_size: int = Field(default=128, ge=1, le=MAX_BATCH_SIZE, description="training images per step")
    augmentation: Augmentation = Field(default="default", description=AUGMENTATION_DESCRIPTION)
    seed: int = Field(default=0, ge=0, le=2**31 - 1, description="seeds data order, augmentation and weights")
    label_smoothing: float = Field(
        default=0.0,
        ge=0,
        lt=1,
        description="cross-entropy label smoothing of the training loss (and of the LR range test's, so that it "
        "measures the loss training will use); test losses are plain cross-entropy; 0 = none",
    )

    def memory_estimate(self) -> int:
        """Bytes a training step of this spec takes, about: weights, gradients, momentum and a working
        copy of them (fp32), and the activations the batch keeps for the backward pass and their
        gradients. A bound checked before anything is allocated (MEMORY_FACTORS' measurements)."""
        name, width, side = self.model.name, self.model.width, self.dataset.side
        parameters = float(MODEL_INFO[name]["parameters"]) * (width / 64) ** 2  # type: ignore[arg-type]
        batch = min(self.batch_size, self.dataset.train_subset or self.batch_size)  # a batch of what there is
        activations = batch * ACTIVATIONS_PER_WIDTH_PIXEL[name] * width * side * side * 2
        return int((parameters * TRAINING_COPIES + activations) * FLOAT_BYTES)

    def memory_refusal(self, budget: int, *, setting: str) -> str | None:
        """Why this spec does not fit in `budget` bytes (named by `setting`), or None."""
        needed = self.memory_estimate()
        if needed <= budget:
            return None
        return (
            f"this job needs about {needed / 2**30:.1f} GiB for a training step ({self.model.name} width "
            f"{self.model.width}, batch_size {self.batch_size}, {self.dataset.side} px images), more than the "
            f"{budget / 2**30:.1f} GiB of {setting}; lower batch_size, model.width or the image size"
        )

    @field_validator("augmentation")
    @classmethod
    def _augmentation(cls, value: Augmentation, info: ValidationInfo) -> Augmentation:
        dataset = info.data.get("dataset")  # validated first (declared first), unless it was invalid
        return _validate_augmentation(value, side=dataset.side if isinstance(dataset, DatasetSpec) else None)


class LRFinderSpec(CommonSpec):
    """POST /jobs/lr-finder: Leslie Smith's LR range test."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "dataset": {"name": "cifar10", "train_subset": None},
                    "model": {"name": "resnet18"},
                    "optimizer": {"name": "sgd", "momentum": 0.9, "weight_decay": 0.0005, "nesterov": False},
                    "batch_size": 128,
                    "start_lr": 1e-7,
                    "end_lr": 10,
                    "num_iter": 100,
                    "step_mode": "exp",
                    "smooth_f": 0.05,
                    "diverge_th": 5,
                    "augmentation": "default",
                    "seed": 0,
                }
            ]
        }
    )

    optimizer: SGDSpec = Field(default_factory=SGDSpec)
    start_lr: float = Field(default=1e-7, gt=0, description="the learning rate of the first iteration")
    end_lr: float = Field(default=10.0, gt=0, description="the learning rate of the last iteration")
    num_iter: int = Field(default=100, ge=2, le=10_000, description="iterations (one batch each)")
    step_mode: Literal["exp", "linear"] = Field(default="exp", description="how the LR grows between them")
    smooth_f: float = Field(default=0.05, ge=0, lt=1, description="exponential smoothing of the loss; 0 = none")
    diverge_th: float = Field(default=5.0, gt=1, description="stop once loss > diverge_th x best loss")
    rise_stop: float | None = Field(
        default=0.5,
        gt=0,
        le=1,
        description="also stop once the smoothed loss, after falling at least 10% below its first value, "
        "has climbed back this fraction of that fall (0.5 = half-way up again): the sweep has left its "
        "minimum; null = only diverge_th (torch-lr-finder's rule)",
    )

    @model_validator(mode="after")
    def _range(self) -> LRFinderSpec:
        if self.start_lr >= self.end_lr:
            raise ValueError(f"start_lr ({self.start_lr}) must be < end_lr ({self.end_lr})")
        return self


class TrainSpec(CommonSpec):
    """POST /jobs/train."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "dataset": {"name": "cifar10", "train_subset": None, "test_subset": None},
                    "model": {"name": "resnet18", "width": 64},
                    "epochs": 50,
                    "batch_size": 128,
                    "optimizer": {
                        "name": "sgd",
                        "lr": 0.05,
                        "momentum": 0.9,
                        "weight_decay": 0.0005,
                        "nesterov": False,
                    },
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
                    "target_accuracy": None,
                    "gradcam_misclassified": 25,
                    "seed": 0,
                }
            ]
        }
    )

    epochs: int = Field(default=50, ge=1, le=MAX_EPOCHS, description="passes over the training set")
    optimizer: TrainOptimizerSpec = Field(default_factory=TrainOptimizerSpec)
    scheduler: SchedulerSpec = Field(default_factory=ReduceOnPlateauSpec)
    target_accuracy: float | None = Field(
        default=None,
        gt=0,
        le=1,
        description="stop once accuracy reaches this fraction, e.g. 0.88: validation accuracy with "
        "validation_split, else test accuracy",
    )
    validation_split: float | None = Field(
        default=None,
        gt=0,
        le=0.5,
        description="hold out this fraction of the training set (stratified by class, drawn from seed) as a "
        "validation set; then model selection (best), ReduceLROnPlateau and target_accuracy read validation "
        "accuracy, and the test set only measures; null = off: they read the test set",
    )
    gradcam_misclassified: int = Field(
        default=25, ge=0, le=100, description="after training, GradCAM for this many misclassified test images"
    )
    test_time_flip: bool = Field(
        default=False,
        description="evaluate each test (and validation) image and its mirror image and average the two logits: "
        "a few tenths of a percent on CIFAR-10 for twice the evaluation time; the accuracies, confusion matrix, "
        "misclassified images and /predict on the checkpoint all use it",
    )
    probe_indices: list[Annotated[int, Field(ge=0)]] | None = Field(
        default=None,
        max_length=MAX_PROBE_INDICES,
        description="test images (positions in the test set, after test_subset) whose GradCAM maps of the "
        f"predicted class are recorded at every epoch, at most {MAX_PROBE_INDICES}, each once; null = two a "
        "class drawn from seed (GET /jobs/{id}/explanations serves them)",
    )
    compile: CompileMode = Field(
        default="auto",
        description=f"torch.compile: auto (compile runs of >= {COMPILE_MIN_STEPS} training steps, eager "
        "below), off, or a torch.compile mode; reduce-overhead adds CUDA graphs on a GPU",
    )

    @field_validator("probe_indices")
    @classmethod
    def _distinct_probes(cls, value: list[int] | None, info: ValidationInfo) -> list[int] | None:
        if value is None:
            return None
        repeated = sorted({i for i in value if value.count(i) > 1})
        if repeated:
            raise ValueError(f"probe_indices must name each test image once; {repeated} repeat")
        dataset = info.data.get("dataset")
        subset = dataset.test_subset if isinstance(dataset, DatasetSpec) else None
        if subset is not None and max(value, default=0) >= subset:
            raise ValueError(f"probe_indices must be below dataset.test_subset ({subset}); got {max(value)}")
        return value

    @model_validator(mode="after")
    def _scheduler_fits(self) -> TrainSpec:
        if isinstance(self.scheduler, OneCycleSpec):
            self.scheduler.resolved_pct_start(self.epochs)  # raises on a peak past the end
        return self

    def with_lr(self, lr: float) -> Self:
        """This spec with a concrete learning rate (resolving "auto")."""
        optimizer = self.optimizer.model_copy(update={"lr": lr, "lr_finder_job": None})
        return self.model_copy(update={"optimizer": optimizer})

    def lr_finder_mismatch(self, finder: LRFinderSpec, job_id: str) -> str | None:
        """For lr "auto": a warning naming each setting the best LR depends on (LR_FINDER_SETTINGS, and the
        dataset but its subsets) in which the LR-finder job `finder` ran otherwise than this job, with
        both values; None when they agree."""
        theirs, ours = _lr_settings(finder), _lr_settings(self)
        differing = [
            f"{name} {json.dumps(theirs.get(name))} (this job: {json.dumps(ours.get(name))})"
            for name in dict.fromkeys([*ours, *theirs])
            if theirs.get(name) != ours.get(name)
        ]
        if not differing:
            return None
        return (
            f'optimizer.lr "auto" took the suggestion of LR-finder job {job_id}, which ran with '
            f"{', '.join(differing)}; the best learning rate depends on these, so it may not suit this job: "
            "run the LR finder with this job's settings"
        )


MAX_FOLDS = 10  # cross-validation folds of an audit: K models, each trained on (K-1)/K of the images


class AuditSpec(TrainSpec):
    """A label audit: K-fold cross-validated training (K models of this spec, each trained on the other
    folds) that scores every training image with a model that never saw it, then ranks the likely
    label errors of the training set (ml.audit). The spec's epochs are each fold's: fewer than a full
    run's are usual."""

    folds: int = Field(
        default=4,
        ge=2,
        le=MAX_FOLDS,
        description=f"cross-validation folds (2-{MAX_FOLDS}), stratified by class and drawn from seed: each "
        "fold's images are scored by a model trained on the other folds",
    )

    @model_validator(mode="after")
    def _folds_hold_out(self) -> AuditSpec:
        for name in ("validation_split", "target_accuracy"):
            if getattr(self, name) is not None:
                raise ValueError(
                    f"{name} must be null in an audit: each fold is held out in turn and every fold model trains "
                    "its epochs in full"
                )
        return self

    def fold_spec(self) -> TrainSpec:
        """The TrainSpec each fold's model trains with: this spec without `folds`, and no report grids."""
        body = self.model_dump(exclude={"folds"}) | {"gradcam_misclassified": 0, "probe_indices": None}
        return TrainSpec.model_validate(body)


# The settings besides the dataset that move an LR range test's best learning rate: lr "auto" warns
# when its LR-finder job ran with others (the subsets are left out: a sweep on fewer images is usual).
LR_FINDER_SETTINGS = ("model.name", "model.width", "batch_size", "optimizer.weight_decay", "label_smoothing")


def _lr_settings(spec: CommonSpec) -> dict[str, Any]:
    settings = {}
    for dotted in LR_FINDER_SETTINGS:
        value: Any = spec
        for part in dotted.split("."):
            value = getattr(value, part)
        settings[dotted] = value
    dataset = spec.dataset.model_dump(mode="json", exclude={"train_subset", "test_subset"})
    return settings | {f"dataset.{key}": value for key, value in dataset.items()}


def no_suggestion(job_id: str) -> str:
    """Why lr "auto" refuses a succeeded LR-finder job without a suggestion, and what to do instead."""
    return (
        f"lr_finder job {job_id!r} gave no suggestion: its loss never fell clearly below where it started (the "
        "curve only rose or stayed flat); run the LR finder again with a lower start_lr, or give optimizer.lr "
        "as a number"
    )
