"""Run Alembic migrations from code (`fleet up`, service start-up, tests) without an alembic.ini."""

from __future__ import annotations

import importlib.resources

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory

from fleet.db.session import make_engine


def alembic_config(url: str) -> Config:
    config = Config()
    config.set_main_option("script_location", str(importlib.resources.files("migrations")))
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return config


def upgrade(url: str, revision: str = "head") -> None:
    command.upgrade(alembic_config(url), revision)


def downgrade(url: str, revision: str = "base") -> None:
    command.downgrade(alembic_config(url), revision)


def current_revision(url: str) -> str | None:
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            return MigrationContext.configure(conn).get_current_revision()
    finally:
        engine.dispose()


def head_revision(url: str) -> str | None:
    return ScriptDirectory.from_config(alembic_config(url)).get_current_head()


class SchemaNotCurrent(RuntimeError):
    """The database's schema is not the one this code needs, and this process may not migrate it."""


def prepare(url: str, *, migrate: bool) -> None:
    """What a service does with the database on start: migrate it (development: one role owns everything), or, when
    its role may not change the schema (`FLEET_DATABASE_MIGRATE=false`, production), check that the owner has
    (`fleet db upgrade`) and refuse to start on another revision."""
    if migrate:
        upgrade(url)
        return
    current, head = current_revision(url), head_revision(url)
    if current != head:
        raise SchemaNotCurrent(
            f"the database is at revision {current or 'none'} and this fleet needs {head}: run `fleet db upgrade` "
            "as the database's owner first"
        )
