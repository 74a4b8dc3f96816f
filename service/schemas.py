"""Response schemas of the HTTP contract (the request schemas are `ml.specs.TrainSpec`/`LRFinderSpec`)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal, cast

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SerializerFunctionWrapHandler,
    TypeAdapter,
    WithJsonSchema,
    model_serializer,
    model_validator,
)

from ml.specs import AuditSpec, LRFinderSpec, ModelSpec, TrainSpec

JobKind = Literal["lr_finder", "train", "audit"]
JobStatus = Literal["queued", "running", "succeeded", "failed", "cancelled"]


class Sparse(BaseModel):
    """A stored JSON object read through a typed model: it serializes only the keys it was given (and
    any extra ones), so the response is the stored object, key for key, typed in /openapi.json."""

    model_config = ConfigDict(extra="allow")

    @model_serializer(mode="wrap")
    def _given_keys_only(self, handler: SerializerFunctionWrapHandler):  # type: ignore[no-untyped-def]  # no return type: keeps the schema
        data = handler(self)
        given = self.model_fields_set | set(self.model_extra or {})
        return {key: value for key, value in data.items() if key in given}


class ProgressPublic(Sparse):
    """Where a job is: {} while queued; an LR-finder job's has step, steps and fraction (and
    stop_reason once it stopped early); while a dataset downloads, downloading, downloaded_bytes and
    total_bytes instead. The LR finder's curve so far, stored with its progress, is served by
    GET /jobs/{id}/metrics, not with every job."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "epoch": 3,
                    "epochs": 50,
                    "step": 120,
                    "steps": 391,
                    "fraction": 0.061,
                    "updated_at": "2026-11-26T10:00:03.120000+00:00",
                }
            ]
        }
    )

    epoch: int | None = Field(default=None, description="train jobs: the epoch in progress, from 1")
    epochs: int | None = Field(default=None, description="train jobs: the run's epochs")
    step: int | None = Field(default=None, description="the batch (LR finder: the iteration) within the epoch")
    steps: int | None = Field(default=None, description="batches per epoch (LR finder: iterations)")
    fraction: float | None = Field(default=None, description="of the whole job done, 0..1; 1.0 once succeeded")
    downloading: str | None = Field(
        default=None, description="before the run starts: the dataset being downloaded (cifar10 on first use)"
    )
    downloaded_bytes: int | None = Field(default=None, description="while downloading: bytes so far")
    total_bytes: int | None = Field(default=None, description="while downloading: the archive's size, if known")
    stop_reason: str | None = Field(
        default=None,
        description="LR-finder jobs that stopped early: why (diverged, rise_stop, cancelled); step is then the "
        "iteration it stopped at",
    )
    updated_at: Annotated[str, WithJsonSchema({"type": "string", "format": "date-time"})] | None = Field(
        default=None,
        description="when the worker was at this step (progress is written at most once a second)",
    )

    @model_validator(mode="before")
    @classmethod
    def _without_curve(cls, data: Any) -> Any:
        return {k: v for k, v in data.items() if k != "curve"} if isinstance(data, dict) else data


def _job_example(kind: str, spec: type[TrainSpec] | type[LRFinderSpec], progress: dict[str, Any]) -> dict[str, Any]:
    """The contract's Job example, its params the spec's own example with every default filled in."""
    extra = cast("dict[str, Any]", spec.model_config["json_schema_extra"])
    params = spec.model_validate(extra["examples"][0]).model_dump(mode="json")
    return {
        "id": "5f0c9a1e2b7d4c3f8e6a1b2c3d4e5f60",
        "kind": kind,
        "status": "running",
        "params": params,
        "created_at": "2026-11-26T10:00:00Z",
        "started_at": "2026-11-26T10:00:01Z",
        "finished_at": None,
        "progress": progress | {"updated_at": "2026-11-26T10:00:03.120000+00:00"},
        "error": None,
        "checkpoint_id": None,
        "attempts": 1,
        "cancel_requested": False,
        "name": "baseline",
        "tags": ["sweep-1"],
    }


WARNINGS_DESCRIPTION = (
    "once the job has finished: what albumentations advised about the augmentation list, e.g. a deprecated "
    'transform, and for a train job with lr "auto" the settings its LR-finder job ran with otherwise (model, '
    "width, batch size, dataset, weight decay, label smoothing); one line each"
)


class BestEpochPublic(Sparse):
    epoch: int
    test_acc: float = Field(description="the test accuracy of the chosen epoch's model")
    val_acc: float | None = Field(default=None, description="with validation_split: what it was chosen on")


class JobBase(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: str
    kind: JobKind  # narrowed by each subclass; declared here to keep the contract's key order
    status: JobStatus
    params: TrainSpec | LRFinderSpec = Field(description="the validated request")
    created_at: datetime
    # the nullable fields have a default so that the examples hold once /openapi.json drops their nulls
    started_at: datetime | None = None
    finished_at: datetime | None = None
    progress: ProgressPublic
    error: str | None = Field(default=None, description="why the job failed (or was recorded as failed)")
    checkpoint_id: str | None = Field(default=None, description="the best checkpoint a train job left")
    attempts: int = Field(description="how many deliveries have started this job (at most MAX_JOB_ATTEMPTS)")
    cancel_requested: bool = Field(description="a cancel was asked of the running job and it has not stopped yet")
    best: BestEpochPublic | None = Field(
        default=None, description="train jobs that ended: their best epoch (as in the metrics); null before"
    )
    last: BestEpochPublic | None = Field(
        default=None, description="train jobs that ended: their last epoch (as in the metrics); null before"
    )
    lr: float | None = Field(
        default=None, description='train jobs that ended: the learning rate used ("auto" resolved)'
    )
    name: str | None = Field(default=None, description="the user's name for the run")
    tags: list[str] = Field(default_factory=list, description="the user's labels, in the order given")
    note: str | None = Field(default=None, description="the user's free text about the run")
    queue_position: int | None = Field(
        default=None, description="queued jobs: their place in line by submission time, 1 = the next to start"
    )


class TrainJobPublic(JobBase):
    """A training run."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                _job_example(
                    "train", TrainSpec, {"epoch": 3, "epochs": 50, "step": 120, "steps": 391, "fraction": 0.061}
                )
            ]
        }
    )

    kind: Literal["train"]
    params: TrainSpec = Field(description="the validated request, every default filled in")


class LRFinderJobPublic(JobBase):
    """An LR range test."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [_job_example("lr_finder", LRFinderSpec, {"step": 35, "steps": 100, "fraction": 0.35})]
        }
    )

    kind: Literal["lr_finder"]
    params: LRFinderSpec = Field(description="the validated request, every default filled in")


class AuditJobPublic(JobBase):
    """A label audit: K-fold cross-validated training that ranks the training set's likely label errors."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                _job_example(
                    "audit",
                    AuditSpec,
                    {"phase": "fold 2 of 4: training", "fold": 2, "folds": 4, "epoch": 1, "fraction": 0.31},
                )
            ]
        }
    )

    kind: Literal["audit"]
    params: AuditSpec = Field(description="the validated request, every default filled in")


AnyJobPublic = TrainJobPublic | LRFinderJobPublic | AuditJobPublic
JobPublic = Annotated[AnyJobPublic, Field(discriminator="kind")]
_JOB = TypeAdapter(JobPublic)


def job_public(job: object, *, queue_position: int | None = None) -> AnyJobPublic:
    """A job row as the contract's Job (its `kind` says which params it has), with its place in the
    queue when it is queued."""
    public = _JOB.validate_python(job, from_attributes=True)
    return public.model_copy(update={"queue_position": queue_position}) if queue_position is not None else public


class JobsPublic(BaseModel):
    jobs: list[JobPublic]
    total: int = Field(description="jobs matching the filters, on every page")


class EpochPublic(Sparse):
    """One epoch of a train job."""

    model_config = ConfigDict(
        extra="allow",
        json_schema_extra={
            "examples": [
                {
                    "epoch": 1,
                    "lr": 0.05,
                    "train_loss": 1.47,
                    "train_acc": 0.3555,
                    "test_loss": 1.41,
                    "test_acc": 0.458,
                    "seconds": 12.3,
                    "images_per_second": 4065.0,
                }
            ]
        },
    )

    epoch: int = Field(description="from 1")
    lr: float = Field(description="the learning rate at the epoch's first step")
    train_loss: float
    train_acc: float = Field(description="a fraction, 0..1")
    test_loss: float
    test_acc: float = Field(description="a fraction, 0..1")
    seconds: float = Field(description="the epoch's training time")
    images_per_second: float | None = Field(description="training images per second")
    val_loss: float | None = Field(default=None, description="with validation_split: on the held-out set")
    val_acc: float | None = Field(default=None, description="with validation_split: a fraction, 0..1")
    attention_drift: float | None = Field(
        default=None,
        description="the mean Pearson correlation of each probe image's GradCAM map with its map at the previous "
        "epoch (GET /jobs/{id}/explanations): 1 = the model looks where it did, near 0 = elsewhere; null at "
        "epoch 1",
    )


class FaithfulnessPublic(BaseModel):
    """pytorch-grad-cam's ROADCombined score of each GradCAM method on the probe images, for the best
    checkpoint: the softmax probability of the predicted class lost by removing (imputing) the least
    relevant pixels minus that lost by removing the most relevant, halved, averaged over the removal
    percentiles and the probes. Higher is more faithful; compare the methods on one model."""

    model_config = ConfigDict(validate_by_name=True, validate_by_alias=True, serialize_by_alias=True)

    measure: Literal["ROADCombined"] = Field(description="the pytorch-grad-cam metric")
    gradcam: float = Field(description="GradCAM's score")
    gradcam_plus_plus: float = Field(alias="gradcam++", description="GradCAM++'s score")
    percentiles: list[int] = Field(description="the % of pixels removed, each scored and averaged")
    target: str = Field(description="what the score measures the change of")
    probes: int = Field(description="probe images scored")


class ExplanationProbePublic(BaseModel):
    """One probe image at one epoch."""

    index: int = Field(description="its position in the test set")
    true_class: str
    pred_class: str = Field(description="the class the model predicted at this epoch, which the map explains")
    confidence: float = Field(description="the softmax probability of pred_class (4 digits)")
    true_probability: float = Field(description="the softmax probability of true_class (4 digits)")
    image: str = Field(description="the test image: a PNG data URL")
    map: str = Field(description="the GradCAM map, 0-255: a grayscale PNG data URL at the map's resolution")
    heatmap: str = Field(description="the map coloured (jet, blue = 0, red = 255) as a PNG data URL")


class ExplanationsPublic(BaseModel):
    """A train job's probe images explained at one epoch."""

    job_id: str
    epoch: int
    epochs: list[int] = Field(description="the epochs recorded so far")
    method: Literal["gradcam"] = Field(description="the method of the maps, of each probe's predicted class")
    test_time_flip: bool = Field(description="maps and predictions averaged with the mirror images'")
    probes: list[ExplanationProbePublic]


class TrainMetricsPublic(BaseModel):
    """A train job's metrics."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "job_id": "5f0c...",
                    "status": "running",
                    "epochs": [
                        {
                            "epoch": 1,
                            "lr": 0.05,
                            "train_loss": 1.47,
                            "train_acc": 0.3555,
                            "test_loss": 1.41,
                            "test_acc": 0.458,
                            "seconds": 12.3,
                            "images_per_second": 4065.0,
                        }
                    ],
                    "best": {"epoch": 1, "test_acc": 0.458},
                    "last": {"epoch": 1, "test_acc": 0.458},
                    "test_time_flip": False,
                    "per_class_accuracy": None,
                    "stop_reason": None,
                }
            ]
        }
    )

    job_id: str
    status: JobStatus
    epochs: list[EpochPublic] = Field(description="one record per epoch (after since_epoch), in order")
    best: BestEpochPublic | None = Field(
        description="the epoch chosen on `selected_on`; chosen on the test set, its test_acc is optimistic"
    )
    last: BestEpochPublic | None = Field(default=None, description="the latest epoch: what the run ended with")
    test_time_flip: bool = Field(
        default=False, description="whether every accuracy here averages each image with its mirror image"
    )
    per_class_accuracy: dict[str, float] | None = Field(
        default=None, description="test accuracy per class name, once the job has finished"
    )
    stop_reason: Literal["completed", "target_accuracy", "cancelled"] | None = Field(
        default=None, description="why the run ended; null while it runs"
    )
    selected_on: Literal["validation", "test"] = Field(
        default="test",
        description="the set that chose `best` and drove ReduceLROnPlateau and target_accuracy: validation "
        "(val_loss, val_acc in each epoch) with validation_split, else test",
    )
    warnings: list[str] = Field(default_factory=list, description=WARNINGS_DESCRIPTION)
    faithfulness: FaithfulnessPublic | None = Field(
        default=None, description="how faithful the best checkpoint's GradCAM maps are, once the job has finished"
    )
    calibration: CalibrationPublic | None = Field(
        default=None, description="once the job has finished: the best checkpoint's calibration (test set)"
    )


class ReliabilityBinPublic(BaseModel):
    lower: float = Field(description="the bin's range of top-1 probabilities: [lower, upper), the last one with 1")
    upper: float
    count: int = Field(description="images whose top-1 probability falls in the bin")
    confidence: float | None = Field(description="their mean top-1 probability; null for an empty bin")
    accuracy: float | None = Field(description="the fraction of them predicted right; null for an empty bin")


class ReliabilityPublic(BaseModel):
    set: Literal["test", "validation"]
    ece: float = Field(description="expected calibration error (L1, 15 bins): |accuracy - confidence| by share")
    bins: list[ReliabilityBinPublic]


class TemperaturePublic(BaseModel):
    value: float = Field(description="T: the logits are divided by it before the softmax")
    applied: bool = Field(description="fitted on the validation split, so /predict?calibrated=true applies it")
    fitted_on: Literal["validation", "test"] = Field(
        description="test only without a validation split: then reported, not applied"
    )


class CalibrationPublic(ReliabilityPublic):
    """The best checkpoint's calibration on the test set, and the temperature scaling fitted for it."""

    validation: ReliabilityPublic | None = Field(description="the same on the validation split; null without one")
    temperature: TemperaturePublic
    calibrated: ReliabilityPublic = Field(description="the test set's reliability with the logits divided by T")


class LabelIssuePublic(BaseModel):
    rank: int = Field(description="1 = the most likely label error")
    index: int = Field(description="the image's position in its set (`set`)")
    given_class: str = Field(description="the label the image has")
    predicted_class: str = Field(description="the best checkpoint's class")
    score: float = Field(description="cleanlab's label quality score, 0..1: lower is more likely mislabelled")
    given_probability: float = Field(description="the model's probability of the given class (4 digits)")
    given_overlay_url: str | None = Field(description="GradCAM of the given class (PNG); null past the first 50")
    predicted_overlay_url: str | None = Field(description="GradCAM of the predicted class; null past the first 50")


class LabelIssuesPublic(BaseModel):
    issues: list[LabelIssuePublic]
    total: int = Field(description="likely label errors found, over all pages")
    set: Literal["test", "validation", "train"] = Field(
        description="the images scored: the validation split when held out, else the test set; a label audit's: "
        "the training set"
    )
    scored: int = Field(description="images scored")


class SuggestionsPublic(Sparse):
    """Learning rates read off the descending part of the trend, up to its minimum; all null when the curve
    never fell clearly below its start, steepest null where that part is too short."""

    steepest: float | None = Field(default=None, description="the steepest descent of the loss")
    valley: float | None = Field(default=None, description="fastai's valley")
    minimum_div10: float | None = Field(default=None, description="a tenth of the LR at the minimum loss")


class LRFinderMetricsPublic(BaseModel):
    """An LR range test's curve and suggestions. While it runs (and after a failure) the curve so far,
    thinned to at most 200 points and updated with its progress, and no suggestion yet."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "job_id": "5f0c...",
                    "status": "succeeded",
                    "lrs": [1e-7, 1.2e-7],
                    "losses": [2.31, 2.30],
                    "smoothed_losses": [2.31, 2.305],
                    "trend_losses": [2.31, 2.305],
                    "suggested_lr": 0.0533,
                    "suggestions": {"steepest": 0.0533, "valley": 0.021, "minimum_div10": 0.08},
                    "diverged_at_lr": 1.2,
                    "stopped_at_lr": 1.2,
                    "stop_reason": "diverged",
                }
            ]
        }
    )

    job_id: str
    status: JobStatus
    lrs: list[float] = Field(description="the learning rate of each iteration")
    losses: list[float] = Field(description="the training loss at each of lrs")
    smoothed_losses: list[float] = Field(description="losses, exponentially smoothed (smooth_f)")
    trend_losses: list[float] = Field(
        default_factory=list,
        description="what the stop rules and the suggestions read: smoothed_losses when smooth_f is in (0, 0.1], "
        "else the losses smoothed at 0.05",
    )
    suggested_lr: float | None = Field(description='the suggestion an lr "auto" train job takes')
    suggestions: SuggestionsPublic
    diverged_at_lr: float | None = Field(
        description="where the loss became NaN/inf or the trend passed diverge_th x its best; null if never"
    )
    stopped_at_lr: float | None = Field(
        default=None, description="the LR of the last iteration of a sweep that stopped early (diverged, rise_stop)"
    )
    stop_reason: Literal["completed", "diverged", "rise_stop", "cancelled"] | None = Field(
        default=None,
        description="why the test ended: completed (every iteration ran) | diverged | rise_stop (the trend climbed "
        "back rise_stop of its fall) | cancelled; null while it runs",
    )
    warnings: list[str] = Field(default_factory=list, description=WARNINGS_DESCRIPTION)


class AuditFoldPublic(Sparse):
    fold: int = Field(description="from 1")
    images: int = Field(description="its held-out training images, scored by the model trained on the other folds")
    accuracy: float = Field(description="that model's accuracy on them")
    seconds: float | None = Field(default=None, description="its training and scoring time; absent when resumed")


class AuditMetricsPublic(BaseModel):
    """A label audit's figures, once it has ended (before: empty, and the job's progress says which fold
    trains)."""

    job_id: str
    status: JobStatus
    folds: list[AuditFoldPublic] = Field(default_factory=list, description="each fold's model, in order")
    images: int | None = Field(default=None, description="the training images audited (after train_subset)")
    scored: int | None = Field(default=None, description="of them, scored out of fold (all, unless cancelled)")
    accuracy: float | None = Field(default=None, description="the out-of-fold accuracy over every training image")
    label_issues: int | None = Field(
        default=None, description="likely label errors found (GET /jobs/{id}/label-issues lists them)"
    )
    stop_reason: str | None = Field(default=None, description="completed | cancelled; null while it runs")
    warnings: list[str] = Field(default_factory=list, description=WARNINGS_DESCRIPTION)


class ArtifactPublic(BaseModel):
    name: str
    media_type: str
    url: str


class ArtifactsPublic(BaseModel):
    artifacts: list[ArtifactPublic]


class ExamplePublic(BaseModel):
    index: int = Field(description="the image's position in the test set")
    true_class: str
    pred_class: str
    confidence: float = Field(description="the softmax probability of pred_class (4 digits)")
    true_probability: float = Field(description="the softmax probability of true_class (4 digits)")
    overlay_url: str | None = Field(description="its GradCAM overlay (PNG); null when none was rendered")


class ExamplesPublic(BaseModel):
    examples: list[ExamplePublic]
    total: int = Field(description="examples that match the filters, over all pages")


class ConfusionPublic(BaseModel):
    classes: list[str]
    confusion: list[list[int]] = Field(description="confusion[i][j]: test images of class i predicted as j")
    total: int = Field(description="test images")
    test_time_flip: bool = Field(description="predictions from each image and its mirror image")


class CheckpointPublic(BaseModel):
    model_config = ConfigDict(from_attributes=True, protected_namespaces=())

    id: str
    job_id: str
    model: ModelSpec
    dataset: str
    classes: list[str]
    test_acc: float | None = Field(description="the test accuracy of this checkpoint's epoch")
    epoch: int | None
    selected_on: Literal["validation", "test"] = Field(
        description="the set that chose this epoch; with test, test_acc is optimistic (it chose and measures)"
    )
    last_epoch: int | None = Field(description="the job's last epoch, once it ended")
    last_test_acc: float | None = Field(description="the job's last epoch's test accuracy, once it ended")
    test_time_flip: bool = Field(description="accuracies and predictions average each image with its mirror")
    temperature: float | None = Field(
        default=None,
        description="the temperature fitted on the validation split that /predict?calibrated=true divides the "
        "logits by; null when none applies (no validation split)",
    )
    created_at: datetime


class CheckpointsPublic(BaseModel):
    checkpoints: list[CheckpointPublic]
    total: int = Field(description="every checkpoint, on every page")


class TopKPublic(BaseModel):
    label: str
    probability: float


class GradCAMPublic(BaseModel):
    method: str
    target: str
    overlay_png_base64: str


class PredictionPublic(BaseModel):
    filename: str
    label: str
    class_index: int
    confidence: float
    topk: list[TopKPublic]
    gradcam: GradCAMPublic | None


class PredictionsPublic(BaseModel):
    checkpoint_id: str
    calibrated: bool = Field(
        default=False, description="the probabilities are of the logits divided by the fitted temperature"
    )
    temperature: float | None = Field(default=None, description="with calibrated: the temperature T applied")
    predictions: list[PredictionPublic]


class HealthPublic(BaseModel):
    status: Literal["ok"]


class ReadyPublic(BaseModel):
    status: Literal["ready"]
    store: Literal["ok"]
    broker: Literal["ok"]
