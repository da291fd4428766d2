"""The fleet database: SQLAlchemy 2.0 typed models, sessions and Alembic migrations.

SQLite file by default, PostgreSQL when `FLEET_DATABASE_URL` says so. The schema changes only
through Alembic (`migrations/`); `fleet up` and every service run `upgrade head` on start.
"""

from fleet.db.models import (
    ApiToken,
    AuditEntry,
    Base,
    Correction,
    Deployment,
    Episode,
    ModelVersion,
    OutboxMessage,
    Review,
    Robot,
    Segment,
    User,
    UserSession,
)
from fleet.db.session import make_engine, session_factory

__all__ = [
    "ApiToken",
    "AuditEntry",
    "Base",
    "Correction",
    "Deployment",
    "Episode",
    "ModelVersion",
    "OutboxMessage",
    "Review",
    "Robot",
    "Segment",
    "User",
    "UserSession",
    "make_engine",
    "session_factory",
]
