"""The audit log: who did what, when and why (read-only)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from dashboards import crud
from dashboards.api_models import AuditPublic
from dashboards.deps import SessionDep, ViewerUser

router = APIRouter(tags=["audit"])


@router.get("/audit", response_model=list[AuditPublic])
def list_audit(
    session: SessionDep, user: ViewerUser, action: str | None = None, actor: str | None = None, limit: int = 200
) -> Any:
    """Newest first, optionally filtered by action (e.g. `rollback`, `review.reject`) or actor."""
    return crud.list_audit(session, limit=min(max(limit, 1), 2000), action=action, actor=actor)
