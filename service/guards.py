"""Who may talk to the API at all, checked before routing (pure ASGI middleware), and the headers that
keep its pages from being framed or fed foreign scripts.

- Without API_KEY the API is meant for this machine alone, as Jupyter's server is without a token:
  a client that is not on loopback gets 403, and so does a request whose `Host` is not a loopback
  name (localhost, 127.0.0.1, [::1]) or one of ALLOWED_HOSTS: a web page whose own name an attacker
  points at 127.0.0.1 (DNS rebinding) is refused even though the browser runs on this machine.
- A state-changing request (POST, PUT, PATCH, DELETE) that a browser sends from another site (its
  `Origin` is neither the server's own nor one of CORS_ORIGINS) gets 403, key or not: a page
  elsewhere cannot cancel jobs or start them through a user's browser. Clients that are not
  browsers (curl, the CLI) send no `Origin` and are not concerned.
- Every answer carries `X-Content-Type-Options: nosniff` and a Referrer-Policy; pages (HTML) also a
  Content-Security-Policy that runs scripts from this server only and forbids framing.
"""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Callable, Sequence
from urllib.parse import urlsplit

from fastapi import status
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from core.config import Settings

UNSAFE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
PAGE_POLICY = "; ".join(
    [
        "default-src 'self'",
        "script-src 'self'",
        "style-src 'self' 'unsafe-inline'",  # uPlot and Swagger UI set element styles
        "img-src 'self' data: blob:",  # GradCAM overlays arrive as data: URLs, artifacts as blob: URLs
        "connect-src 'self'",
        "object-src 'none'",
        "base-uri 'none'",
        "form-action 'self'",
        "frame-ancestors 'none'",
    ]
)
ALWAYS = [
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"x-frame-options", b"DENY"),
]


def is_loopback(host: str) -> bool:
    """A loopback name or address: localhost, 127.0.0.0/8, ::1."""
    if host.lower() in ("localhost", "localhost."):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def host_name(header: str) -> str | None:
    """The name in a `Host` header, without its port ("[::1]:8000" -> "::1"); None when unparsable."""
    try:
        return urlsplit(f"//{header}").hostname
    except ValueError:
        return None


def matches(name: str, patterns: Sequence[str]) -> bool:
    """`name` is one of `patterns`, or under one of its `*.domain` wildcards."""
    name = name.lower().rstrip(".")
    return any(name == p or (p.startswith("*.") and name.endswith(p[1:])) for p in patterns)


class Guard:
    """The loopback-only rule of a keyless server and the same-origin rule for state changes, on the
    settings of the moment (`settings()`, cached by the caller)."""

    def __init__(self, app: ASGIApp, *, settings: Callable[[], Settings]) -> None:
        self.app = app
        self.settings = settings

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        refusal = self.refusal(scope)
        if refusal is None:
            await self.app(scope, receive, send)
        else:
            await _refuse(send, refusal)

    def refusal(self, scope: Scope) -> str | None:
        """Why this request is refused, or None."""
        settings = self.settings()
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
        host = host_name(headers.get("host", "")) or ""
        if settings.API_KEY is None:
            client = (scope.get("client") or ("", 0))[0]
            if not is_loopback(client):
                return (
                    "this server has no API_KEY, so it answers this machine only; set API_KEY "
                    "(e.g. openssl rand -hex 32) to serve other machines"
                )
            if not is_loopback(host) and not matches(host, [h.lower() for h in settings.ALLOWED_HOSTS]):
                return (
                    f"Host {host or headers.get('host', '')!r} is not a name of this server: without API_KEY it "
                    "answers to localhost, 127.0.0.1 and [::1] only; add the name to ALLOWED_HOSTS"
                )
        origin = headers.get("origin")
        if (
            scope["method"] in UNSAFE_METHODS
            and origin is not None
            and not same_origin(origin, headers, scope, settings)
        ):
            return (
                f"cross-site request refused: Origin {origin!r} is not this server's; "
                "add it to CORS_ORIGINS to allow its pages to change jobs here"
            )
        return None


def same_origin(origin: str, headers: dict[str, str], scope: Scope, settings: Settings) -> bool:
    """`origin` is the server's own (the scheme and Host the request came with) or one of CORS_ORIGINS."""
    origin = origin.rstrip("/").lower()
    own = f"{scope.get('scheme', 'http')}://{headers.get('host', '')}".lower()
    return origin == own or origin in {o.rstrip("/").lower() for o in settings.CORS_ORIGINS}


async def _refuse(send: Send, detail: str) -> None:
    body = json.dumps({"detail": detail}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status.HTTP_403_FORBIDDEN,
            "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": body})


class SecurityHeaders:
    """Adds the headers above to every answer; the page policy to HTML answers only."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def sending(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                names = {name.lower() for name, _ in headers}
                headers += [(name, value) for name, value in ALWAYS if name not in names]
                content_type = dict(headers).get(b"content-type", b"")
                if content_type.startswith(b"text/html"):
                    headers.append((b"content-security-policy", PAGE_POLICY.encode()))
                message["headers"] = headers
            await send(message)

        await self.app(scope, receive, sending)
