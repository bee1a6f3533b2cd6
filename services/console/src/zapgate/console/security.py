"""Who is logged in, and the CSRF check every state-changing request passes.

Sessions are Starlette's signed cookies (itsdangerous): `HttpOnly`, `SameSite=Strict`, `Secure`
unless turned off for localhost. Each session carries a random CSRF token, rotated at login;
every POST must echo it (form field `csrf` or header `X-CSRF-Token`, which htmx sends from the
page's `hx-headers`), and a cross-origin `Origin` header is refused outright. Every answer
carries the headers of `SecurityHeaders`.
"""

from __future__ import annotations

import secrets
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from starlette.datastructures import FormData
from starlette.exceptions import HTTPException
from starlette.requests import HTTPConnection, Request

if TYPE_CHECKING:
    from collections.abc import MutableMapping

    from starlette.types import ASGIApp, Receive, Scope, Send

CSRF_FIELD = "csrf"
CSRF_HEADER = "x-csrf-token"
_OPERATOR = "operator"
_CSRF = "csrf"


class LoginRequiredError(Exception):
    """The request needs a logged-in operator; pages answer with a redirect to /login."""


def csrf_token(connection: HTTPConnection) -> str:
    """The session's CSRF token, made on first use."""
    token = connection.session.get(_CSRF)
    if not isinstance(token, str) or not token:
        token = secrets.token_urlsafe(32)
        connection.session[_CSRF] = token
    return token


def operator(connection: HTTPConnection) -> str:
    """The logged-in operator's login; raises LoginRequiredError otherwise."""
    login = connection.session.get(_OPERATOR)
    if not isinstance(login, str) or not login:
        raise LoginRequiredError
    return login


def start_session(request: Request, login: str) -> None:
    """A fresh session for `login`: nothing from before the login survives (fixation)."""
    request.session.clear()
    request.session[_OPERATOR] = login
    request.session[_CSRF] = secrets.token_urlsafe(32)


def end_session(request: Request) -> None:
    request.session.clear()


def check_csrf(request: Request, form: FormData) -> None:
    """Raise 403 unless the request is same-origin and echoes the session's token."""
    origin = request.headers.get("origin")
    if origin and origin != "null":
        parts = urlsplit(origin)
        if parts.netloc != request.url.netloc or parts.scheme != request.url.scheme:
            raise HTTPException(403, "cross-origin request refused")
    expected = request.session.get(_CSRF)
    sent = request.headers.get(CSRF_HEADER) or form.get(CSRF_FIELD)
    if (
        not isinstance(expected, str)
        or not isinstance(sent, str)
        or not secrets.compare_digest(expected.encode(), sent.encode())
    ):
        raise HTTPException(403, "csrf token missing or wrong")


class SecurityHeaders:
    """No framing, no sniffing, only our own scripts and styles (htmx is served by us)."""

    _HEADERS = (
        (b"x-frame-options", b"DENY"),
        (b"x-content-type-options", b"nosniff"),
        (b"referrer-policy", b"same-origin"),
        (
            b"content-security-policy",
            (
                b"default-src 'self'; img-src 'self' data:; style-src 'self'; "
                b"script-src 'self'; frame-ancestors 'none'; form-action 'self'; base-uri 'none'"
            ),
        ),
    )

    def __init__(self, app: ASGIApp) -> None:
        self._app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self._app(scope, receive, send)
            return

        async def send_with_headers(message: MutableMapping[str, Any]) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                headers.extend(self._HEADERS)
                message["headers"] = headers
            await send(message)

        await self._app(scope, receive, send_with_headers)
