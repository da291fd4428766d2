"""Who is calling: roles, password hashing, signed session cookies, CSRF tokens and API tokens.

- Users have one role; roles are ordered viewer < reviewer < operator < admin and a route asks
  for the least role it needs (`require_role` in `deps`).
- Browsers log in once and carry a session cookie signed with FLEET_SECRET_KEY (itsdangerous,
  timestamped, HttpOnly, SameSite=Lax). The cookie carries a random session id; the server keeps
  its sha256 in `user_sessions`, and the cookie counts only while that row is not revoked (logout,
  an admin disabling or changing the user). The session also holds a random CSRF token that pages
  embed and send back in the `X-CSRF-Token` header on every mutating request.
- API clients (the CLI, scripts, robots) send `Authorization: Bearer <token>`. Only the token's
  sha256 is stored. A token acts with the role named by its `role:<name>` scope; robot tokens
  carry `robot:produce` / `models:read` scopes, a `robot_id` and no role: they may send their own robot's
  data and read models, and every other route refuses them (`deps.ModelReader`, `deps.RobotProducer`).
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from itsdangerous import BadSignature, SignatureExpired, URLSafeTimedSerializer
from pwdlib import PasswordHash

from fleet.settings import Settings

ROLES: tuple[str, ...] = ("viewer", "reviewer", "operator", "admin")
SESSION_COOKIE = "fleet_session"
CSRF_HEADER = "X-CSRF-Token"
TOKEN_PREFIX = "fleet_"
ROBOT_PRODUCE = "robot:produce"  # send this token's robot's data (and only its robot's)

_hasher = PasswordHash.recommended()  # argon2id with the library's current parameters
_DUMMY_HASH = _hasher.hash(secrets.token_hex(16))  # verified against for unknown users: same timing


def check_role(role: str) -> str:
    if role not in ROLES:
        raise ValueError(f"unknown role {role!r}; one of {', '.join(ROLES)}")
    return role


def role_at_least(role: str | None, minimum: str) -> bool:
    """True when `role` ranks at or above `minimum` (None, e.g. a robot token, ranks below all)."""
    return role in ROLES and ROLES.index(role) >= ROLES.index(check_role(minimum))


def hash_password(password: str) -> str:
    if len(password) < 8:
        raise ValueError("password must have at least 8 characters")
    return _hasher.hash(password)


def verify_password(password: str, password_hash: str | None) -> bool:
    """Constant work whether or not the user exists (`password_hash=None`)."""
    try:
        ok = _hasher.verify(password, password_hash or _DUMMY_HASH)
    except Exception:  # a malformed stored hash must read as a failed login, not a 500
        return False
    return ok and password_hash is not None


def new_token() -> str:
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def resolve_secret_key(settings: Settings) -> str:
    """FLEET_SECRET_KEY; in local mode a random key generated once into FLEET_HOME/secret_key."""
    if settings.secret_key is not None:
        key = settings.secret_key.get_secret_value()
        if len(key) < 16:
            raise ValueError("FLEET_SECRET_KEY is too short: use at least 16 random characters")
        return key
    if settings.env == "production":
        raise ValueError("FLEET_SECRET_KEY must be set in production (no default secret)")
    path = Path(settings.home) / "secret_key"
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return path.read_text().strip()
    with os.fdopen(fd, "w") as f:
        f.write(secrets.token_urlsafe(48))
    return path.read_text().strip()


@dataclass(frozen=True)
class Principal:
    """The authenticated caller of one request."""

    name: str  # user name, or the token's name
    role: str | None  # None for robot tokens: they hold scopes, not a dashboard role
    via: Literal["session", "token"]
    csrf: str | None = None  # session CSRF token (sessions only)
    scopes: frozenset[str] = field(default_factory=frozenset)
    robot_id: str | None = None  # robot tokens: the only robot the token speaks for
    session_id: str | None = None  # sessions: the `user_sessions` row (sha256 of the cookie's session id)
    token_id: int | None = None  # tokens: the `api_tokens` row (long requests re-check it is not revoked)

    def at_least(self, minimum: str) -> bool:
        return role_at_least(self.role, minimum)


def token_role(scopes: frozenset[str]) -> str | None:
    """Highest `role:<name>` scope of a token, if any."""
    roles = [s.removeprefix("role:") for s in scopes if s.startswith("role:") and s[5:] in ROLES]
    return max(roles, key=ROLES.index) if roles else None


@dataclass(frozen=True)
class IssuedSession:
    """What a fresh login hands out: the cookie for the browser, the CSRF token for the page, the row id to store."""

    cookie: str  # signed `{"uid", "sid", "csrf"}`
    csrf: str
    session_id: str  # sha256 hex of the cookie's random `sid`: the `user_sessions` row id (the sid is never stored)


class SessionCodec:
    """Signs and checks session cookies: `{"uid": user id, "sid": session id, "csrf": token}` plus a timestamp.

    A valid signature is not enough to be logged in: `deps` also needs the session's row (`session_key(sid)`)
    to exist and not be revoked. Cookies without a `sid` (signed before sessions were stored) are refused."""

    def __init__(self, secret_key: str, *, max_age_s: int) -> None:
        self._serializer = URLSafeTimedSerializer(secret_key, salt="fleet-session")
        self.max_age_s = max_age_s

    def issue(self, user_id: int) -> IssuedSession:
        sid, csrf = secrets.token_urlsafe(32), secrets.token_urlsafe(24)
        cookie = self._serializer.dumps({"uid": user_id, "sid": sid, "csrf": csrf})
        return IssuedSession(cookie=cookie, csrf=csrf, session_id=session_key(sid))

    def read(self, cookie: str) -> dict[str, Any] | None:
        try:
            data = self._serializer.loads(cookie, max_age=self.max_age_s)
        except (BadSignature, SignatureExpired):
            return None
        if not isinstance(data, dict) or not isinstance(data.get("uid"), int):
            return None
        if not isinstance(data.get("sid"), str) or not isinstance(data.get("csrf"), str):
            return None
        return data


def session_key(sid: str) -> str:
    """The `user_sessions` row id of a cookie's session id (a stolen database does not yield cookies)."""
    return hashlib.sha256(sid.encode()).hexdigest()


def csrf_matches(expected: str | None, given: str | None) -> bool:
    return bool(expected and given) and hmac.compare_digest(str(expected), str(given))
