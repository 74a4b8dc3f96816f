"""Typed dependencies shared by the routers: the settings, the store session and the API-key check."""

from __future__ import annotations

import hmac
from collections.abc import Iterator
from typing import Annotated

from fastapi import Depends, HTTPException, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.orm import Session

from core.config import Settings, get_settings
from core.db import session_for


async def settings_dependency() -> Settings:
    """get_settings as a dependency: async, so FastAPI calls it on the event loop (a sync one costs
    each request a hop to the threadpool and back)."""
    return get_settings()


SettingsDep = Annotated[Settings, Depends(settings_dependency)]
bearer = HTTPBearer(auto_error=False, description="`Authorization: Bearer <API_KEY>` when API_KEY is set")


def get_session(settings: SettingsDep) -> Iterator[Session]:
    with session_for(settings.DATABASE_URL) as session:
        yield session


SessionDep = Annotated[Session, Depends(get_session)]


async def require_api_key(
    settings: SettingsDep, credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]
) -> None:
    """401 unless the request carries `Authorization: Bearer <API_KEY>` (when API_KEY is set).
    Async without awaiting: a comparison, run on the event loop rather than in the threadpool."""
    if settings.API_KEY is None:
        return
    if credentials is None or credentials.scheme.lower() != "bearer":
        detail = "missing API key: send the header 'Authorization: Bearer <API_KEY>'"
    elif hmac.compare_digest(credentials.credentials.encode(), settings.API_KEY.encode()):
        return
    else:
        detail = "wrong API key in 'Authorization: Bearer <API_KEY>'"
    raise HTTPException(status.HTTP_401_UNAUTHORIZED, detail, headers={"WWW-Authenticate": "Bearer"})
