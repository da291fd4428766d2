"""Log in and out (session cookie + CSRF token, a `user_sessions` row per login) and ask who you are."""

from __future__ import annotations

import logging

from fastapi import APIRouter, Request, Response
from sqlalchemy.orm import Session

from dashboards import crud
from dashboards.api_models import LoginIn, SessionPublic, error_responses
from dashboards.auth import SESSION_COOKIE, Principal
from dashboards.deps import CurrentUser, ServicesDep, SessionDep
from dashboards.errors import TooManyRequests, Unauthorized
from dashboards.services import Services
from fleet.db.models import User

router = APIRouter(prefix="/auth", tags=["auth"])
log = logging.getLogger(__name__)


@router.post("/login", response_model=SessionPublic, responses=error_responses(429))
def login(
    body: LoginIn, request: Request, response: Response, session: SessionDep, services: ServicesDep
) -> SessionPublic:
    """Check the password and set the session cookie; the answer carries the CSRF token.

    After too many failed logins for one user name or from one client (settings `login_*`) it answers 429
    with Retry-After until the window has passed."""
    client = request.client.host if request.client else None
    user = authenticate(session, services=services, username=body.username, password=body.password, client=client)
    if user is None:
        raise Unauthorized("wrong user name or password")
    csrf = open_session(response, session=session, services=services, user=user)
    return SessionPublic(username=user.username, role=user.role, csrf_token=csrf)


def authenticate(
    session: Session, *, services: Services, username: str, password: str, client: str | None
) -> User | None:
    """The user if the password is right; None if not; TooManyRequests while this user name or client is locked.

    Shared by the JSON login and the HTML form login, so both count toward the same limits."""
    throttle = services.login_throttle
    attempt = throttle.begin(username, client)  # counted as a failure from here until it succeeds
    if attempt.retry_after_s is not None:
        wait = attempt.retry_after_s
        log.warning("login for %r from %s refused: too many failures (retry in %d s)", username, client, wait)
        raise TooManyRequests(f"too many failed logins: try again in {wait} s", retry_after_s=wait)
    user = crud.authenticate(session, username=username, password=password)
    if user is None:
        log.warning("failed login for %r from %s", username, client)
        return None
    throttle.succeeded(username, client, attempt.stamp)
    return user


def open_session(response: Response, *, session: Session, services: Services, user: User) -> str:
    """Store a new session, set its signed cookie on `response`, audit the login; returns the CSRF token.

    Shared by the JSON login and the HTML form login, so both issue the same cookie.
    """
    issued = services.codec.issue(user.id)
    crud.open_user_session(
        session, user_id=user.id, session_id=issued.session_id, max_age_s=services.config.session_max_age_s
    )
    response.set_cookie(
        SESSION_COOKIE,
        issued.cookie,
        max_age=services.config.session_max_age_s,
        httponly=True,
        samesite="lax",
        secure=services.settings.env == "production",
    )
    principal = Principal(name=user.username, role=user.role, via="session")
    crud.audit(session, principal=principal, action="auth.login", target=f"user:{user.username}", reason=None)
    session.commit()
    return issued.csrf


@router.post("/logout", status_code=204)
def logout(user: CurrentUser, session: SessionDep) -> Response:
    """Revoke this session on the server (a copy of the cookie stops working too) and delete the cookie.

    Event streams opened with the session end at their next event. A bearer token is not revoked here (an admin
    revokes tokens)."""
    if user.session_id is not None and crud.revoke_user_session(session, session_id=user.session_id):
        crud.audit(session, principal=user, action="auth.logout", target=f"user:{user.name}", reason=None)
        session.commit()
    response = Response(status_code=204)
    response.delete_cookie(SESSION_COOKIE)
    return response


@router.get("/me", response_model=SessionPublic)
def me(user: CurrentUser) -> SessionPublic:
    return SessionPublic(username=user.name, role=user.role or "robot", csrf_token=user.csrf)
