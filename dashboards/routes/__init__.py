"""One router per resource; `API_ROUTERS` are mounted under `/api/v1`, `pages.router` at the root."""

from __future__ import annotations

from dashboards.routes import audit, auth, canary, corrections, fleet, ingest, models, training, users

API_ROUTERS = (
    auth.router,
    users.router,
    fleet.router,
    ingest.router,
    corrections.router,
    models.router,
    canary.router,
    audit.router,
    training.router,
)
