"""Response schemas of the HTTP contract (the request schemas are `ml.specs.TrainSpec`/`LRFinderSpec`)."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

JobKind = Literal["lr_finder", "train"]
JobStatus = Literal["queued", "running", "succeeded", "failed", "cancelled"]


class BestEpochPublic(BaseModel):
    epoch: int
    test_acc: float


class JobPublic(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: str
    kind: JobKind
    status: JobStatus
    params: dict[str, Any] = Field(description="the validated request")
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    progress: dict[str, Any] = Field(
        description='{"epoch", "epochs", "step", "steps", "fraction", "updated_at"} (updated_at: when the worker '
        "was at that step; progress is written at most once a second); {} while queued"
    )
    error: str | None
    checkpoint_id: str | None
    attempts: int = Field(description="how many deliveries have started this job")
    cancel_requested: bool
    best: BestEpochPublic | None = Field(
        default=None, description="train jobs that ended: their best epoch (as in the metrics); null before"
    )
    lr: float | None = Field(default=None, description='train jobs that ended: the learning rate used ("auto" resolved)')


class JobsPublic(BaseModel):
    jobs: list[JobPublic]
    total: int


class TrainMetricsPublic(BaseModel):
    job_id: str
    status: JobStatus
    epochs: list[dict[str, Any]] = Field(
        description="one record per epoch: epoch, lr, train_loss, train_acc, test_loss, test_acc, seconds, "
        "images_per_second"
    )
    best: BestEpochPublic | None
    per_class_accuracy: dict[str, float] | None = Field(default=None, description="once the job has finished")
    stop_reason: str | None = Field(default=None, description="completed | target_accuracy | cancelled")


class LRFinderMetricsPublic(BaseModel):
    job_id: str
    status: JobStatus
    lrs: list[float]
    losses: list[float]
    smoothed_losses: list[float]
    suggested_lr: float | None
    suggestions: dict[str, float | None]
    diverged_at_lr: float | None
    stop_reason: str | None = Field(default=None, description="completed | diverged | cancelled")


class ArtifactPublic(BaseModel):
    name: str
    media_type: str
    url: str


class ArtifactsPublic(BaseModel):
    artifacts: list[ArtifactPublic]


class CheckpointPublic(BaseModel):
    model_config = ConfigDict(from_attributes=True, protected_namespaces=())

    id: str
    job_id: str
    model: dict[str, Any]
    dataset: str
    classes: list[str]
    test_acc: float | None
    epoch: int | None
    created_at: datetime


class CheckpointsPublic(BaseModel):
    checkpoints: list[CheckpointPublic]


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
    predictions: list[PredictionPublic]


class HealthPublic(BaseModel):
    status: Literal["ok"]


class ReadyPublic(BaseModel):
    status: Literal["ready"]
    store: Literal["ok"]
    broker: Literal["ok"]
