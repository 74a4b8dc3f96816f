"""/openapi.json is something a client generator can use: datamodel-code-generator turns it into
pydantic models whose job, params, progress and metrics types are typed (no Any, no bare dict), and
those models parse what the API really answers."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
import types
import typing
from pathlib import Path

import pytest
from api_support import LR_FINDER_PARAMS, TRAIN_PARAMS
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session

from core import store

# Free-form by design: an albumentations transform's arguments, a preset's partial spec, a model's options.
FREE_FORM = {
    "TrainSpec.augmentation",
    "LRFinderSpec.augmentation",
    "AuditSpec.augmentation",
    "PresetPublic.spec",
    "ModelPublic.options",
}
TYPED_ROOTS = (
    "TrainJobPublic",
    "LRFinderJobPublic",
    "JobsPublic",
    "TrainMetricsPublic",
    "LRFinderMetricsPublic",
    "CheckpointsPublic",
    "PredictionsPublic",
    "ModelsPublic",
)


@pytest.fixture
def generated(client: TestClient, tmp_path: Path) -> types.ModuleType:
    """The models datamodel-code-generator writes from the running app's /openapi.json."""
    spec = tmp_path / "openapi.json"
    spec.write_text(json.dumps(client.get("/openapi.json").json()))
    out = tmp_path / "lrcam_models.py"
    command = [
        sys.executable,
        "-m",
        "datamodel_code_generator",
        "--input",
        str(spec),
        "--input-file-type",
        "openapi",
        "--output",
        str(out),
        "--output-model-type",
        "pydantic_v2.BaseModel",
        "--disable-timestamp",
        "--formatters",
        "isort",
    ]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    module_spec = importlib.util.spec_from_file_location("lrcam_models", out)
    assert module_spec is not None and module_spec.loader is not None
    module = importlib.util.module_from_spec(module_spec)
    sys.modules["lrcam_models"] = module  # pydantic resolves the models' forward references through it
    module_spec.loader.exec_module(module)
    yield module
    sys.modules.pop("lrcam_models", None)


def untyped_fields(model: type, seen: set[type] | None = None) -> list[str]:
    """`Model.field` for every field reachable from `model` whose type is Any or a dict of Any."""
    seen = set() if seen is None else seen
    if model in seen or not hasattr(model, "model_fields"):
        return []
    seen.add(model)
    found = []
    for name, field in model.model_fields.items():
        where = f"{model.__name__}.{name}"
        for part in flatten(field.annotation):
            if part is typing.Any or (part is dict and where not in FREE_FORM):
                found.append(where)
            elif where not in FREE_FORM:
                found += untyped_fields(part, seen)
    return sorted(set(found))


def flatten(annotation: object) -> list[object]:
    """An annotation's leaves: Union, list, dict and Annotated taken apart (a dict counts as `dict`
    unless its values are typed)."""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is dict:
        return [dict] if args[1] is typing.Any or not args else [*flatten(args[1])]
    if origin is typing.Annotated:
        return flatten(args[0])
    if args:
        return [leaf for arg in args for leaf in flatten(arg)]
    root = getattr(annotation, "model_fields", {}).get("root")  # a RootModel: its type
    return flatten(root.annotation) if root is not None else [annotation]


def test_generated_models_type_params_progress_and_metrics(generated: types.ModuleType) -> None:
    hints = {name: getattr(generated, name).model_fields for name in TYPED_ROOTS}
    assert hints["TrainJobPublic"]["params"].annotation is generated.TrainSpec
    assert hints["LRFinderJobPublic"]["params"].annotation is generated.LRFinderSpec
    assert hints["TrainJobPublic"]["progress"].annotation is generated.ProgressPublic
    assert hints["TrainMetricsPublic"]["epochs"].annotation == list[generated.EpochPublic]
    assert generated.EpochPublic.model_fields["test_acc"].annotation is float
    assert hints["LRFinderMetricsPublic"]["suggestions"].annotation is generated.SuggestionsPublic
    assert generated.TrainSpec.model_fields["epochs"].description  # descriptions come through
    for root in TYPED_ROOTS:
        assert untyped_fields(getattr(generated, root)) == [], root


def test_generated_models_parse_real_responses(
    client: TestClient, session: Session, generated: types.ModuleType
) -> None:
    train = client.post("/jobs/train", json=TRAIN_PARAMS)
    lr_finder = client.post("/jobs/lr-finder", json=LR_FINDER_PARAMS)
    assert train.headers["location"] == f"/jobs/{train.json()['id']}"
    assert client.get(lr_finder.headers["location"]).json() == lr_finder.json()

    job = generated.TrainJobPublic.model_validate(train.json())
    assert job.params.epochs == 50 and job.params.model.width == 4 and job.progress.epoch is None
    finder = generated.LRFinderJobPublic.model_validate(lr_finder.json())
    assert finder.params.num_iter == 10
    listed = generated.JobsPublic.model_validate(client.get("/jobs").json())
    assert [type(j.root).__name__ for j in listed.jobs] == ["LRFinderJobPublic", "TrainJobPublic"]

    job_id, finder_id = job.id, finder.id
    for found in (store.claim_job(session, i, worker="w", lease_seconds=60) for i in (job_id, finder_id)):
        assert found is not None
    store.heartbeat(
        session,
        job_id,
        {
            "epoch": 1,
            "epochs": 50,
            "step": 3,
            "steps": 4,
            "fraction": 0.015,
            "updated_at": "2026-11-26T10:00:03.120000+00:00",
        },
    )
    store.add_epoch(
        session,
        job_id,
        {
            "epoch": 1,
            "lr": 0.05,
            "train_loss": 1.5,
            "train_acc": 0.4,
            "test_loss": 1.4,
            "test_acc": 0.5,
            "seconds": 1.25,
            "images_per_second": 80.0,
        },
    )
    progress = generated.TrainJobPublic.model_validate(client.get(f"/jobs/{job_id}").json()).progress
    assert progress.epoch == 1 and progress.fraction == 0.015
    metrics = generated.TrainMetricsPublic.model_validate(client.get(f"/jobs/{job_id}/metrics").json())
    assert metrics.epochs[0].test_acc == 0.5 and metrics.best.epoch == 1

    result = {
        "lrs": [1e-4, 1e-3],
        "losses": [2.3, 2.2],
        "smoothed_losses": [2.3, 2.25],
        "suggested_lr": 1e-3,
        "suggestions": {"steepest": 1e-3, "valley": None, "minimum_div10": 1e-4},
        "diverged_at_lr": None,
        "stop_reason": "completed",
    }
    store.finish_job(session, finder_id, status="succeeded", result=result)
    curve = generated.LRFinderMetricsPublic.model_validate(client.get(f"/jobs/{finder_id}/metrics").json())
    assert curve.suggestions.steepest == 1e-3 and curve.suggestions.valley is None and curve.lrs == [1e-4, 1e-3]


def test_every_example_in_the_document_parses_with_the_generated_models(
    client: TestClient, generated: types.ModuleType
) -> None:
    checked = []
    for name, schema in client.get("/openapi.json").json()["components"]["schemas"].items():
        for example in schema.get("examples", []):
            getattr(generated, name).model_validate(example)  # raises on an example its own schema refuses
            checked.append(name)
    assert {
        "TrainSpec",
        "LRFinderSpec",
        "TrainJobPublic",
        "LRFinderJobPublic",
        "ProgressPublic",
        "EpochPublic",
        "TrainMetricsPublic",
        "LRFinderMetricsPublic",
    } <= set(checked)
