"""Users and API tokens (admin only)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path

from dashboards import crud
from dashboards.api_models import (
    DB_INT_MAX,
    RevokeIn,
    TokenCreate,
    TokenCreated,
    TokenPublic,
    UserCreate,
    UserPublic,
    UserUpdate,
)
from dashboards.deps import AdminUser, SessionDep
from dashboards.errors import BadRequest, NotFound
from fleet.db import ApiToken, User

router = APIRouter(tags=["users"])


def _token(row: ApiToken) -> TokenPublic:
    return TokenPublic(id=row.id, name=row.name, scopes=row.scopes, robot_id=row.robot_id, revoked=bool(row.revoked_at))


@router.get("/users", response_model=list[UserPublic])
def list_users(session: SessionDep, admin: AdminUser) -> list[User]:
    return crud.list_users(session)


@router.post("/users", response_model=UserPublic, status_code=201)
def create_user(body: UserCreate, session: SessionDep, admin: AdminUser) -> User:
    user = crud.create_user(session, username=body.username, password=body.password, role=body.role)
    crud.audit(
        session,
        principal=admin,
        action="user.create",
        target=f"user:{user.username}",
        reason=body.reason or None,
        details={"role": user.role},
    )
    session.commit()
    return user


@router.patch("/users/{username}", response_model=UserPublic)
def update_user(username: str, body: UserUpdate, session: SessionDep, admin: AdminUser) -> User:
    user = next((u for u in crud.list_users(session) if u.username == username), None)
    if user is None:
        raise NotFound(f"no user {username!r}")
    if user.username == admin.name and (body.disabled or (body.role and body.role != "admin")):
        raise BadRequest("admins cannot demote or disable themselves (ask another admin)")
    changes: dict[str, object] = {}
    # a disabled or re-roled user logs in again: a page left open or a copied cookie must not keep the old rights
    end_sessions = bool(body.disabled) or (body.role is not None and body.role != user.role)
    if body.role is not None:
        changes["role"] = [user.role, body.role]
        user.role = body.role
    if body.disabled is not None:
        changes["disabled"] = [user.disabled, body.disabled]
        user.disabled = body.disabled
    if end_sessions:
        changes["sessions_revoked"] = crud.revoke_user_sessions(session, user_id=user.id)
    crud.audit(
        session, principal=admin, action="user.update", target=f"user:{username}", reason=body.reason, details=changes
    )
    session.commit()
    return user


@router.get("/tokens", response_model=list[TokenPublic])
def list_tokens(session: SessionDep, admin: AdminUser) -> list[TokenPublic]:
    return [_token(t) for t in crud.list_tokens(session)]


@router.post("/tokens", response_model=TokenCreated, status_code=201)
def create_token(body: TokenCreate, session: SessionDep, admin: AdminUser) -> TokenCreated:
    """A scoped API token; the plaintext is in this answer only."""
    row, plaintext = crud.create_token(session, name=body.name, scopes=body.scopes, robot_id=body.robot_id)
    crud.audit(
        session,
        principal=admin,
        action="token.create",
        target=f"token:{row.id}",
        reason=body.reason or None,
        details={"name": row.name, "scopes": row.scopes, "robot_id": row.robot_id},
    )
    session.commit()
    return TokenCreated(**_token(row).model_dump(), token=plaintext)


@router.post("/tokens/{token_id}/revoke", response_model=TokenPublic)
def revoke_token(
    token_id: Annotated[int, Path(ge=1, le=DB_INT_MAX)], body: RevokeIn, session: SessionDep, admin: AdminUser
) -> TokenPublic:
    row = crud.revoke_token(session, token_id=token_id)
    crud.audit(session, principal=admin, action="token.revoke", target=f"token:{row.id}", reason=body.reason or None)
    session.commit()
    return _token(row)
