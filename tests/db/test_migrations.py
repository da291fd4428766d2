"""Migrations go up and down on SQLite and PostgreSQL, build exactly the models' schema, and the models work on it."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import inspect, select

from fleet.db import AuditEntry, Base, Episode, Robot, Segment, make_engine, migrate, session_factory

EXPECTED_TABLES = {
    "robots",
    "episodes",
    "segments",
    "corrections",
    "reviews",
    "model_versions",
    "deployments",
    "audit_log",
    "users",
    "api_tokens",
    "user_sessions",
}


def _tables(url: str) -> set[str]:
    engine = make_engine(url)
    try:
        return set(inspect(engine).get_table_names()) - {"alembic_version"}
    finally:
        engine.dispose()


def test_upgrade_then_downgrade(db_url: str) -> None:
    migrate.upgrade(db_url)
    assert _tables(db_url) >= EXPECTED_TABLES
    assert migrate.current_revision(db_url) == migrate.head_revision(db_url)
    migrate.upgrade(db_url)  # idempotent
    migrate.downgrade(db_url, "base")
    assert _tables(db_url) == set()
    assert migrate.current_revision(db_url) is None
    migrate.upgrade(db_url)
    assert _tables(db_url) >= EXPECTED_TABLES


def test_migrations_build_the_models_schema(db_url: str) -> None:
    """A model changed without a migration (or the other way round) fails here: write the migration."""
    migrate.upgrade(db_url)
    engine = make_engine(db_url)
    try:
        with engine.connect() as conn:
            diff = compare_metadata(MigrationContext.configure(conn, opts={"compare_type": True}), Base.metadata)
    finally:
        engine.dispose()
    assert diff == [], f"the migrated schema differs from fleet/db/models.py: {diff}"


def test_models_round_trip_on_migrated_schema(db_url: str) -> None:
    migrate.upgrade(db_url)
    engine = make_engine(db_url)
    sessions = session_factory(engine)
    with sessions.begin() as session:
        session.add(Robot(id="r1", embodiment="panda"))
        session.flush()  # no ORM relationship robot->episode, so the FK order is ours to keep
        episode = Episode(robot_id="r1", episode_id="e1", embodiment="panda", task="pick", instruction="pick it")
        episode.segments.append(Segment(robot_id="r1", segment_index=0, num_steps=10))
        session.add(episode)
        session.add(AuditEntry(actor="alice", role="admin", action="promote", target="v2", details={"why": "gate"}))
    with sessions() as session:
        got = session.scalars(select(Episode)).one()
        assert [s.num_steps for s in got.segments] == [10]
        assert session.scalars(select(AuditEntry)).one().details == {"why": "gate"}
    engine.dispose()
