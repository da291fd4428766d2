"""The canary rollout: its live A/B against production (`fleet.rollout`), start, promote, roll back.

Reads need the viewer role; actions the operator role. The registry audits each action with the user's name and
reason; the background controller (`DashboardConfig.canary_interval_s`) decides on its own in between."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from fastapi import APIRouter

from dashboards.api_models import CanaryStartIn, ModelActionIn
from dashboards.deps import OperatorUser, ServicesDep, ViewerUser
from dashboards.errors import BadRequest
from dashboards.services import Services
from dashboards.versions import call_registry
from fleet.canary import CANARY, Cohort

router = APIRouter(prefix="/canary", tags=["canary"])


def canary_view(services: Services) -> dict[str, Any]:
    """The running rollout with its A/B, the robots on it and their control loops against production's."""
    # the controller fails as the registry it wraps does: the same 404 / 409 / 503 mapping
    status = call_registry(services.canary_controller(), "status")  # type: ignore[arg-type]
    view: dict[str, Any] = {
        "running": status is not None,
        "production": call_registry(services.registry, "aliases").get("production"),
        "policy": asdict(services.config.canary_policy),
        "automatic": services.canary is not None,
    }
    if status is None:
        return view
    robots = services.fleet.snapshot()
    loops = {}
    for channel in (CANARY, "production"):
        on = [r for r in robots if (r["channel"] or "production") == channel and r["state"] != "offline"]
        ticks = sum(r["ticks_total"] for r in on)
        missed = sum(r["missed_ticks_total"] for r in on)
        loops[channel] = {"robots": len(on), "ticks": ticks, "missed_ticks": missed,
                          "missed_fraction": missed / ticks if ticks else None}  # fmt: skip
    view.update(status.to_dict())
    view["canary_robots"] = [r["robot_id"] for r in robots if r["channel"] == CANARY]
    view["loops"] = loops
    return view


@router.get("")
def get_canary(services: ServicesDep, user: ViewerUser) -> dict[str, Any]:
    """The running canary (if any): canary against production per metric with always-valid 95% intervals, what the
    controller would decide now, and the robots on it."""
    return canary_view(services)


@router.post("")
def start_canary(body: CanaryStartIn, services: ServicesDep, user: OperatorUser) -> dict[str, Any]:
    """Run a version on a share of the fleet (`fraction` of the robots seen recently, plus `robots`)."""
    online = [r["robot_id"] for r in services.fleet.snapshot() if r["state"] != "offline"]
    try:
        cohort = Cohort.for_fleet(body.version, fraction=body.fraction, robots=body.robots, known=online)
    except ValueError as e:
        raise BadRequest(str(e)) from None
    info = call_registry(services.registry, "start_canary", body.version, cohort, actor=user.name,
                         role=user.role or "token", reason=body.reason)  # fmt: skip
    services.invalidate_registry()
    services.announce_model(info, event="canary_started", alias=CANARY, actor=user.name, reason=body.reason)
    return canary_view(services)


def _end(services: Services, user: OperatorUser, outcome: str, reason: str) -> dict[str, Any]:
    info = call_registry(services.registry, "end_canary", outcome, actor=user.name, role=user.role or "token",
                         reason=reason)  # fmt: skip
    services.invalidate_registry()
    event, alias = ("promoted", "production") if outcome == "promote" else ("canary_ended", CANARY)
    services.announce_model(info, event=event, alias=alias, actor=user.name, reason=reason)
    return canary_view(services)


@router.post("/promote")
def promote_canary(body: ModelActionIn, services: ServicesDep, user: OperatorUser) -> dict[str, Any]:
    """End the rollout now: production -> the canary version."""
    return _end(services, user, "promote", body.reason)


@router.post("/rollback")
def rollback_canary(body: ModelActionIn, services: ServicesDep, user: OperatorUser) -> dict[str, Any]:
    """End the rollout now: every canary robot returns to production."""
    return _end(services, user, "rollback", body.reason)
