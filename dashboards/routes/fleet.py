"""The fleet: live status (JSON and an SSE stream), one robot, and commands to robots (operator)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import asdict
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import StreamingResponse
from sqlalchemy import select

from dashboards import crud
from dashboards.api_models import CommandPublic, FleetCommandIn, RobotCommandIn, error_responses
from dashboards.auth import Principal
from dashboards.deps import OperatorUser, ServicesDep, SessionDep, ViewerUser, access_ended
from dashboards.errors import BadRequest, NotFound
from dashboards.services import Services
from dashboards.streams import SlotStreamingResponse, caller_key
from fleet.db import Episode, Robot

router = APIRouter(tags=["fleet"])


@router.get("/fleet")
def fleet_status(services: ServicesDep, user: ViewerUser) -> dict[str, Any]:
    """Every robot's state, version, loop health and recent success; counts per state; rollout per version."""
    return services.fleet_status()


async def status_events(
    services: Services,
    request: Request | None,
    *,
    principal: Principal | None = None,
    max_events: int | None = None,
) -> AsyncIterator[str]:
    """Server-sent events: one `status` event per interval. Before each one the caller is checked again
    (`deps.access_ended`); once its access has ended (logout, user disabled or changed, token revoked, session
    expired) the stream sends one `end` event, `{"reason": …}`, and stops."""
    sent = 0
    while max_events is None or sent < max_events:
        if request is not None and await request.is_disconnected():
            return
        ended, status = await asyncio.to_thread(_check_then_status, services, principal)
        if ended is not None:
            yield f"event: end\ndata: {json.dumps({'reason': ended})}\n\n"
            return
        yield f"event: status\ndata: {json.dumps(status, default=str)}\n\n"
        sent += 1
        if max_events is None or sent < max_events:
            await asyncio.sleep(services.config.sse_interval_s)


def _check_then_status(services: Services, principal: Principal | None) -> tuple[str | None, dict[str, Any] | None]:
    """(why the caller's access ended, None) or (None, the fleet status); one short DB session, closed at once."""
    if principal is not None:
        with services.sessions() as session:
            ended = access_ended(session, principal, session_max_age_s=services.config.session_max_age_s)
        if ended is not None:
            return ended, None
    return None, services.fleet_status()


@router.get("/fleet/events", response_class=StreamingResponse, responses=error_responses(429))
async def fleet_events(
    request: Request, services: ServicesDep, session: SessionDep, user: ViewerUser
) -> StreamingResponse:
    """`text/event-stream` of fleet status documents (what the fleet page listens to).

    It ends with an `end` event (`{"reason": …}`) when the caller's access ends. At most
    `DashboardConfig.sse_max_streams` streams are open at once and `sse_max_streams_per_caller` per user or token;
    one more is a 429 until one of them closes."""
    slot = services.streams.take(caller_key(user))
    session.close()  # the request's DB connection goes back to the pool now, not when the stream ends
    headers = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
    return SlotStreamingResponse(
        status_events(services, request, principal=user), slot=slot, media_type="text/event-stream", headers=headers
    )


@router.get("/robots/{robot_id}")
def robot_detail(robot_id: str, services: ServicesDep, session: SessionDep, user: ViewerUser) -> dict[str, Any]:
    robot = next((r for r in services.fleet.snapshot() if r["robot_id"] == robot_id), None)
    if robot is None:
        raise NotFound(f"no robot {robot_id!r} (it has sent no heartbeat yet)")
    episodes = session.scalars(
        select(Episode).where(Episode.robot_id == robot_id).order_by(Episode.started_at.desc()).limit(20)
    )
    robot["episodes"] = [
        {
            "episode_id": e.episode_id,
            "task": e.task,
            "model_version": e.model_version,
            "success": e.success,
            "interventions": e.interventions,
            "length": e.length,
            "ended_at": e.ended_at,
        }
        for e in episodes
    ]
    robot["commands"] = [asdict(c) for c in services.commands.list(robot_id=robot_id, limit=20)]
    return robot


def _known(services: Services, session: SessionDep, robot_id: str) -> bool:
    return services.fleet.get(robot_id) is not None or session.get(Robot, robot_id) is not None


@router.post("/robots/{robot_id}/commands", response_model=CommandPublic, status_code=202)
def command_robot(
    robot_id: str, body: RobotCommandIn, services: ServicesDep, session: SessionDep, user: OperatorUser
) -> Any:
    """Send a command on `fleet.commands`; it is `applied` once the robot's heartbeat acknowledges it."""
    if (body.action == "assign_task") != (body.task_id is not None):
        raise BadRequest("task_id is required for assign_task and only for it")
    if not _known(services, session, robot_id):
        raise NotFound(f"no robot {robot_id!r}")
    status = services.send_command(
        robot_id=robot_id,
        action=body.action,
        issued_by=user.name,
        reason=body.reason,
        task_id=body.task_id,
        instruction=body.instruction,
    )
    crud.audit(
        session,
        principal=user,
        action=f"command.{body.action}",
        target=f"robot:{robot_id}",
        reason=body.reason or None,
        details={"command_id": status.command_id, "task_id": body.task_id, "instruction": body.instruction},
    )
    session.commit()
    return asdict(status)


@router.post("/fleet/commands", response_model=list[CommandPublic], status_code=202)
def command_fleet(body: FleetCommandIn, services: ServicesDep, session: SessionDep, user: OperatorUser) -> Any:
    """Pause, resume or stop every known robot (one command per robot, keyed by its id)."""
    robot_ids = sorted(set(services.fleet.robot_ids()) | {r.id for r in crud.list_robots(session)})
    sent = [
        services.send_command(
            robot_id=r, action=body.action, issued_by=user.name, reason=body.reason, task_id=None, instruction=None
        )
        for r in robot_ids
    ]
    crud.audit(
        session,
        principal=user,
        action=f"command.fleet.{body.action}",
        target="fleet",
        reason=body.reason or None,
        details={"robots": len(sent), "command_ids": [c.command_id for c in sent][:100]},
    )
    session.commit()
    return [asdict(c) for c in sent]


@router.get("/commands", response_model=list[CommandPublic])
def list_commands(services: ServicesDep, user: ViewerUser, robot_id: str | None = None, limit: int = 100) -> Any:
    return [asdict(c) for c in services.commands.list(robot_id=robot_id, limit=min(max(limit, 1), 1000))]
