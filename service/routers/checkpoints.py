"""Checkpoints: the best model of each train job that got through at least one epoch."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, HTTPException, Query, Response, status
from fastapi.responses import FileResponse

from core import store
from service import cards, exports
from service.admission import invalid
from service.deps import Limit, Offset, SessionDep, SettingsDep
from service.errors import Responses
from service.exports import ExportFormat
from service.predictions import CheckpointNotFound, UnusableCheckpoint
from service.schemas import CheckpointPublic, CheckpointsPublic

router = APIRouter(prefix="/checkpoints", tags=["checkpoints"])


@router.get("")
def list_checkpoints(
    session: SessionDep,
    limit: Limit = 50,
    offset: Offset = 0,
) -> CheckpointsPublic:
    """Checkpoints, newest first, a page at a time (as /jobs), with how many there are in all."""
    checkpoints = store.list_checkpoints(session, limit=limit, offset=offset)
    return CheckpointsPublic(
        checkpoints=[CheckpointPublic.model_validate(c) for c in checkpoints], total=store.count_checkpoints(session)
    )


@router.get("/{checkpoint_id}", responses={404: {"description": "no checkpoint with this id"}})
def get_checkpoint(checkpoint_id: str, session: SessionDep) -> CheckpointPublic:
    checkpoint = store.get_checkpoint(session, checkpoint_id)
    if checkpoint is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no checkpoint with id {checkpoint_id!r}")
    return CheckpointPublic.model_validate(checkpoint)


EXPORT_RESPONSES: Responses = {
    200: {"description": "the model file", "content": {"application/octet-stream": {}}},
    404: {"description": "no checkpoint with this id, or its files are gone"},
    422: {"description": "a format other than onnx or torchscript, or a checkpoint whose files cannot be loaded"},
}


@router.get("/{checkpoint_id}/export", response_class=FileResponse, responses=EXPORT_RESPONSES)
async def export_checkpoint(
    checkpoint_id: str,
    settings: SettingsDep,
    fmt: Annotated[
        ExportFormat, Query(alias="format", description="onnx (onnxruntime) or torchscript (torch.jit.load)")
    ] = "onnx",
) -> FileResponse:
    """The model as one file that runs without lrcam: input `input`, float32 N x C x H x W normalized
    images; output `logits`; classes, mean, std and image size inside it. Written on the first request
    and kept next to the checkpoint."""
    try:
        found = await exports.find(settings.DATABASE_URL, checkpoint_id)
        folder = found.folder(settings.ARTIFACTS_DIR)
    except CheckpointNotFound as exc:
        raise HTTPException(status.HTTP_404_NOT_FOUND, str(exc)) from None
    try:
        path = await exports.export_file(found, folder, fmt)
    except UnusableCheckpoint as exc:
        raise invalid(("path", "checkpoint_id"), str(exc), checkpoint_id) from None
    return FileResponse(path, media_type="application/octet-stream", filename=f"{found.id}{path.suffix}")


@router.get(
    "/{checkpoint_id}/card",
    response_class=Response,
    responses={
        200: {"description": "the model card", "content": {"text/markdown": {}}},
        404: {"description": "no checkpoint with this id"},
    },
)
def checkpoint_card(checkpoint_id: str, session: SessionDep, settings: SettingsDep) -> Response:
    """The model card in Markdown: the model, its data, its training spec, its accuracy (overall and
    per class) and what it is not for, from the store's records."""
    checkpoint = store.get_checkpoint(session, checkpoint_id)
    if checkpoint is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no checkpoint with id {checkpoint_id!r}")
    return Response(cards.model_card(session, checkpoint, settings.ARTIFACTS_DIR), media_type="text/markdown")
