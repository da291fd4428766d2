"""Keyword-only data-access functions over the fleet database (users, login sessions, tokens, audit, robots).

They raise `dashboards.errors` exceptions, never HTTP ones; callers commit.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import delete, select, update
from sqlalchemy.orm import Session

from dashboards.auth import Principal, check_role, hash_password, new_token, verify_password
from dashboards.errors import BadRequest, Conflict, NotFound
from fleet.db import ApiToken, AuditEntry, Robot, User, UserSession
from fleet.db.tokens import hash_token

ROBOT_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:@-]{0,63}")  # fleet.schemas Id, within the robots table's 64


def create_user(session: Session, *, username: str, password: str, role: str) -> User:
    username = username.strip()
    if not username or len(username) > 64:
        raise BadRequest("username must have 1-64 characters")
    try:
        check_role(role)
        password_hash = hash_password(password)
    except ValueError as e:
        raise BadRequest(str(e)) from None
    if session.scalar(select(User).where(User.username == username)) is not None:
        raise Conflict(f"user {username!r} already exists")
    user = User(username=username, password_hash=password_hash, role=role, disabled=False)
    session.add(user)
    session.flush()
    return user


def authenticate(session: Session, *, username: str, password: str) -> User | None:
    user = session.scalar(select(User).where(User.username == username))
    ok = verify_password(password, user.password_hash if user is not None else None)
    if user is None or not ok or user.disabled:
        return None
    return user


def list_users(session: Session) -> list[User]:
    return list(session.scalars(select(User).order_by(User.username)))


def open_user_session(session: Session, *, user_id: int, session_id: str, max_age_s: int) -> UserSession:
    """Store a fresh login (`session_id`: the sha256 the cookie's session id maps to). This user's rows older than
    the cookie lifetime are deleted on the way: their cookies are refused by their signature's age anyway."""
    cutoff = datetime.now(UTC) - timedelta(seconds=max_age_s)
    session.execute(delete(UserSession).where(UserSession.user_id == user_id, UserSession.created_at < cutoff))
    row = UserSession(id=session_id, user_id=user_id)
    session.add(row)
    session.flush()
    return row


def revoke_user_session(session: Session, *, session_id: str) -> bool:
    """Revoke one login (logout); False when it was already revoked or never existed."""
    result = session.execute(
        update(UserSession)
        .where(UserSession.id == session_id, UserSession.revoked_at.is_(None))
        .values(revoked_at=datetime.now(UTC))
    )
    return bool(result.rowcount)  # type: ignore[attr-defined]


def revoke_user_sessions(session: Session, *, user_id: int) -> int:
    """Revoke every open login of one user (disabled, or given another role); how many were open."""
    result = session.execute(
        update(UserSession)
        .where(UserSession.user_id == user_id, UserSession.revoked_at.is_(None))
        .values(revoked_at=datetime.now(UTC))
    )
    return int(result.rowcount)  # type: ignore[attr-defined]


def create_token(
    session: Session, *, name: str, scopes: list[str], robot_id: str | None = None
) -> tuple[ApiToken, str]:
    """A new API token; the plaintext is returned once and never stored."""
    if not scopes or any(not s or " " in s for s in scopes):
        raise BadRequest("scopes must be a non-empty list of words, e.g. ['robot:produce', 'models:read']")
    if any(s.startswith("robot:") for s in scopes) and not robot_id:
        raise BadRequest("robot scopes need robot_id: the one robot this token speaks for")
    if robot_id is not None and not ROBOT_ID.fullmatch(robot_id):
        raise BadRequest(f"robot_id {robot_id!r} is not a robot id (letters, digits, _.:@-; at most 64 characters)")
    plaintext = new_token()
    row = ApiToken(token_hash=hash_token(plaintext), name=name, robot_id=robot_id, scopes=" ".join(sorted(scopes)))
    session.add(row)
    session.flush()
    return row, plaintext


def revoke_token(session: Session, *, token_id: int) -> ApiToken:
    row = session.get(ApiToken, token_id)
    if row is None:
        raise NotFound(f"no API token {token_id}")
    if row.revoked_at is None:
        row.revoked_at = datetime.now(UTC)
    return row


def list_tokens(session: Session) -> list[ApiToken]:
    return list(session.scalars(select(ApiToken).order_by(ApiToken.id)))


def audit(
    session: Session,
    *,
    principal: Principal,
    action: str,
    target: str,
    reason: str | None,
    details: dict[str, Any] | None = None,
) -> AuditEntry:
    """Record who did what to what and why (every mutating route calls this before committing)."""
    entry = AuditEntry(
        actor=principal.name,
        role=principal.role or "token",
        action=action,
        target=target[:128],
        reason=reason,
        details=details or {},
    )
    session.add(entry)
    return entry


def list_audit(
    session: Session, *, limit: int = 200, action: str | None = None, actor: str | None = None
) -> list[AuditEntry]:
    query = select(AuditEntry).order_by(AuditEntry.id.desc()).limit(limit)
    if action:
        query = query.where(AuditEntry.action == action)
    if actor:
        query = query.where(AuditEntry.actor == actor)
    return list(session.scalars(query))


def list_robots(session: Session) -> list[Robot]:
    return list(session.scalars(select(Robot).order_by(Robot.id)))
