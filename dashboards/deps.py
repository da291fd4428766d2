"""Shared request dependencies as `Annotated` aliases: services, DB session, current user, roles.

`CurrentUser` authenticates (bearer token, else session cookie; cookie requests that mutate must
carry the session's CSRF token) and raises 401 when nobody is logged in. A cookie counts only while its
`user_sessions` row is not revoked and its user not disabled; `access_ended` asks that again for long-lived
requests (the event stream), which must not outlive a logout, a disabled user or a revoked token.
`require_role(r)` builds a dependency that also raises 403 below role `r`; `ViewerUser`, `ReviewerUser`, `OperatorUser`,
`AdminUser` are the aliases routes use. Robot tokens hold no role: `ModelReader` also lets in tokens with
the `models:read` scope, and `RobotProducer` admits only a `robot:produce` token bound to the route's `robot_id`.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

from fastapi import Depends, Request
from sqlalchemy.orm import Session

from dashboards.auth import (
    CSRF_HEADER,
    ROBOT_PRODUCE,
    SESSION_COOKIE,
    Principal,
    check_role,
    csrf_matches,
    session_key,
    token_role,
)
from dashboards.errors import Forbidden, Unauthorized
from dashboards.services import Services
from fleet.db import ApiToken, User, UserSession
from fleet.db.tokens import MODELS_READ, find_token

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def get_services(request: Request) -> Services:
    return request.app.state.services  # type: ignore[no-any-return]


ServicesDep = Annotated[Services, Depends(get_services)]


def get_db(services: ServicesDep) -> Iterator[Session]:
    with services.sessions() as session:
        yield session


SessionDep = Annotated[Session, Depends(get_db)]


def _from_token(session: Session, token: str) -> Principal:
    row = find_token(session, plaintext=token)
    if row is None:
        raise Unauthorized("invalid or revoked API token")
    scopes = frozenset(row.scopes.split())
    return Principal(
        name=row.name, role=token_role(scopes), via="token", scopes=scopes, robot_id=row.robot_id, token_id=row.id
    )


def _from_cookie(services: Services, session: Session, cookie: str) -> tuple[Principal, dict[str, Any]] | None:
    data = services.codec.read(cookie)
    if data is None:
        return None
    row = session.get(UserSession, session_key(data["sid"]))
    if row is None or row.revoked_at is not None or row.user_id != data["uid"]:
        return None  # logged out, revoked by an admin, or never stored (a cookie from before sessions were)
    user = session.get(User, row.user_id)
    if user is None or user.disabled:
        return None
    principal = Principal(name=user.username, role=user.role, via="session", csrf=data["csrf"], session_id=row.id)
    return principal, data


def access_ended(session: Session, principal: Principal, *, session_max_age_s: int) -> str | None:
    """Why `principal`, authenticated when its request began, may no longer act; None while it still may.

    Requests that last (the event stream) ask this before each event: a logout, an admin disabling or changing the
    user, a revoked token or the session's lifetime running out ends them."""
    if principal.via == "token":
        token = session.get(ApiToken, principal.token_id) if principal.token_id is not None else None
        return "the API token was revoked" if token is None or token.revoked_at is not None else None
    row = session.get(UserSession, principal.session_id) if principal.session_id is not None else None
    user = session.get(User, row.user_id) if row is not None else None
    if user is not None and user.disabled:  # asked first: disabling also revokes, but this says more
        return "this user was disabled"
    if row is None or user is None or row.revoked_at is not None:
        return "the session was ended (logged out, or an admin changed this user)"
    created = row.created_at if row.created_at.tzinfo else row.created_at.replace(tzinfo=UTC)  # SQLite: naive UTC
    if datetime.now(UTC) - created > timedelta(seconds=session_max_age_s):
        return "the session expired"
    return None


def optional_principal(request: Request, services: ServicesDep, session: SessionDep) -> Principal | None:
    """The caller if authenticated, else None (pages use this to redirect to the login page)."""
    header = request.headers.get("Authorization", "")
    if header:
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token:
            raise Unauthorized("Authorization header must be 'Bearer <token>'")
        return _from_token(session, token.strip())
    cookie = request.cookies.get(SESSION_COOKIE)
    found = _from_cookie(services, session, cookie) if cookie else None
    if found is None:
        return None
    principal, _ = found
    if request.method not in SAFE_METHODS and not csrf_matches(principal.csrf, request.headers.get(CSRF_HEADER)):
        raise Forbidden(f"missing or wrong {CSRF_HEADER} header (reload the page)")
    return principal


def get_current_user(principal: Annotated[Principal | None, Depends(optional_principal)]) -> Principal:
    if principal is None:
        raise Unauthorized("not authenticated: log in or send 'Authorization: Bearer <token>'")
    return principal


CurrentUser = Annotated[Principal, Depends(get_current_user)]
MaybeUser = Annotated[Principal | None, Depends(optional_principal)]


def require_role(minimum: str) -> Any:
    check_role(minimum)

    def dependency(principal: CurrentUser) -> Principal:
        if not principal.at_least(minimum):
            raise Forbidden(f"this needs the {minimum} role (you are {principal.role or 'a robot token'})")
        return principal

    dependency.__name__ = f"require_{minimum}"
    return Depends(dependency)


def require_role_or_scope(minimum: str, scope: str) -> Any:
    """Like `require_role`, but a token carrying `scope` (e.g. a robot's `models:read`) is let in too."""
    check_role(minimum)

    def dependency(principal: CurrentUser) -> Principal:
        if principal.at_least(minimum) or (principal.via == "token" and scope in principal.scopes):
            return principal
        who = principal.role or "a robot token without it"
        raise Forbidden(f"this needs the {minimum} role or a token with the {scope!r} scope (you are {who})")

    dependency.__name__ = f"require_{minimum}_or_{scope.replace(':', '_')}"
    return Depends(dependency)


def robot_producer(robot_id: str, principal: CurrentUser) -> Principal:
    """The caller of a route that takes one robot's data (path parameter `robot_id`): only a robot token
    (scope `robot:produce`) bound to that very robot. Human sessions and role tokens are refused too: robot
    data comes from robots."""
    if principal.via != "token" or ROBOT_PRODUCE not in principal.scopes:
        raise Forbidden(f"only a robot token (scope {ROBOT_PRODUCE!r}) may send robot data")
    if principal.robot_id is None:
        raise Forbidden(f"this token has the {ROBOT_PRODUCE!r} scope but no robot: ask an admin for a robot token")
    if principal.robot_id != robot_id:
        raise Forbidden(f"this token speaks for robot {principal.robot_id!r} only, not {robot_id!r}")
    return principal


ViewerUser = Annotated[Principal, require_role("viewer")]
ReviewerUser = Annotated[Principal, require_role("reviewer")]
OperatorUser = Annotated[Principal, require_role("operator")]
AdminUser = Annotated[Principal, require_role("admin")]
ModelReader = Annotated[Principal, require_role_or_scope("viewer", MODELS_READ)]  # viewers and robot tokens
RobotProducer = Annotated[Principal, Depends(robot_producer)]
