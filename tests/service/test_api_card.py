"""GET /checkpoints/{id}/card: the model card, in Markdown, from the store's records of the checkpoint."""

from __future__ import annotations

import json
import re
from typing import Any

from api_support import TestClient, put_job
from sqlalchemy.orm import Session

from core import store
from core.config import Settings
from core.store import ArtifactFile

CLASSES = ["T-shirt/top", "Trouser", "Bag|Case"]  # a pipe: names are escaped in the card's tables
PARAMS = {
    "dataset": {"name": "fashion_mnist", "train_subset": 120, "test_subset": 60},
    "model": {"name": "custom_resnet", "width": 4},
    "epochs": 5,
}
RESULT = {
    "best": {"epoch": 4, "test_acc": 0.8125},
    "last": {"epoch": 5, "test_acc": 0.8},
    "selected_on": "test",
    "test_time_flip": False,
    "per_class_accuracy": {"T-shirt/top": 0.9, "Trouser": 0.95, "Bag|Case": 0.6},
    "stop_reason": "completed",
}


def register(
    settings: Settings,
    session: Session,
    *,
    params: dict[str, Any],
    result: dict[str, Any],
    confusion: bool = True,
    best: dict[str, Any] | None = None,
) -> tuple[str, str, int]:
    """A 1-channel checkpoint of a succeeded job with `params` and `result`, its row saying `best` (the
    result's by default): (checkpoint id, job id, its model's parameter count)."""
    from ml.checkpoints import save_checkpoint
    from ml.models import build_model, count_parameters
    from ml.specs import ModelSpec

    model = build_model(ModelSpec(**params["model"]), in_channels=1, num_classes=len(CLASSES))
    job = put_job(session, status="succeeded", params=params, result=result)
    relative = f"{job.id}/checkpoints/best"
    manifest = {"in_channels": 1, "num_classes": 3, "image_size": 28, "classes": CLASSES, "mean": [0.3], "std": [0.3]}
    save_checkpoint(settings.ARTIFACTS_DIR / relative, model=model, manifest=manifest | {"model": params["model"]})
    if confusion:
        store.add_artifacts(session, job.id, [ArtifactFile("confusion_matrix.png", "image/png", f"{job.id}/cm.png")])
    best = best or result["best"]
    row = store.add_checkpoint(
        session,
        job_id=job.id,
        model=params["model"],
        dataset=params["dataset"]["name"],
        classes=CLASSES,
        test_acc=best["test_acc"],
        epoch=best["epoch"],
        path=relative,
    )
    assert row is not None
    return row.id, job.id, count_parameters(model)


def card(client: TestClient, checkpoint: str) -> list[str]:
    answer = client.get(f"/checkpoints/{checkpoint}/card")
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"] == "text/markdown; charset=utf-8"
    lines: list[str] = answer.text.splitlines()
    return lines


def test_the_card_states_the_facts_of_the_run(client: TestClient, settings: Settings, session: Session) -> None:
    checkpoint, job, parameters = register(settings, session, params=PARAMS, result=RESULT)
    lines = card(client, checkpoint)
    expected = [
        f"# Model card: checkpoint {checkpoint}",
        "- Width: 4",
        f"- Parameters: {parameters:,}",
        "- Input: grayscale (L) images of 28 x 28 px, the shorter side resized to 28 px and centre-cropped",
        "- Classes (3): T-shirt/top, Trouser, Bag\\|Case",
        "- Train images: 120 (a stratified subset)",
        "- Test images: 60 (a stratified subset)",
        "- Best: test accuracy 81.25% at epoch 4, chosen on the test set",
        "- Last: test accuracy 80.00% at epoch 5",
        "| Trouser | 95.00% |",
        "| Bag\\|Case | 60.00% |",
        f"Confusion matrix: [/jobs/{job}/artifacts/confusion_matrix.png](/jobs/{job}/artifacts/confusion_matrix.png)",
        "- Trained on 120 images of these 3 classes at 28 x 28 px: T-shirt/top, Trouser, Bag\\|Case.",
        "- Accuracy was measured on the test set of fashion_mnist only (60 images): images from elsewhere "
        "(other cameras, framing, backgrounds, sizes) may score lower.",
        "- Weakest class: Bag\\|Case (60.00% on the test set).",
    ]
    assert [line for line in expected if line not in lines] == []
    assert any(line.startswith("- Model: custom_resnet, ResNet9") for line in lines)
    assert any("including images of none of them" in line for line in lines)
    optimistic = [line for line in lines if "optimistic" in line]
    assert len(optimistic) == 1 and "(81.25%)" in optimistic[0]
    spec = re.search(r"## Training spec\n\n```json\n(.*?)\n```", "\n".join(lines), re.S)
    assert spec is not None and json.loads(spec.group(1)) == PARAMS


def test_a_best_epoch_chosen_on_validation_is_not_called_optimistic(
    client: TestClient, settings: Settings, session: Session
) -> None:
    params = PARAMS | {"validation_split": 0.2}
    result = RESULT | {"selected_on": "validation", "best": {"epoch": 3, "test_acc": 0.79, "val_acc": 0.83}}
    checkpoint, _, _ = register(settings, session, params=params, result=result, confusion=False)
    lines = card(client, checkpoint)
    assert "- Best: test accuracy 79.00% at epoch 3, chosen on the validation set (validation accuracy 83.00%)" in lines
    assert "- Validation: 20% of the training images held out (validation_split)" in lines
    assert (
        "- Trained on 120 images (20% of them held out for validation) of these 3 classes at 28 x 28 px: "
        in "\n".join(lines)
    )
    assert not any("optimistic" in line or "Confusion matrix" in line for line in lines)


def test_an_uploaded_datasets_counts_are_on_the_card(client: TestClient, settings: Settings, session: Session) -> None:
    dataset = store.create_dataset(session, name="my <clothes>")
    counts = {"train": {"T-shirt/top": 12, "Trouser": 10, "Bag|Case": 8}, "test": {"T-shirt/top": 4, "Trouser": 4}}
    assert store.finish_dataset(session, dataset.id, summary={"counts": counts, "channels": 1})
    params = PARAMS | {"dataset": {"name": "uploaded", "id": dataset.id, "image_size": 48}}
    checkpoint, _, _ = register(settings, session, params=params, result=RESULT)
    lines = card(client, checkpoint)
    expected = [
        "- Name: my \\<clothes\\> (uploaded)",
        "- Train images: 30",
        "- Test images: 8",
        "| class | train images | test images |",
        "| T-shirt/top | 12 | 4 |",
        "| Bag\\|Case | 8 | 0 |",
        "- Trained on 30 images of these 3 classes at 48 x 48 px: T-shirt/top, Trouser, Bag\\|Case.",
    ]
    assert [line for line in expected if line not in lines] == []


def test_a_job_without_a_result_says_what_is_unknown(client: TestClient, settings: Settings, session: Session) -> None:
    params = PARAMS | {"dataset": {"name": "fashion_mnist"}, "test_time_flip": True}
    best = {"epoch": 2, "test_acc": 0.7}
    checkpoint, _, _ = register(settings, session, params=params, result={}, confusion=False, best=best)
    lines = card(client, checkpoint)
    assert "- Train images: the whole train set (its size was not recorded)" in lines
    assert "- Last: not recorded (the job has no result)" in lines
    assert (
        "- Best: test accuracy 70.00% at epoch 2, chosen on the test set "
        "(each image averaged with its mirror image: test-time flip)"
    ) in lines
    assert not any(line.startswith("| Trouser") for line in lines)  # no per-class table without figures


def test_an_unknown_checkpoint_has_no_card(client: TestClient) -> None:
    answer = client.get("/checkpoints/" + "0" * 32 + "/card")
    assert answer.status_code == 404 and "no checkpoint with id" in answer.json()["detail"]
