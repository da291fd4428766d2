"""Fleet status from heartbeats and episodes; the live event stream (ends when access ends, capped); commands on
fleet.commands with pending → applied."""

from __future__ import annotations

import asyncio
import contextlib
import json
from typing import Any

import pytest
from sqlalchemy import select

from dashboards.fleet_state import FleetState
from dashboards.monitor import write_robots
from dashboards.routes.fleet import status_events
from dashboards.streams import StreamSlots
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


# --- the live event stream, driven through the ASGI app by hand (TestClient would wait for an endless body) ---


class Stream:
    """One open `GET /api/v1/fleet/events`: what the app sent so far, and a switch to make the client go away."""

    def __init__(self, app: Any, headers: dict[str, str], *, spec_version: str = "2.3") -> None:
        self.messages: list[dict[str, Any]] = []
        self.gone = asyncio.Event()
        self._asked = False
        scope = {
            "type": "http", "asgi": {"version": "3.0", "spec_version": spec_version}, "http_version": "1.1",
            "method": "GET", "scheme": "http", "path": "/api/v1/fleet/events", "raw_path": b"/api/v1/fleet/events",
            "query_string": b"", "root_path": "", "client": ("127.0.0.1", 50000), "server": ("testserver", 80),
            "headers": [(k.lower().encode(), v.encode()) for k, v in headers.items()],
        }  # fmt: skip
        self.task = asyncio.create_task(app(scope, self._receive, self._send))

    async def _receive(self) -> dict[str, Any]:
        if not self._asked:
            self._asked = True
            return {"type": "http.request", "body": b"", "more_body": False}
        await self.gone.wait()
        return {"type": "http.disconnect"}

    async def _send(self, message: dict[str, Any]) -> None:
        if self.gone.is_set():
            raise OSError("client disconnected")  # what a server does once the peer is gone
        self.messages.append(message)

    @property
    def status(self) -> int | None:
        return next((m["status"] for m in self.messages if m["type"] == "http.response.start"), None)

    @property
    def text(self) -> str:
        return b"".join(m.get("body", b"") for m in self.messages if m["type"] == "http.response.body").decode()

    async def until(self, what: str, timeout_s: float = 10.0) -> None:
        """Wait until the body holds `what` (or, for "started", until the response has started)."""
        async with asyncio.timeout(timeout_s):
            while (self.status is None) if what == "started" else (what not in self.text):
                await asyncio.sleep(0.02)

    async def close(self) -> None:
        self.gone.set()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.task, 10)


def end_reason(text: str) -> str:
    """The reason of the stream's final `end` event (fails when the stream did not end with one)."""
    last = text.strip().split("\n\n")[-1]
    assert last.startswith("event: end\ndata: "), text[-300:]
    return str(json.loads(last.split("data: ", 1)[1])["reason"])


def cookie_header(dash: Dash, role: str) -> dict[str, str]:
    return {"Cookie": f"fleet_session={dash.login(role).cookies.get('fleet_session')}"}


def test_disabling_a_user_ends_their_open_stream(dash: Dash) -> None:
    async def scenario() -> str:
        stream = Stream(dash.app, cookie_header(dash, "viewer"))
        await stream.until("event: status")
        assert dash.services.engine.pool.checkedout() == 0  # an open stream holds no DB connection between events
        r = await asyncio.to_thread(
            dash.client.patch,
            "/api/v1/users/viewer",
            json={"disabled": True, "reason": "left"},
            headers=dash.auth("admin"),
        )
        assert r.status_code == 200
        await asyncio.wait_for(stream.task, 10)  # the stream ends by itself
        return stream.text

    assert "disabled" in end_reason(asyncio.run(scenario()))
    assert dash.services.streams.open_streams() == 0


def test_logout_ends_the_sessions_stream(dash: Dash) -> None:
    client = dash.login("viewer")
    headers = {"Cookie": f"fleet_session={client.cookies.get('fleet_session')}"}

    async def scenario() -> str:
        stream = Stream(dash.app, headers)
        await stream.until("event: status")
        assert (await asyncio.to_thread(client.post, "/api/v1/auth/logout")).status_code == 204
        await asyncio.wait_for(stream.task, 10)
        return stream.text

    assert "logged out" in end_reason(asyncio.run(scenario()))


def test_a_revoked_tokens_stream_ends(dash: Dash) -> None:
    r = dash.client.post("/api/v1/tokens", json={"name": "wall", "scopes": ["role:viewer"]}, headers=dash.auth("admin"))
    token, token_id = r.json()["token"], r.json()["id"]

    async def scenario() -> str:
        stream = Stream(dash.app, {"Authorization": f"Bearer {token}"})
        await stream.until("event: status")
        revoke = f"/api/v1/tokens/{token_id}/revoke"
        assert (
            await asyncio.to_thread(dash.client.post, revoke, json={}, headers=dash.auth("admin"))
        ).status_code == 200
        await asyncio.wait_for(stream.task, 10)
        return stream.text

    assert "revoked" in end_reason(asyncio.run(scenario()))
    assert dash.services.streams.open_streams() == 0


@pytest.mark.parametrize("spec_version", ["2.3", "2.4"])  # uvicorn: the response listens for the disconnect; 2.4: not
def test_streams_are_capped_per_caller_and_a_slot_frees_on_disconnect(dash: Dash, spec_version: str) -> None:
    per_caller = dash.services.config.sse_max_streams_per_caller
    token = dash.auth("viewer")

    async def scenario() -> None:
        streams = [Stream(dash.app, token, spec_version=spec_version) for _ in range(per_caller)]
        for s in streams:
            await s.until("event: status")
        extra = Stream(dash.app, token, spec_version=spec_version)
        await asyncio.wait_for(extra.task, 10)
        assert extra.status == 429 and "live event streams open" in extra.text
        other = Stream(dash.app, dash.auth("operator"), spec_version=spec_version)  # another caller has its own share
        await other.until("event: status")
        await streams[0].close()  # the client goes away: its slot comes back
        assert dash.services.streams.open_streams() == per_caller
        again = Stream(dash.app, token, spec_version=spec_version)
        await again.until("event: status")
        for s in [*streams[1:], other, again]:
            await s.close()

    asyncio.run(scenario())
    assert dash.services.streams.open_streams() == 0


def test_streams_are_capped_in_total(dash: Dash) -> None:
    dash.services.streams = StreamSlots(total=2, per_caller=2)

    async def scenario() -> None:
        streams = [Stream(dash.app, dash.auth(role)) for role in ("viewer", "operator")]
        for s in streams:
            await s.until("event: status")
        extra = Stream(dash.app, dash.auth("admin"))
        await asyncio.wait_for(extra.task, 10)
        assert extra.status == 429 and "limit of 2 live event streams" in extra.text
        for s in streams:
            await s.close()

    asyncio.run(scenario())
    assert dash.services.streams.open_streams() == 0
