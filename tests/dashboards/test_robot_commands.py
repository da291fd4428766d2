"""Commands reach a robot that posts through the dashboard: the dashboard's feed of `fleet.commands` answers each
robot's token with its own commands only, the robot's transport fetches them, and its poller hands each to the
runtime once (tests/faults/test_dashboard_kill.py runs robots against the real dashboard and broker)."""

from __future__ import annotations

import time
from types import SimpleNamespace

import httpx

from dashboards import crud
from dashboards.monitor import CommandFeed
from fleet.client import CommandPoller
from fleet.schemas import Command
from fleet.transport import COMMANDS, publish
from fleet.transport.http import HttpTransport, HttpTransportConfig
from tests.dashboards.conftest import Dash
from tests.data.fakes import FakeTransport


def _command(robot_id: str, action: str, created_at: float, n: int) -> Command:
    return Command(command_id=f"cmd-{robot_id}-{n}", robot_id=robot_id, action=action, issued_by="op",  # type: ignore[arg-type]
                   created_at=created_at)  # fmt: skip


def _token(dash: Dash, robot_id: str) -> str:
    with dash.services.sessions() as s:
        _, token = crud.create_token(s, name=robot_id, scopes=["robot:produce"], robot_id=robot_id)
        s.commit()
    return token


def test_each_robot_fetches_only_its_own_commands_since_it_last_asked(dash: Dash) -> None:
    feed = CommandFeed(SimpleNamespace(bootstrap="unused:9", client_id="t"))  # type: ignore[arg-type]
    dash.services.command_feed = feed
    now = time.time()
    transport = FakeTransport()
    for c in [_command("arm-1", "pause", now - 2, 1), _command("arm-2", "stop", now - 1, 2),
              _command("arm-1", "resume", now, 3)]:  # fmt: skip
        publish(transport, c)
    transport.send(COMMANDS, b"\xc1 not msgpack", key="arm-1")
    assert feed.reader(transport).step() == 4
    assert feed.decode_errors == 1  # skipped, the others stand

    arm1 = {"Authorization": f"Bearer {_token(dash, 'arm-1')}"}
    got = dash.client.get("/api/v1/robots/arm-1/commands", params={"after": now - 10}, headers=arm1)
    assert got.status_code == 200 and [c["action"] for c in got.json()["commands"]] == ["pause", "resume"]
    later = dash.client.get("/api/v1/robots/arm-1/commands", params={"after": now - 1.5}, headers=arm1)
    assert [c["action"] for c in later.json()["commands"]] == ["resume"]
    assert dash.client.get("/api/v1/robots/arm-2/commands", headers=arm1).status_code == 403  # not its robot

    # the robot's side: its HTTPS transport reads the feed through the same route, its poller hands each over once
    def via_app(request: httpx.Request) -> httpx.Response:
        answer = dash.client.request(request.method, str(request.url), headers=dict(request.headers))
        return httpx.Response(answer.status_code, headers=answer.headers, content=answer.content)

    transport = HttpTransport(
        HttpTransportConfig(url="http://dashboard.test", robot_id="arm-1", token=arm1["Authorization"][7:]),
        client=httpx.Client(transport=httpx.MockTransport(via_app)),
    )
    try:
        handed: list[Command] = []
        poller = CommandPoller(transport, handed.append)
        poller.after = now - 10
        assert poller.poll() == 2 and poller.poll() == 0  # asked again, nothing new: nothing handed twice
        feed.add(_command("arm-1", "stop", time.time(), 4))
        assert poller.poll() == 1
        assert [c.action for c in handed] == ["pause", "resume", "stop"]
    finally:
        transport.close(timeout_s=1)


def test_a_robot_asking_a_dashboard_that_cannot_answer_keeps_going() -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        return httpx.Response(503, json={"detail": "no broker"})

    transport = HttpTransport(HttpTransportConfig(url="http://dashboard.test", robot_id="arm-1", token="t"),
                              client=httpx.Client(transport=httpx.MockTransport(refuse)))  # fmt: skip
    try:
        assert transport.commands(0.0) == []
    finally:
        transport.close(timeout_s=1)
