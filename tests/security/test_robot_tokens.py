"""Robot tokens act as their own robot and nothing else: send that robot's data, read models; every other
route (other robots, operator and admin routes, the fleet view) answers 403 with a message."""

from __future__ import annotations

import pytest

from dashboards import crud
from fleet.schemas import ModelEvent, encode
from fleet.transport import CORRECTIONS, HEARTBEATS, TRAJECTORIES
from tests.dashboards.conftest import Dash
from tests.dashboards.factories import heartbeat
from tests.data.factories import make_segment

pytestmark = pytest.mark.timeout(60)
MSGPACK = {"Content-Type": "application/msgpack"}


def _robot_token(dash: Dash, robot_id: str, scopes: tuple[str, ...] = ("robot:produce", "models:read")) -> dict:
    with dash.services.sessions() as s:
        _, token = crud.create_token(s, name=f"{robot_id}-token", scopes=list(scopes), robot_id=robot_id)
        s.commit()
    return {"Authorization": f"Bearer {token}"}


def _post(dash: Dash, robot_id: str, body: bytes, headers: dict) -> object:
    return dash.client.post(f"/api/v1/robots/{robot_id}/messages", content=body, headers={**headers, **MSGPACK})


def test_robot_token_sends_its_own_robots_data(dash: Dash) -> None:
    a = _robot_token(dash, "robot-a")
    for message, topic in ((heartbeat("robot-a"), HEARTBEATS), (make_segment("robot-a", size=4), TRAJECTORIES)):
        r = _post(dash, "robot-a", encode(message), a)
        assert r.status_code == 202, r.text
        assert {k: r.json()[k] for k in ("kind", "topic", "robot_id")} == {
            "kind": message.KIND,
            "topic": topic,
            "robot_id": "robot-a",
        }
    assert [r.key for r in dash.transport.broker.records(HEARTBEATS)] == [b"robot-a"]
    assert [r.key for r in dash.transport.broker.records(TRAJECTORIES)] == [b"robot-a"]


def test_robot_token_cannot_post_as_another_robot(dash: Dash) -> None:
    a = _robot_token(dash, "robot-a")
    r = _post(dash, "robot-b", encode(heartbeat("robot-b")), a)  # B's URL
    assert r.status_code == 403 and "speaks for robot 'robot-a' only" in r.json()["detail"]
    r = _post(dash, "robot-a", encode(heartbeat("robot-b")), a)  # own URL, B's data
    assert r.status_code == 403 and "about robot 'robot-b'" in r.json()["detail"]
    assert not dash.transport.broker.records(HEARTBEATS)


def test_robot_token_cannot_send_fleet_side_messages(dash: Dash) -> None:
    event = ModelEvent(
        event="promoted", model_name="fleet-vla", version="9", artifact_uri="s3://x", sha256="0" * 64, created_at=1.0
    )
    r = _post(dash, "robot-a", encode(event), _robot_token(dash, "robot-a"))
    assert r.status_code == 403 and "not 'model_event'" in r.json()["detail"]


def test_only_robot_tokens_send_robot_data(dash: Dash) -> None:
    body = encode(heartbeat("robot-1"))
    for role in ("viewer", "operator", "admin"):
        r = _post(dash, "robot-1", body, dash.auth(role))
        assert r.status_code == 403 and "only a robot token" in r.json()["detail"], role
    no_produce = _robot_token(dash, "robot-1", scopes=("models:read",))
    assert _post(dash, "robot-1", body, no_produce).status_code == 403
    assert _post(dash, "robot-1", body, {}).status_code == 401
    assert not dash.transport.broker.records(HEARTBEATS)


def test_bad_robot_data_is_a_4xx_with_a_message(dash: Dash) -> None:
    a = _robot_token(dash, "robot-a")
    r = _post(dash, "robot-a", b"\x93garbage", a)
    assert r.status_code == 400 and "not a valid fleet message" in r.json()["detail"]
    r = dash.client.post("/api/v1/robots/robot-a/messages", json={"robot_id": "robot-a"}, headers=a)
    assert r.status_code == 415 and "application/msgpack" in r.json()["detail"]
    big = b"\0" * (8 * 1024 * 1024 + 1)
    r = _post(dash, "robot-a", big, a)
    assert r.status_code == 413 and "exceeds" in r.json()["detail"]
    assert not dash.transport.broker.records(CORRECTIONS)


def test_robot_token_reads_models(dash: Dash) -> None:
    for path in ("/api/v1/models", "/api/v1/models/2", "/api/v1/models/curve.svg"):
        assert dash.client.get(path, headers=dash.auth("robot")).status_code == 200, path


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("GET", "/api/v1/robots/robot-2", None),  # another robot's status
        ("GET", "/api/v1/robots/robot-1", None),  # even its own: robots read models, not the fleet view
        ("GET", "/api/v1/fleet", None),
        ("GET", "/api/v1/commands?robot_id=robot-2", None),
        ("GET", "/api/v1/corrections", None),
        ("POST", "/api/v1/robots/robot-2/commands", {"action": "pause", "reason": "r"}),
        ("POST", "/api/v1/fleet/commands", {"action": "stop", "reason": "r"}),
        ("POST", "/api/v1/models/1/rollback", {"reason": "r"}),
        ("POST", "/api/v1/models/pin", {"reason": "r"}),
        ("POST", "/api/v1/corrections/c-1/review", {"decision": "approve"}),
        ("GET", "/api/v1/users", None),
        ("POST", "/api/v1/tokens", {"name": "t", "scopes": ["role:admin"]}),
    ],
)
def test_robot_token_is_refused_everywhere_else(dash: Dash, method: str, path: str, body: dict | None) -> None:
    dash.services.fleet.apply(heartbeat("robot-2"))
    r = dash.client.request(method, path, json=body, headers=dash.auth("robot"))
    assert r.status_code == 403, r.text
    assert "robot token" in r.json()["detail"]
    assert dash.registry.calls == [] and dash.transport.broker.records("fleet.commands") == []


def test_robot_scopes_need_a_robot(dash: Dash) -> None:
    r = dash.client.post(
        "/api/v1/tokens", json={"name": "loose", "scopes": ["robot:produce"]}, headers=dash.auth("admin")
    )
    assert r.status_code == 400 and "robot_id" in r.json()["detail"]
    r = dash.client.post(
        "/api/v1/tokens",
        json={"name": "r9", "scopes": ["robot:produce", "models:read"], "robot_id": "robot-9"},
        headers=dash.auth("admin"),
    )
    assert r.status_code == 201 and r.json()["robot_id"] == "robot-9"
