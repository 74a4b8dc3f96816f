"""The outermost layer of every request, before routing, auth and parsing: a request id, a bound on
the body's size, and the answer to an unexpected error.

- Request id: the client's `X-Request-ID` when it is a short plain token, else a new one; it is
  answered in `X-Request-ID`, carried by every log line of the request (`core.logs`) and named in
  the body of an unexpected error, so that a user's report finds the server's log lines.
- Body size: a body larger than its bound gets 413 before a byte of it is parsed, whether or not the
  request carries a valid key: at once when `Content-Length` says so, else the moment the streamed
  bytes pass the bound. JSON bodies (job specs) are bounded by MAX_BODY_BYTES; `/predict`'s multipart
  body, all files together, by MAX_PREDICT_BYTES (each file also by MAX_UPLOAD_BYTES); a dataset
  archive's by MAX_DATASET_BYTES.
- Each request is counted and timed for `GET /metrics` (service.telemetry), by route template.
- An unexpected error (a bug) is logged with its traceback and answered `500 {"detail": ...,
  "request_id": ...}`: never a traceback, a server path or an internal address.
"""

from __future__ import annotations

import json
import logging
import re
import time
import uuid

from fastapi import HTTPException, status
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from core.logs import request_id_var
from service import telemetry

logger = logging.getLogger(__name__)
REQUEST_ID_HEADER = "x-request-id"
_CLIENT_ID = re.compile(r"[A-Za-z0-9._:-]{1,64}")  # anything else could forge log lines


def new_request_id() -> str:
    return uuid.uuid4().hex[:16]


class RequestContext:
    """Pure ASGI middleware (it must see the body before Starlette's request object does)."""

    def __init__(self, app: ASGIApp, *, max_body_bytes: int, max_predict_bytes: int, max_dataset_bytes: int) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes
        self.max_predict_bytes = max_predict_bytes
        self.max_dataset_bytes = max_dataset_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        given = headers.get(REQUEST_ID_HEADER.encode(), b"").decode("latin-1")
        request_id = given if _CLIENT_ID.fullmatch(given) else new_request_id()
        token = request_id_var.set(request_id)
        started, code, began = False, 500, time.perf_counter()

        async def sending(message: Message) -> None:
            nonlocal started, code
            if message["type"] == "http.response.start":
                started, code = True, message["status"]
                message["headers"] = [*message.get("headers", []), (REQUEST_ID_HEADER.encode(), request_id.encode())]
            await send(message)

        try:
            limit, setting = self._limit(scope["method"], scope["path"])
            declared = headers.get(b"content-length", b"")
            if declared.isdigit() and int(declared) > limit:
                await _answer(sending, status.HTTP_413_CONTENT_TOO_LARGE, _message(int(declared), limit, setting))
                return
            await self.app(scope, _counting(receive, limit, setting), sending)
        except Exception:  # a bug: logged whole, answered without internals (paths, hosts, SQL)
            logger.exception("unexpected error on %s %s (request id %s)", scope["method"], scope["path"], request_id)
            if not started:
                detail = f"internal error; the server's log has the details under request id {request_id}"
                await _answer(sending, status.HTTP_500_INTERNAL_SERVER_ERROR, detail, request_id=request_id)
        finally:
            route = getattr(scope.get("route"), "path", "unmatched")  # the template: bounded label values
            telemetry.observe_request(scope["method"], route, code, time.perf_counter() - began)
            request_id_var.reset(token)

    def _limit(self, method: str, path: str) -> tuple[int, str]:
        if path.rstrip("/") == "/predict":
            return self.max_predict_bytes, "MAX_PREDICT_BYTES"
        if method == "POST" and path.rstrip("/") == "/datasets":  # the archive, and its few form fields
            return self.max_dataset_bytes, "MAX_DATASET_BYTES"
        return self.max_body_bytes, "MAX_BODY_BYTES"


def _message(size: int, limit: int, setting: str) -> str:
    return f"request body of {size} bytes or more; at most {limit} bytes ({setting})"


def _counting(receive: Receive, limit: int, setting: str) -> Receive:
    """`receive` that raises 413 (handled like any HTTPException of the route) once the body's
    bytes pass `limit`: a chunked upload is stopped as soon as it is too large."""
    received = 0

    async def receiving() -> Message:
        nonlocal received
        message = await receive()
        if message["type"] == "http.request":
            received += len(message.get("body", b""))
            if received > limit:
                raise HTTPException(status.HTTP_413_CONTENT_TOO_LARGE, _message(received, limit, setting))
        return message

    return receiving


async def _answer(send: Send, code: int, detail: str, **extra: str) -> None:
    body = json.dumps({"detail": detail, **extra}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": code,
            # the client may still be sending: closing says the rest will not be read
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"connection", b"close"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
