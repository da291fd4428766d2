"""Errors the dashboard's services raise, and the one place they become HTTP status codes.

Services and data-access functions raise these plain exceptions; only `install_handlers`
turns them into responses (JSON for `/api`, a redirect to the login page for pages).
"""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, RedirectResponse, Response


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


class Unavailable(DashboardError):
    """A backing service (Kafka, MLflow) is not reachable or not configured."""

    status = 503


async def _handle(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, DashboardError)
    if isinstance(exc, Unauthorized) and not request.url.path.startswith("/api"):
        return RedirectResponse(f"/login?next={request.url.path}", status_code=303)
    headers = {"WWW-Authenticate": "Bearer"} if isinstance(exc, Unauthorized) else None
    return JSONResponse({"detail": exc.detail}, status_code=exc.status, headers=headers)


def install_handlers(app: FastAPI) -> None:
    app.add_exception_handler(DashboardError, _handle)
