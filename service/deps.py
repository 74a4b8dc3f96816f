"""Typed dependencies shared by the routers: the settings, the store session and the API-key check."""

from __future__ import annotations

import hmac
import math
import time
from collections import OrderedDict, deque
from collections.abc import Iterator
from typing import Annotated

from fastapi import Depends, HTTPException, Query, Request, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.orm import Session

from core.config import Settings, get_settings
from core.db import session_for


async def settings_dependency() -> Settings:
    """get_settings as a dependency: async, so FastAPI calls it on the event loop (a sync one costs
    each request a hop to the threadpool and back)."""
    return get_settings()


SettingsDep = Annotated[Settings, Depends(settings_dependency)]

MAX_PAGE = 500  # items a page; a dashboard shows 50
MAX_OFFSET = 1_000_000  # items skipped; past a store's reach, and far inside a 64-bit integer
Limit = Annotated[int, Query(ge=1, le=MAX_PAGE, description=f"items a page (1-{MAX_PAGE})")]
Offset = Annotated[int, Query(ge=0, le=MAX_OFFSET, description=f"items to skip (0-{MAX_OFFSET:,})")]
bearer = HTTPBearer(auto_error=False, description="`Authorization: Bearer <API_KEY>` when API_KEY is set")


def get_session(settings: SettingsDep) -> Iterator[Session]:
    with session_for(settings.DATABASE_URL) as session:
        yield session


SessionDep = Annotated[Session, Depends(get_session)]


class FailedAuths:
    """Wrong keys per client address over the last minute, for the throttle: a client past
    AUTH_FAILURES_PER_MINUTE gets 429 until its oldest failure is a minute old. A missing key is no
    guess and is not counted (a dashboard asks for the key after its first 401s). Bounded: at most
    `clients` addresses are remembered (the least recently failing are forgotten first). One per app
    (`app.state.failed_auths`)."""

    WINDOW = 60.0  # seconds

    def __init__(self, *, clients: int = 10_000) -> None:
        self.clients = clients
        self.failures: OrderedDict[str, deque[float]] = OrderedDict()

    def retry_after(self, client: str, allowed: int, *, now: float | None = None) -> int:
        """Seconds `client` must wait before trying again (0: it may try now)."""
        now = time.monotonic() if now is None else now
        times = self.failures.get(client)
        if times is None:
            return 0
        while times and times[0] <= now - self.WINDOW:
            times.popleft()
        if len(times) < allowed:
            return 0
        return max(1, math.ceil(times[0] + self.WINDOW - now))

    def add(self, client: str, *, now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        self.failures.setdefault(client, deque()).append(now)
        self.failures.move_to_end(client)
        while len(self.failures) > self.clients:
            self.failures.popitem(last=False)


async def require_api_key(
    request: Request,
    settings: SettingsDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
) -> None:
    """401 unless the request carries `Authorization: Bearer <API_KEY>` (when API_KEY is set); 429 with
    Retry-After once its client sent AUTH_FAILURES_PER_MINUTE wrong keys in a minute, right key or not.
    Async without awaiting: a comparison, run on the event loop rather than in the threadpool."""
    if settings.API_KEY is None:
        return
    client = request.client.host if request.client else "-"
    failed_auths: FailedAuths = request.app.state.failed_auths
    wait = failed_auths.retry_after(client, settings.AUTH_FAILURES_PER_MINUTE)
    if wait:
        raise HTTPException(
            status.HTTP_429_TOO_MANY_REQUESTS,
            f"too many requests with a wrong or missing API key from this client; try again in {wait} s",
            headers={"Retry-After": str(wait)},
        )
    if credentials is None or credentials.scheme.lower() != "bearer":
        detail = "missing API key: send the header 'Authorization: Bearer <API_KEY>'"
    elif hmac.compare_digest(credentials.credentials.encode(), settings.API_KEY.encode()):
        return
    else:
        detail = "wrong API key in 'Authorization: Bearer <API_KEY>'"
        failed_auths.add(client)
    raise HTTPException(status.HTTP_401_UNAUTHORIZED, detail, headers={"WWW-Authenticate": "Bearer"})
