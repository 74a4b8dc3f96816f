"""Checkpoints: the best model of each train job that got through at least one epoch."""

from __future__ import annotations

from fastapi import APIRouter, HTTPException, status

from core import store
from service.deps import Limit, Offset, SessionDep
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
