"""Fleet status from heartbeats and episodes; commands on fleet.commands with pending → applied."""

from __future__ import annotations

import asyncio
import json

import pytest
from sqlalchemy import select

from dashboards.fleet_state import FleetState
from dashboards.monitor import write_robots
from dashboards.routes.fleet import status_events
from fleet.db import AuditEntry, Robot
from fleet.schemas import Command, decode
from fleet.transport import COMMANDS
from tests.dashboards.conftest import Dash
from tests.dashboards.factories import add_episode, heartbeat

pytestmark = pytest.mark.timeout(60)


def test_status_shows_robots_stats_and_rollout(dash: Dash) -> None:
    fleet = dash.services.fleet
    fleet.apply(heartbeat("robot-1", version="3", missed=2))
    fleet.apply(heartbeat("robot-2", version="2", state="paused"))
    with dash.services.sessions() as s:
        add_episode(s, robot_id="robot-1", episode_id="e1", success=True, interventions=0)
        add_episode(s, robot_id="robot-1", episode_id="e2", success=False, interventions=6)
        add_episode(s, robot_id="robot-1", episode_id="old", success=False, ended_ago_s=7200)  # outside the window
        s.commit()
    status = dash.client.get("/api/v1/fleet", headers=dash.auth("viewer")).json()
    robots = {r["robot_id"]: r for r in status["robots"]}
    assert robots["robot-1"]["state"] == "acting" and robots["robot-2"]["state"] == "paused"
    assert robots["robot-1"]["missed_ticks"] == 2
    stats = robots["robot-1"]["stats"]
    assert stats["episodes"] == 2 and stats["success_rate"] == 0.5 and stats["intervention_steps_per_episode"] == 3.0
    assert status["rollout"] == {"production": "3", "versions": {"2": 1, "3": 1}, "converged": False}
    assert status["counts"] == {"acting": 1, "paused": 1}


def test_robot_goes_offline_after_the_timeout() -> None:
    now = [1000.0]
    fleet = FleetState(offline_after_s=5.0, clock=lambda: now[0])
    fleet.apply(heartbeat("r"))
    assert fleet.snapshot()[0]["state"] == "acting"
    now[0] += 5.1
    assert fleet.snapshot()[0]["state"] == "offline"


def test_a_running_robot_a_human_drives_shows_intervened() -> None:
    fleet = FleetState(offline_after_s=5.0)
    fleet.apply(heartbeat("r", intervening=True))
    fleet.apply(heartbeat("p", state="paused", intervening=True))  # a paused robot is paused, whoever holds it
    states = {r["robot_id"]: (r["state"], r["intervening"]) for r in fleet.snapshot()}
    assert states == {"r": ("intervened", True), "p": ("paused", True)}
    fleet.apply(heartbeat("r"))  # the field defaults to False: the supervisor let go
    assert fleet.get("r").state(fleet.clock(), 5.0) == "acting"  # type: ignore[union-attr]


def test_command_is_published_keyed_by_robot_and_applied_on_ack(dash: Dash) -> None:
    dash.services.fleet.apply(heartbeat("robot-7"))
    r = dash.client.post(
        "/api/v1/robots/robot-7/commands",
        json={"action": "pause", "reason": "inspect gripper"},
        headers=dash.auth("operator"),
    )
    assert r.status_code == 202 and r.json()["status"] == "delivered"
    [record] = dash.transport.broker.records(COMMANDS)
    command = decode(record.value, Command)
    assert record.key == b"robot-7" and command.action == "pause" and command.issued_by == "operator-token"
    assert command.command_id == r.json()["command_id"]
    dash.services.commands.observe(heartbeat("robot-7", state="paused", applied_command_id=command.command_id))
    robot = dash.client.get("/api/v1/robots/robot-7", headers=dash.auth("viewer")).json()
    assert robot["commands"][0]["status"] == "applied"
    with dash.services.sessions() as s:
        entry = s.scalar(select(AuditEntry).where(AuditEntry.action == "command.pause"))
        assert (entry.actor, entry.role, entry.target, entry.reason) == (
            "operator-token",
            "operator",
            "robot:robot-7",
            "inspect gripper",
        )


def test_assign_task_needs_a_task_and_unknown_robot_is_404(dash: Dash) -> None:
    dash.services.fleet.apply(heartbeat("robot-1"))
    headers = dash.auth("operator")
    assert (
        dash.client.post("/api/v1/robots/robot-1/commands", json={"action": "assign_task"}, headers=headers).status_code
        == 400
    )
    ok = dash.client.post(
        "/api/v1/robots/robot-1/commands",
        json={"action": "assign_task", "task_id": "push", "instruction": "push the block"},
        headers=headers,
    )
    assert ok.status_code == 202 and ok.json()["task_id"] == "push"
    assert (
        dash.client.post("/api/v1/robots/ghost/commands", json={"action": "pause"}, headers=headers).status_code == 404
    )


def test_fleet_wide_command_reaches_every_robot(dash: Dash) -> None:
    for i in range(3):
        dash.services.fleet.apply(heartbeat(f"robot-{i}"))
    r = dash.client.post(
        "/api/v1/fleet/commands", json={"action": "stop", "reason": "e-stop drill"}, headers=dash.auth("admin")
    )
    assert r.status_code == 202 and len(r.json()) == 3
    keys = sorted(rec.key for rec in dash.transport.broker.records(COMMANDS))
    assert keys == [b"robot-0", b"robot-1", b"robot-2"]


def test_event_stream_yields_status_documents(dash: Dash) -> None:
    dash.services.fleet.apply(heartbeat("robot-1", state="paused"))

    async def collect() -> list[str]:
        return [e async for e in status_events(dash.services, None, max_events=2)]

    events = asyncio.run(collect())
    assert len(events) == 2 and events[0].startswith("event: status\ndata: ")
    doc = json.loads(events[0].split("data: ", 1)[1])
    assert doc["robots"][0]["state"] == "paused"


def test_heartbeats_are_written_to_the_robots_table(dash: Dash) -> None:
    fleet = dash.services.fleet
    fleet.apply(heartbeat("robot-9", state="out_of_rotation", version="4"))
    with dash.services.sessions() as s:
        write_robots(s, fleet.take_dirty())
        robot = s.scalar(select(Robot).where(Robot.id == "robot-9"))
        assert (robot.state, robot.current_version, robot.in_rotation) == ("out_of_rotation", "4", False)
    assert fleet.take_dirty() == []


def test_healthz_needs_no_auth(dash: Dash) -> None:
    assert dash.client.get("/healthz").json()["status"] == "ok"
