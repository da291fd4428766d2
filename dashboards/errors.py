"""Errors the dashboard's services raise, and the one place they become HTTP status codes.

Services and data-access functions raise these plain exceptions; only `install_handlers`
turns them into responses (JSON for `/api`, a redirect to the login page for pages). It also maps a value the
database refuses (`sqlalchemy.exc.DataError`) to 400 and refuses URLs holding NUL characters.
"""

from __future__ import annotations

import logging
import secrets
from urllib.parse import unquote_to_bytes

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, RedirectResponse, Response
from sqlalchemy.exc import DataError
from starlette.types import ASGIApp, Receive, Scope, Send

log = logging.getLogger(__name__)


class DashboardError(Exception):
    """Base class: `status` is the HTTP status the API answers with."""

    status = 500

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


class BadRequest(DashboardError):
    status = 400


class Unauthorized(DashboardError):
    status = 401


class Forbidden(DashboardError):
    status = 403


class NotFound(DashboardError):
    status = 404


class Conflict(DashboardError):
    status = 409


class PayloadTooLarge(DashboardError):
    status = 413


class UnsupportedMediaType(DashboardError):
    status = 415


class TooManyRequests(DashboardError):
    """Throttled (failed logins) or over a limit (open event streams); `retry_after_s`, when known, becomes the
    Retry-After header."""

    status = 429

    def __init__(self, detail: str, *, retry_after_s: int | None = None) -> None:
        super().__init__(detail)
        self.retry_after_s = retry_after_s


class Unavailable(DashboardError):
    """A backing service (Kafka, MLflow) is not reachable or not configured."""

    status = 503


async def _handle(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, DashboardError)
    if isinstance(exc, Unauthorized) and not request.url.path.startswith("/api"):
        return RedirectResponse(f"/login?next={request.url.path}", status_code=303)
    headers = {"WWW-Authenticate": "Bearer"} if isinstance(exc, Unauthorized) else None
    if isinstance(exc, TooManyRequests) and exc.retry_after_s is not None:
        headers = {"Retry-After": str(exc.retry_after_s)}
    return JSONResponse({"detail": exc.detail}, status_code=exc.status, headers=headers)


async def _data_error(request: Request, exc: Exception) -> Response:
    """The database refused a value (too long, out of range, NUL): the caller's input, so a 400, not a 500.

    The database's own text stays in the log (it names tables, columns, the server and the SQL); the caller gets
    what was wrong in general and an incident id that finds the log line."""
    incident = secrets.token_hex(4)
    log.warning("%s %s: database refused a value (incident %s): %s", request.method, request.url.path, incident, exc)
    detail = (
        "the database refused a value of this request (too long or out of range for its field); "
        f"incident {incident} in the dashboard's log"
    )
    return JSONResponse({"detail": detail}, status_code=400)


class RefuseNul:
    """ASGI middleware: a URL whose path or query holds a NUL character gets a 400 before any route runs
    (PostgreSQL text cannot hold NUL; without this a path or query value would reach the DB and fail there)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            query = unquote_to_bytes(scope.get("query_string", b""))
            if "\x00" in scope.get("path", "") or b"\x00" in query:
                response = JSONResponse({"detail": "NUL characters are not allowed in URLs"}, status_code=400)
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)


def install_handlers(app: FastAPI) -> None:
    app.add_exception_handler(DashboardError, _handle)
    app.add_exception_handler(DataError, _data_error)
    app.add_middleware(RefuseNul)
