"""Model versions from the registry: lineage, eval metrics, learning curve; promote / rollback / pin / unpin.

Reads are open to viewers and to tokens with the `models:read` scope (robots); actions need the operator role."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from fastapi import APIRouter
from fastapi.responses import Response

from dashboards.api_models import ModelActionIn
from dashboards.charts import learning_curve_svg
from dashboards.deps import ModelReader, OperatorUser, ServicesDep
from dashboards.services import Services
from dashboards.versions import call_registry, version_key, version_view

router = APIRouter(prefix="/models", tags=["models"])
log = logging.getLogger(__name__)
CURVE_METRICS = 6  # most metrics drawn on the learning curve


def model_overview(services: Services) -> dict[str, Any]:
    versions = [version_view(v) for v in call_registry(services.registry, "list_versions")]
    versions.sort(key=lambda v: version_key(v["version"]))
    aliases = dict(call_registry(services.registry, "aliases"))
    by_version: dict[str, list[str]] = {}
    for alias, version in aliases.items():
        by_version.setdefault(str(version), []).append(alias)
    for v in versions:
        v["aliases"] = sorted(by_version.get(v["version"], []))
    return {
        "model_name": services.settings.model_name,
        "versions": list(reversed(versions)),  # newest first
        "aliases": aliases,
        "pinned": bool(call_registry(services.registry, "is_pinned")),
    }


def curve(overview: dict[str, Any]) -> str:
    ordered = list(reversed(overview["versions"]))
    names: list[str] = []
    for v in ordered:
        names.extend(k for k in v["eval_metrics"] if k not in names)
    names = sorted(names, key=lambda k: ("success" not in k, k))[:CURVE_METRICS]
    series: dict[str, Sequence[float | None]] = {k: [v["eval_metrics"].get(k) for v in ordered] for k in names}
    return learning_curve_svg([v["version"] for v in ordered], series)


@router.get("")
def list_models(services: ServicesDep, user: ModelReader) -> dict[str, Any]:
    """Versions newest first with lineage and eval metrics, the aliases and whether production is pinned."""
    return model_overview(services)


@router.get("/curve.svg", response_class=Response)
def learning_curve(services: ServicesDep, user: ModelReader) -> Response:
    return Response(curve(model_overview(services)), media_type="image/svg+xml")


@router.get("/{version}")
def get_model(version: str, services: ServicesDep, user: ModelReader) -> dict[str, Any]:
    return version_view(call_registry(services.registry, "get_version", version))


def _act(services: Services, user: OperatorUser, action: str, reason: str, *args: Any) -> dict[str, Any]:
    """Run one registry action as this user; the registry writes the audit entry (one per action, whichever
    path caused it: dashboard, CLI or learner) with the user's name, role and reason."""
    result = call_registry(services.registry, action, *args, actor=user.name, role=user.role or "token", reason=reason)
    services.invalidate_registry()
    if action in ("promote", "rollback"):
        event = "promoted" if action == "promote" else "rolled_back"
        services.announce_model(result, event=event, alias="production", actor=user.name, reason=reason)
    after = dict(call_registry(services.registry, "aliases"))
    return {"action": action, "aliases": after, "pinned": bool(call_registry(services.registry, "is_pinned"))}


@router.post("/{version}/promote")
def promote(version: str, body: ModelActionIn, services: ServicesDep, user: OperatorUser) -> Any:
    """Point `production` at this version (refused while production is pinned)."""
    return _act(services, user, "promote", body.reason, version)


@router.post("/{version}/rollback")
def rollback(version: str, body: ModelActionIn, services: ServicesDep, user: OperatorUser) -> Any:
    """Roll production back to this version (and pin it, so the learner does not override it)."""
    return _act(services, user, "rollback", body.reason, version)


@router.post("/pin")
def pin(body: ModelActionIn, services: ServicesDep, user: OperatorUser) -> Any:
    return _act(services, user, "pin", body.reason)


@router.post("/unpin")
def unpin(body: ModelActionIn, services: ServicesDep, user: OperatorUser) -> Any:
    return _act(services, user, "unpin", body.reason)
