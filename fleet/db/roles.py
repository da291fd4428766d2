"""One PostgreSQL role per service, each with the least privileges its code uses.

In production the database owner (the role that runs the migrations, `fleet db upgrade`) is used by no service.
Each service logs in as its own role, which can change rows and nothing else (no DDL: PostgreSQL 15+ gives PUBLIC no
CREATE on the public schema, and this revokes it on older ones), and only in the tables it works on:

    recorder    the episode index: robots and episodes it first sees, segments as they arrive
    learner     the versions it registers and the aliases it moves (model_versions, deployments), audit rows
    dashboard   everything it shows and changes, but the audit log only grows (no UPDATE or DELETE)

    grant_service_roles(owner_url)                          # the roles named fleet_<service> that exist
    grant_service_roles(owner_url, {"recorder": "rec_1"})   # other names (tests)

Grants are replaced on every call (REVOKE ALL, then GRANT), after each upgrade, so a new table reaches the dashboard
and a privilege removed here is removed from the database. On SQLite there are no roles and this does nothing.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

from sqlalchemy import text

from fleet.db.models import Base
from fleet.db.session import make_engine

log = logging.getLogger(__name__)

DML = "SELECT, INSERT, UPDATE, DELETE"
RECORDER = {"robots": "SELECT, INSERT", "episodes": "SELECT, INSERT, UPDATE", "segments": "SELECT, INSERT"}
APPEND_ONLY = "SELECT, INSERT"  # the audit log: nobody rewrites history (SELECT: an INSERT ... RETURNING needs it)
LEARNER = {"model_versions": "SELECT, INSERT, UPDATE", "deployments": "SELECT, INSERT", "audit_log": APPEND_ONLY}
# Tables whose integer `id` comes from a sequence (inserting into them takes the sequence too).
SERIAL_IDS = {
    t.name
    for t in Base.metadata.tables.values()
    if [(c.name, c.autoincrement) for c in t.primary_key] == [("id", True)]
}


def service_privileges() -> dict[str, dict[str, str]]:
    """service -> table -> the privileges its role gets (every table the models define reaches the dashboard)."""
    dashboard = {table: APPEND_ONLY if table == "audit_log" else DML for table in Base.metadata.tables}
    return {"recorder": dict(RECORDER), "learner": dict(LEARNER), "dashboard": dashboard}


def default_roles() -> dict[str, str]:
    return {service: f"fleet_{service}" for service in service_privileges()}


def grant_service_roles(owner_url: str, roles: Mapping[str, str] | None = None) -> dict[str, str]:
    """Give each service's role exactly its privileges (run as the tables' owner). Roles that do not exist are
    skipped (a deployment that shares one role does without). Returns the service -> role names granted."""
    engine = make_engine(owner_url)
    if engine.dialect.name != "postgresql":
        engine.dispose()
        return {}
    privileges = service_privileges()
    unknown = set(roles or {}) - set(privileges)
    if unknown:
        raise ValueError(f"no privileges defined for service(s) {sorted(unknown)}; known: {sorted(privileges)}")
    granted: dict[str, str] = {}
    try:
        with engine.begin() as conn:
            # PostgreSQL before 15 lets every role create tables in the public schema
            conn.execute(text("REVOKE CREATE ON SCHEMA public FROM PUBLIC"))
            for service, role in (roles or default_roles()).items():
                if conn.scalar(text("SELECT 1 FROM pg_roles WHERE rolname = :r"), {"r": role}) is None:
                    log.info("database role %s for the %s does not exist: not granted", role, service)
                    continue
                quoted = conn.dialect.identifier_preparer.quote(role)
                conn.execute(text(f"REVOKE ALL ON ALL TABLES IN SCHEMA public FROM {quoted}"))
                conn.execute(text(f"REVOKE ALL ON ALL SEQUENCES IN SCHEMA public FROM {quoted}"))
                conn.execute(text(f"GRANT USAGE ON SCHEMA public TO {quoted}"))
                conn.execute(text(f"GRANT SELECT ON alembic_version TO {quoted}"))  # to check the schema is current
                for table, allowed in privileges[service].items():
                    conn.execute(text(f"GRANT {allowed} ON {table} TO {quoted}"))
                    if "INSERT" in allowed and table in SERIAL_IDS:
                        sequence = conn.scalar(text("SELECT pg_get_serial_sequence(:t, 'id')"), {"t": table})
                        conn.execute(text(f"GRANT USAGE ON SEQUENCE {sequence} TO {quoted}"))
                granted[service] = role
    finally:
        engine.dispose()
    return granted
