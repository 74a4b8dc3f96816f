"""What can be trained: the models with their options and presets, and the datasets with where
they live under DATA_DIR and whether they are there (files are checked, never decoded)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from annotated_types import Ge, Le
from fastapi import APIRouter
from pydantic import BaseModel, Field

from core import store
from ml.presets import PRESETS
from ml.specs import MODEL_INFO, UPLOADS_FOLDER, ModelSpec
from service.deps import SessionDep, SettingsDep
from service.routers.datasets import UploadedDatasetPublic

router = APIRouter(tags=["catalogue"])

# ml.specs.MODEL_INFO, counted at width 64, 3 input channels, 10 classes (tests/ml/test_models.py)
MODELS: dict[str, dict[str, Any]] = {
    name: {"description": info["description"], "parameters_at_width_64": info["parameters"]}
    for name, info in MODEL_INFO.items()
}

CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")


class ModelPublic(BaseModel):
    name: str
    description: str
    parameters_at_width_64: int = Field(description="with 3 input channels and 10 classes")
    options: dict[str, Any]


class PresetFigurePublic(BaseModel):
    test_acc: float = Field(description="a fraction, 0..1")
    status: Literal["measured", "target"] = Field(
        description="measured by `command` (bench/README.md has the runs), or a target: published, or not yet "
        "measured since the recipe changed"
    )
    of: str = Field(description="which epoch and set the figure is of, and over how many seeds")
    command: str = Field(description="what measures it")


class PresetPublic(BaseModel):
    name: str = Field(description="also examples/<name>.json")
    description: str
    figure: PresetFigurePublic = Field(description="the accuracy the recipe reaches, and what that figure is")
    spec: dict[str, Any] = Field(description="a POST /jobs/train body (TrainSpec); omitted fields take their defaults")


class ModelsPublic(BaseModel):
    models: list[ModelPublic]
    presets: list[PresetPublic] = Field(description="documented training specs")


class DatasetPublic(BaseModel):
    name: str
    description: str
    layout: str = Field(description="where its files live under DATA_DIR")
    present: bool = Field(description="whether its files are on disk now (else downloaded on first use)")
    classes: list[str] | None
    folders: list[str] | None = Field(default=None, description="image_folder: usable folders under DATA_DIR")


class DatasetsPublic(BaseModel):
    datasets: list[DatasetPublic]
    uploaded: list[UploadedDatasetPublic] = Field(
        default_factory=list, description='datasets sent to POST /datasets, newest first: {"name": "uploaded", "id"}'
    )


@router.get("/models")
def list_models() -> ModelsPublic:
    width = ModelSpec.model_fields["width"]
    low = next(m.ge for m in width.metadata if isinstance(m, Ge))
    high = next(m.le for m in width.metadata if isinstance(m, Le))
    options = {"width": {"default": width.default, "min": low, "max": high, "description": width.description}}
    models = [ModelPublic(name=name, options=options, **info) for name, info in MODELS.items()]
    return ModelsPublic(models=models, presets=[PresetPublic.model_validate(preset) for preset in PRESETS])


@router.get("/datasets")
def list_datasets(settings: SettingsDep, session: SessionDep) -> DatasetsPublic:
    from ml import data, downloads  # numpy and Pillow only: its constants are the one truth about file layouts

    data_dir = settings.DATA_DIR
    cifar = data_dir / downloads.CIFAR10_FOLDER
    cifar_files = [*data.CIFAR10_TRAIN_BATCHES, "test_batch", "batches.meta"]
    fmnist_dirs = [data_dir / data.FMNIST_TORCHVISION_DIR, data.FMNIST_SYSTEM_DIR]
    fmnist_present = any(
        all((folder / f"{name}.gz").is_file() or (folder / name).is_file() for name in data.FMNIST_FILES)
        for folder in fmnist_dirs
    )
    folders = _image_folders(data_dir)
    uploaded = store.list_uploaded_datasets(session)
    return DatasetsPublic(
        datasets=[
            DatasetPublic(
                name="cifar10",
                description="CIFAR-10: 50,000 + 10,000 colour images, 32x32, 10 classes",
                layout=f"{downloads.CIFAR10_FOLDER}/ (the CIFAR-10 python batches)",
                present=all((cifar / name).is_file() for name in cifar_files),
                classes=list(CIFAR10_CLASSES),
            ),
            DatasetPublic(
                name="fashion_mnist",
                description="Fashion-MNIST: 60,000 + 10,000 greyscale images, 28x28, 10 classes",
                layout=f"{data.FMNIST_TORCHVISION_DIR}/*-ubyte.gz (or {data.FMNIST_SYSTEM_DIR}/)",
                present=fmnist_present,
                classes=list(data.FMNIST_CLASSES),
            ),
            DatasetPublic(
                name="image_folder",
                description='your images: {"name": "image_folder", "path": "<folder>", "image_size": 32}',
                layout="<path>/train/<class>/* and <path>/test/<class>/*",
                present=bool(folders),
                classes=None,
                folders=folders,
            ),
            DatasetPublic(
                name="uploaded",
                description='sent to POST /datasets: {"name": "uploaded", "id": "<its id>", "image_size": 64}',
                layout=f"{UPLOADS_FOLDER}/<id>/train/<class>/* and test/<class>/*, written by the import",
                present=bool(uploaded),
                classes=None,
            ),
        ],
        uploaded=[UploadedDatasetPublic.of(dataset) for dataset in uploaded],
    )


def _image_folders(data_dir: Path) -> list[str]:
    """Folders directly under DATA_DIR that hold train/ and test/."""
    if not data_dir.is_dir():
        return []
    return sorted(
        child.name
        for child in data_dir.iterdir()
        if not child.name.startswith(".") and (child / "train").is_dir() and (child / "test").is_dir()
    )
