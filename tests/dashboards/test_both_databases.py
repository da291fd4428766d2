"""The review and command flows on SQLite and PostgreSQL (the `db_url` fixture)."""

from __future__ import annotations

from pathlib import Path

import pytest

from fleet.db.migrate import upgrade
from tests.dashboards.conftest import local_settings, make_dash
from tests.dashboards.factories import add_correction, add_episode, heartbeat

pytestmark = pytest.mark.timeout(120)


def test_review_command_and_stats(db_url: str, tmp_path: Path, password_hash: str) -> None:
    upgrade(db_url)
    dash = make_dash(local_settings(tmp_path, db_url), password_hash)
    try:
        dash.services.fleet.apply(heartbeat("robot-1"))
        with dash.services.sessions() as s:
            add_episode(s, success=True)
            add_correction(s)
            s.commit()
        client = dash.login("operator")
        assert client.post("/api/v1/corrections/c-1/review", json={"decision": "reject"}).status_code == 200
        assert client.post("/api/v1/robots/robot-1/commands", json={"action": "pause"}).status_code == 202
        status = client.get("/api/v1/fleet").json()
        assert status["robots"][0]["stats"]["success_rate"] == 1.0
        actions = [e["action"] for e in client.get("/api/v1/audit").json()]
        assert actions[:2] == ["command.pause", "review.reject"]
    finally:
        dash.services.stop()
