"""The canary through the dashboard (fake registry, real DB): start on a share of the live fleet, the live A/B from
recorded episodes, the controller's own decision (statistics or a safety signal), operators ending it, the page."""

from __future__ import annotations

import pytest

from fleet.schemas import ModelEvent, decode
from fleet.transport import MODELS
from tests.dashboards.conftest import Dash
from tests.dashboards.factories import add_episode, heartbeat

pytestmark = pytest.mark.timeout(60)


def _fleet(dash: Dash, n: int = 8) -> None:
    for i in range(1, n + 1):
        dash.services.fleet.apply(heartbeat(f"robot-{i}", version="3", channel="production"))


def _episodes(dash: Dash, version: str, n: int, *, success: bool, start: int = 0, task: str = "pick") -> None:
    with dash.services.sessions.begin() as session:
        for i in range(start, start + n):
            add_episode(session, robot_id=f"robot-{i % 8 + 1}", episode_id=f"{version}-{i}", success=success,
                        interventions=0 if success else 6, version=version, ended_ago_s=0, task=task)  # fmt: skip


def test_a_quarter_of_the_live_fleet_runs_the_canary_and_the_ab_decides_against_a_worse_version(dash: Dash) -> None:
    _fleet(dash)
    h = dash.auth("operator")
    bad = dash.client.post("/api/v1/canary", json={"version": "2", "fraction": 1.5, "reason": "x"}, headers=h)
    assert bad.status_code == 422
    empty = dash.client.post("/api/v1/canary", json={"version": "2", "reason": "x"}, headers=h)
    assert empty.status_code == 400 and "empty canary" in empty.json()["detail"]
    r = dash.client.post("/api/v1/canary", json={"version": "2", "fraction": 0.25, "reason": "try v2"}, headers=h)
    assert r.status_code == 200, r.text
    cohort = dash.registry.cohort
    assert cohort is not None and sum(cohort.includes(f"robot-{i}") for i in range(1, 9)) == 2
    started = [decode(rec.value) for rec in dash.transport.broker.records(MODELS)]
    assert [(m.event, m.alias, m.version) for m in started if isinstance(m, ModelEvent)] == [
        ("canary_started", "canary", "2")
    ]
    other = dash.client.post("/api/v1/canary", json={"version": "1", "fraction": 0.25, "reason": "x"}, headers=h)
    assert other.status_code == 409

    _episodes(dash, "2", 40, success=False)
    _episodes(dash, "3", 120, success=True)
    view = dash.client.get("/api/v1/canary", headers=dash.auth("viewer")).json()
    assert view["running"] and view["version"] == "2" and view["production"] == "3"
    success = next(c for c in view["comparisons"] if c["metric"] == "autonomous_success")
    assert (success["canary_n"], success["production_n"], success["verdict"]) == (40, 120, "worse")
    assert view["decision"]["action"] == "rollback"

    dash.services.canary_controller().step()  # what the background controller does every canary_interval_s
    assert "canary" not in dash.registry.alias_map and dash.registry.alias_map["production"] == "3"
    assert dash.registry.calls[-1][0] == "end_canary" and dash.registry.calls[-1][1]["outcome"] == "rollback"
    assert dash.client.get("/api/v1/canary", headers=h).json()["running"] is False


def test_a_canary_robot_reporting_an_error_rolls_the_canary_back_before_any_statistics(dash: Dash) -> None:
    _fleet(dash)
    h = dash.auth("operator")
    assert dash.client.post("/api/v1/canary", json={"version": "2", "robots": ["robot-1"], "reason": "x"},
                            headers=h).status_code == 200  # fmt: skip
    dash.services.fleet.apply(heartbeat("robot-1", version="2", channel="canary"))
    assert dash.client.get("/api/v1/canary", headers=h).json()["decision"]["action"] == "continue"
    dash.services.fleet.apply(heartbeat("robot-1", version="2", channel="canary", error="checkpoint refused: NaN"))
    view = dash.client.get("/api/v1/canary", headers=h).json()
    assert view["canary_robots"] == ["robot-1"] and view["decision"]["action"] == "rollback"
    assert "safety" in view["decision"]["reason"]


def test_an_operator_promotes_the_canary_and_the_page_shows_the_ab_escaped(dash: Dash) -> None:
    _fleet(dash)
    h = dash.auth("operator")
    assert dash.client.post("/api/v1/canary", json={"version": "2", "robots": ["robot-1"], "reason": "x"},
                            headers=h).status_code == 200  # fmt: skip
    hostile = "<script>alert(1)</script>"  # task names come from robots' messages
    _episodes(dash, "2", 25, success=True, task=hostile)
    _episodes(dash, "3", 25, success=True, start=100, task=hostile)
    page = dash.login("viewer").get("/canary")
    assert page.status_code == 200
    assert 'Canary <b id="canary-version">v2</b>' in page.text and 'data-metric="autonomous_success"' in page.text
    assert "<script>alert(1)" not in page.text and "&lt;script&gt;alert(1)" in page.text
    assert "data-canary-action" not in page.text  # a viewer sees no buttons
    assert "data-canary-action" in dash.login("operator").get("/canary").text
    r = dash.client.post("/api/v1/canary/promote", json={"reason": "looks good"}, headers=h)
    assert r.status_code == 200 and dash.registry.alias_map["production"] == "2" and not r.json()["running"]
    assert dash.client.post("/api/v1/canary/rollback", json={"reason": "again"}, headers=h).status_code == 404
