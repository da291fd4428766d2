"""Shared request dependencies as `Annotated` aliases: services, DB session, current user, roles.

`CurrentUser` authenticates (bearer token, else session cookie; cookie requests that mutate must
carry the session's CSRF token) and raises 401 when nobody is logged in. `require_role(r)` builds
a dependency that also raises 403 below role `r`; `ViewerUser`, `ReviewerUser`, `OperatorUser`,
`AdminUser` are the aliases routes use.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated, Any

from fastapi import Depends, Request
from sqlalchemy.orm import Session

from dashboards import crud
from dashboards.auth import CSRF_HEADER, SESSION_COOKIE, Principal, check_role, csrf_matches, token_role
from dashboards.errors import Forbidden, Unauthorized
from dashboards.services import Services
from fleet.db import User

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def get_services(request: Request) -> Services:
    return request.app.state.services  # type: ignore[no-any-return]


ServicesDep = Annotated[Services, Depends(get_services)]


def get_db(services: ServicesDep) -> Iterator[Session]:
    with services.sessions() as session:
        yield session


SessionDep = Annotated[Session, Depends(get_db)]


def _from_token(session: Session, token: str) -> Principal:
    row = crud.find_token(session, plaintext=token)
    if row is None:
        raise Unauthorized("invalid or revoked API token")
    scopes = frozenset(row.scopes.split())
    return Principal(name=row.name, role=token_role(scopes), via="token", scopes=scopes, robot_id=row.robot_id)


def _from_cookie(services: Services, session: Session, cookie: str) -> tuple[Principal, dict[str, Any]] | None:
    data = services.codec.read(cookie)
    if data is None:
        return None
    user = session.get(User, data["uid"])
    if user is None or user.disabled:
        return None
    return Principal(name=user.username, role=user.role, via="session", csrf=data["csrf"]), data


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


ViewerUser = Annotated[Principal, require_role("viewer")]
ReviewerUser = Annotated[Principal, require_role("reviewer")]
OperatorUser = Annotated[Principal, require_role("operator")]
AdminUser = Annotated[Principal, require_role("admin")]
