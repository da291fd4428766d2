"""Security tests reuse the dashboard fixtures: a migrated SQLite DB per test, the app on fakes, a user and a
token per role plus a robot token for robot-1."""

from __future__ import annotations

from tests.dashboards.conftest import dash, password_hash, template_db

__all__ = ["dash", "password_hash", "template_db"]
