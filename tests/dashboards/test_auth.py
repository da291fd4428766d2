"""Authentication: passwords (argon2), session cookie + CSRF, server-side sessions (logout and an admin's change
revoke them), bearer tokens (hash only), secrets."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient
from itsdangerous import URLSafeTimedSerializer
from pydantic import SecretStr
from sqlalchemy import select

from dashboards import crud
from dashboards.auth import resolve_secret_key, role_at_least
from fleet.db import ApiToken, AuditEntry, User, UserSession
from fleet.db.tokens import hash_token
from fleet.settings import Settings
from tests.dashboards.conftest import PASSWORD, Dash

pytestmark = pytest.mark.timeout(60)


def test_roles_are_ordered() -> None:
    assert role_at_least("admin", "operator") and role_at_least("operator", "operator")
    assert not role_at_least("reviewer", "operator") and not role_at_least(None, "viewer")


def test_login_sets_cookie_and_me_answers(dash: Dash) -> None:
    client = dash.login("reviewer")
    me = client.get("/api/v1/auth/me").json()
    assert me["username"] == "reviewer" and me["role"] == "reviewer" and me["csrf_token"]
    with dash.services.sessions() as s:
        assert s.scalar(select(AuditEntry).where(AuditEntry.action == "auth.login")).actor == "reviewer"


def test_wrong_password_and_unknown_user_are_401(dash: Dash) -> None:
    for user, pw in (("admin", "nope-nope-nope"), ("ghost", PASSWORD)):
        r = dash.client.post("/api/v1/auth/login", json={"username": user, "password": pw})
        assert r.status_code == 401
    assert dash.client.get("/api/v1/fleet").status_code == 401


def test_cookie_mutation_needs_csrf_header(dash: Dash) -> None:
    client = dash.login("operator")
    token = client.headers.pop("X-CSRF-Token")
    body = {"decision": "approve", "reason": ""}
    assert client.post("/api/v1/corrections/c-x/review", json=body).status_code == 403
    client.headers["X-CSRF-Token"] = "forged"
    assert client.post("/api/v1/corrections/c-x/review", json=body).status_code == 403
    client.headers["X-CSRF-Token"] = token
    assert client.post("/api/v1/corrections/c-x/review", json=body).status_code == 404  # past auth: no such correction


def test_tampered_cookie_is_not_a_session(dash: Dash) -> None:
    client = dash.login("admin")
    cookie = client.cookies.get("fleet_session")
    client.cookies.clear()
    client.cookies.set("fleet_session", cookie[:-2] + ("AA" if not cookie.endswith("AA") else "BB"))
    assert client.get("/api/v1/auth/me").status_code == 401


def test_logout_clears_the_session(dash: Dash) -> None:
    client = dash.login("viewer")
    assert client.post("/api/v1/auth/logout").status_code == 204
    assert client.get("/api/v1/auth/me").status_code == 401


def test_a_cookie_copied_before_logout_is_refused_after_it(dash: Dash) -> None:
    client = dash.login("operator")
    copy = TestClient(dash.app, cookies={"fleet_session": client.cookies.get("fleet_session")})
    assert copy.get("/api/v1/auth/me").status_code == 200
    assert client.post("/api/v1/auth/logout").status_code == 204
    assert copy.get("/api/v1/auth/me").status_code == 401
    assert copy.get("/fleet", follow_redirects=False).status_code == 303  # pages: back to the login page
    with dash.services.sessions() as s:
        row = s.scalars(select(UserSession)).one()
        assert row.revoked_at is not None and len(row.id) == 64  # only the session id's sha256 is stored
        logout = s.scalar(select(AuditEntry).where(AuditEntry.action == "auth.logout"))
        assert (logout.actor, logout.target) == ("operator", "user:operator")


def test_a_cookie_without_a_session_id_is_refused(dash: Dash) -> None:
    """A cookie signed before sessions were stored (`{"uid", "csrf"}`, no `sid`) logs nobody in, though its
    signature is good."""
    with dash.services.sessions() as s:
        uid = s.scalar(select(User.id).where(User.username == "admin"))
    key = dash.settings.secret_key.get_secret_value()
    old = URLSafeTimedSerializer(key, salt="fleet-session").dumps({"uid": uid, "csrf": "c" * 32})
    client = TestClient(dash.app, cookies={"fleet_session": old})
    assert client.get("/api/v1/auth/me").status_code == 401


@pytest.mark.parametrize("change", [{"role": "operator"}, {"disabled": True}])
def test_changing_or_disabling_a_user_revokes_their_sessions(dash: Dash, change: dict[str, object]) -> None:
    browsers = [dash.login("reviewer"), dash.login("reviewer")]
    admin = dash.login("admin")
    r = admin.patch("/api/v1/users/reviewer", json={**change, "reason": "moved team"})
    assert r.status_code == 200, r.text
    for browser in browsers:
        assert browser.get("/api/v1/auth/me").status_code == 401
    assert admin.get("/api/v1/auth/me").status_code == 200  # the admin's own session is untouched
    with dash.services.sessions() as s:
        entry = s.scalar(select(AuditEntry).where(AuditEntry.action == "user.update"))
        assert entry.details["sessions_revoked"] == 2
    if "role" in change:  # a changed user logs in again, with the new role
        assert dash.login("reviewer").get("/api/v1/auth/me").json()["role"] == "operator"


def test_an_unchanged_role_revokes_nothing(dash: Dash) -> None:
    browser = dash.login("viewer")
    r = dash.client.patch(
        "/api/v1/users/viewer", json={"role": "viewer", "reason": "no-op"}, headers=dash.auth("admin")
    )
    assert r.status_code == 200
    assert browser.get("/api/v1/auth/me").status_code == 200


def test_tokens_store_only_a_hash_and_can_be_revoked(dash: Dash) -> None:
    r = dash.client.post("/api/v1/tokens", json={"name": "ci", "scopes": ["role:viewer"]}, headers=dash.auth("admin"))
    assert r.status_code == 201
    plaintext, token_id = r.json()["token"], r.json()["id"]
    with dash.services.sessions() as s:
        row = s.get(ApiToken, token_id)
        assert row.token_hash == hash_token(plaintext) and plaintext not in row.token_hash
    headers = {"Authorization": f"Bearer {plaintext}"}
    assert dash.client.get("/api/v1/fleet", headers=headers).status_code == 200
    assert dash.client.post(f"/api/v1/tokens/{token_id}/revoke", json={}, headers=dash.auth("admin")).status_code == 200
    assert dash.client.get("/api/v1/fleet", headers=headers).status_code == 401


def test_robot_token_has_no_dashboard_role(dash: Dash) -> None:
    r = dash.client.post("/api/v1/fleet/commands", json={"action": "pause"}, headers=dash.auth("robot"))
    assert r.status_code == 403
    assert dash.client.get("/api/v1/fleet", headers=dash.auth("robot")).status_code == 403


def test_passwords_are_argon2_and_never_stored_plain(dash: Dash) -> None:
    r = dash.client.post(
        "/api/v1/users",
        json={"username": "eve", "password": "a long passphrase", "role": "viewer"},
        headers=dash.auth("admin"),
    )
    assert r.status_code == 201 and "password" not in r.json()
    with dash.services.sessions() as s:
        user = s.scalar(select(User).where(User.username == "eve"))
        assert user.password_hash.startswith("$argon2id$") and "a long passphrase" not in user.password_hash
        assert crud.authenticate(s, username="eve", password="a long passphrase") is not None
    short = {"username": "bob", "password": "short", "role": "viewer"}
    assert dash.client.post("/api/v1/users", json=short, headers=dash.auth("admin")).status_code == 422


def test_disabled_user_cannot_log_in(dash: Dash) -> None:
    r = dash.client.patch("/api/v1/users/viewer", json={"disabled": True, "reason": "left"}, headers=dash.auth("admin"))
    assert r.status_code == 200
    assert dash.client.post("/api/v1/auth/login", json={"username": "viewer", "password": PASSWORD}).status_code == 401


def test_secret_key_generated_once_in_local_mode(tmp_path) -> None:
    settings = Settings(home=tmp_path)
    first = resolve_secret_key(settings)
    assert len(first) >= 32 and resolve_secret_key(settings) == first
    assert (tmp_path / "secret_key").stat().st_mode & 0o077 == 0


PRODUCTION_KAFKA = {
    "kafka_security_protocol": "SASL_SSL", "kafka_sasl_mechanism": "SCRAM-SHA-512", "kafka_sasl_username": "dashboard",
    "kafka_sasl_password": SecretStr("p" * 24),
}  # fmt: skip


def test_production_has_no_default_secret(tmp_path) -> None:
    keyless = Settings(  # valid settings (a robot's have no key): the dashboard refuses to start on them
        home=tmp_path,
        env="production",
        database_url="sqlite://",
        kafka_bootstrap="x:1",
        mlflow_tracking_uri="http://x",
        **PRODUCTION_KAFKA,
    )
    with pytest.raises(ValueError, match="FLEET_SECRET_KEY"):
        resolve_secret_key(keyless)
    prod = Settings(
        home=tmp_path,
        env="production",
        database_url="sqlite://",
        kafka_bootstrap="x:1",
        mlflow_tracking_uri="http://x",
        secret_key=SecretStr("k" * 32),
        **PRODUCTION_KAFKA,
    )
    assert resolve_secret_key(prod) == "k" * 32
    assert not (tmp_path / "secret_key").exists()
    with pytest.raises(ValueError, match="PLAINTEXT"):  # an open broker in production: refused at start
        Settings(**{**prod.model_dump(), "kafka_security_protocol": "PLAINTEXT"})
