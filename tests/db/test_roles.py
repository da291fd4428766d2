"""One PostgreSQL role per service (`fleet.db.roles`): each does its own work and nothing else, and no service role
can change the schema; a service that may not migrate refuses a schema its code does not match."""

from __future__ import annotations

import secrets
import time
import uuid
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.exc import ProgrammingError

from fleet.audit import record_audit
from fleet.db import AuditEntry, Deployment, ModelVersion, User, make_engine, migrate, session_factory
from fleet.db.roles import grant_service_roles, service_privileges
from fleet.recorder_db import SegmentRow, record_segments
from tests.conftest import _drop_postgres_db, _fresh_postgres_db

pytestmark = pytest.mark.timeout(120)


def _admin(url: str):  # type: ignore[no-untyped-def]
    return create_engine(url.replace("postgresql://", "postgresql+psycopg://"), isolation_level="AUTOCOMMIT")


@pytest.fixture()
def service_urls(postgres_url: str) -> Iterator[tuple[str, dict[str, str], dict[str, str]]]:
    """A fresh database owned by the test role, and a login role per service (unique names, dropped after)."""
    name, owner_url = _fresh_postgres_db(postgres_url)
    suffix = uuid.uuid4().hex[:8]
    roles = {service: f"fleet_{service}_{suffix}" for service in service_privileges()}
    urls = {}
    admin = _admin(postgres_url)
    with admin.connect() as conn:
        for service, role in roles.items():
            password = secrets.token_hex(16)
            conn.execute(text(f"CREATE ROLE {role} LOGIN PASSWORD '{password}'"))
            rest = owner_url.split("@", 1)[1]
            urls[service] = f"postgresql://{role}:{password}@{rest}"
    try:
        yield owner_url, roles, urls
    finally:
        _drop_postgres_db(postgres_url, name)
        with admin.connect() as conn:
            for role in roles.values():
                conn.execute(text(f"DROP ROLE IF EXISTS {role}"))
        admin.dispose()


def _denied(sessions, statement: str) -> None:  # type: ignore[no-untyped-def]
    with sessions() as session, pytest.raises(ProgrammingError, match="permission denied|must be owner"):
        session.execute(text(statement))
        session.commit()


def _row(robot: str) -> SegmentRow:
    return SegmentRow(robot, "ep-1", "panda", "pick", "pick up the red cube", 0, 10, 0, "1", 0, 7, time.time())


def test_each_service_role_does_its_own_work_and_nothing_else(
    service_urls: tuple[str, dict[str, str], dict[str, str]],
) -> None:
    owner_url, roles, urls = service_urls
    migrate.upgrade(owner_url)
    assert grant_service_roles(owner_url, roles) == roles
    engines = {service: make_engine(url) for service, url in urls.items()}
    sessions = {service: session_factory(engine) for service, engine in engines.items()}
    try:
        for service in roles:  # each checks the schema is current, and none may change it
            migrate.prepare(urls[service], migrate=False)
            _denied(sessions[service], "CREATE TABLE intruder (id integer)")
            _denied(sessions[service], "ALTER TABLE episodes ADD COLUMN intruder integer")
            _denied(sessions[service], "DROP TABLE robots")

        # the recorder indexes what arrives, and sees no account, token, version or audit row
        with sessions["recorder"]() as session:
            assert record_segments(session, rows=[_row("robot-1")]) == 1
            session.commit()
        with sessions["recorder"]() as session:  # a robot seen before: its row is the heartbeats' to update
            later = replace(_row("robot-1"), segment_index=1, received_at=time.time() + 5)
            assert record_segments(session, rows=[later, _row("robot-1")]) == 1
            session.commit()
        for table in ("users", "api_tokens", "user_sessions", "model_versions", "audit_log", "corrections"):
            _denied(sessions["recorder"], f"SELECT * FROM {table}")
        _denied(sessions["recorder"], "DELETE FROM segments")

        # the learner registers versions, moves aliases and audits that; it reads no account and edits no episode
        with sessions["learner"].begin() as session:
            session.add(ModelVersion(version="2", sha256="0" * 64))
            session.flush()
            session.add(Deployment(alias="production", version="2", action="promote", pinned=False, actor="learner"))
        record_audit(sessions["learner"], actor="learner", role="service", action="promote", target="fleet-vla v2")
        for table in ("users", "api_tokens", "episodes", "outbox"):
            _denied(sessions["learner"], f"SELECT * FROM {table}")
        _denied(sessions["learner"], "UPDATE audit_log SET reason = 'rewritten'")

        # the dashboard reads and changes everything it shows, but the audit log only grows
        with sessions["dashboard"].begin() as session:
            session.add(User(username="ada", password_hash="x", role="admin", disabled=False))
            session.add(AuditEntry(actor="ada", role="admin", action="user.create", target="user:ada", details={}))
        with sessions["dashboard"]() as session:
            assert session.execute(text("SELECT count(*) FROM segments")).scalar() == 2
            assert session.execute(text("SELECT count(*) FROM audit_log")).scalar() == 2
        _denied(sessions["dashboard"], "UPDATE audit_log SET reason = 'rewritten'")
        _denied(sessions["dashboard"], "DELETE FROM audit_log")
    finally:
        for engine in engines.values():
            engine.dispose()


def test_grants_follow_the_table_map_when_it_shrinks(
    service_urls: tuple[str, dict[str, str], dict[str, str]], monkeypatch: pytest.MonkeyPatch
) -> None:
    owner_url, roles, urls = service_urls
    migrate.upgrade(owner_url)
    grant_service_roles(owner_url, roles)
    engine = make_engine(urls["recorder"])
    recorder = session_factory(engine)
    try:
        with recorder() as session:
            session.execute(text("SELECT * FROM segments")).all()
        from fleet.db import roles as roles_module

        monkeypatch.setattr(roles_module, "RECORDER", {"robots": "SELECT"})
        grant_service_roles(owner_url, {"recorder": roles["recorder"]})  # a privilege removed here is removed there
        _denied(recorder, "SELECT * FROM segments")
    finally:
        engine.dispose()


def test_a_service_that_may_not_migrate_refuses_an_old_schema(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'fleet.db'}"
    migrate.upgrade(url, "0003")
    with pytest.raises(migrate.SchemaNotCurrent, match="at revision 0003 .* run `fleet db upgrade`"):
        migrate.prepare(url, migrate=False)
    migrate.prepare(url, migrate=True)
    migrate.prepare(url, migrate=False)  # now current
    assert grant_service_roles(url) == {}  # SQLite has no roles


def test_unknown_services_are_refused(tmp_path: Path, postgres_url: str) -> None:
    with pytest.raises(ValueError, match="no privileges defined for service"):
        grant_service_roles(postgres_url, {"robot": "fleet_robot"})
