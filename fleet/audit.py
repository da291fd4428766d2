"""The audit log: who did what, when and why. Every promote, rollback, pin, review and command.

One function so the CLI, the dashboard and the learner write entries the same way.
"""

from __future__ import annotations

import logging
from typing import Any

from sqlalchemy.orm import Session, sessionmaker

from fleet.db.models import AuditEntry

log = logging.getLogger(__name__)


def record_audit(
    sessions: sessionmaker[Session] | None,
    *,
    actor: str,
    role: str,
    action: str,
    target: str,
    reason: str | None = None,
    details: dict[str, Any] | None = None,
) -> None:
    """Append one audit entry (and log it); `sessions=None` only logs (no database configured)."""
    log.info(
        "audit",
        extra={"actor": actor, "role": role, "action": action, "target": target, "reason": reason},
    )
    if sessions is None:
        return
    with sessions.begin() as session:
        session.add(
            AuditEntry(actor=actor, role=role, action=action, target=target, reason=reason, details=details or {})
        )
