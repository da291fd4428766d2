"""Model versions through the (fake) registry: lineage, curve, promote / rollback / pin / unpin with reasons."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from dashboards.app import create_app
from fleet.db import AuditEntry
from tests.dashboards.conftest import Dash

pytestmark = pytest.mark.timeout(60)


def test_versions_newest_first_with_lineage_and_metrics(dash: Dash) -> None:
    body = dash.client.get("/api/v1/models", headers=dash.auth("viewer")).json()
    assert [v["version"] for v in body["versions"]] == ["3", "2", "1"]
    v3 = body["versions"][0]
    assert v3["parent_version"] == "2" and v3["correction_count"] == 15 and v3["aliases"] == ["candidate", "production"]
    assert v3["eval_metrics"]["eval/success_rate"] == pytest.approx(0.6)
    svg = dash.client.get("/api/v1/models/curve.svg", headers=dash.auth("viewer")).text
    assert svg.startswith("<svg") and "eval/success_rate" in svg and "v1" in svg


def test_rollback_pins_and_passes_who_and_why_to_the_registry(dash: Dash) -> None:
    h = dash.auth("operator")
    r = dash.client.post("/api/v1/models/1/rollback", json={"reason": "v3 drops cubes"}, headers=h)
    assert r.status_code == 200 and r.json() == {
        "action": "rollback",
        "aliases": {"production": "1", "candidate": "3"},
        "pinned": True,
    }
    assert dash.registry.calls[-1] == (
        "rollback",
        {"version": "1", "actor": "operator-token", "role": "operator", "reason": "v3 drops cubes"},
    )
    refused = dash.client.post("/api/v1/models/3/promote", json={"reason": "retry"}, headers=h)
    assert refused.status_code == 409 and "pinned" in refused.json()["detail"]
    assert dash.client.post("/api/v1/models/unpin", json={"reason": "fixed"}, headers=h).status_code == 200
    assert dash.client.post("/api/v1/models/3/promote", json={"reason": "fixed"}, headers=h).status_code == 200
    calls = [(name, args["actor"], args["role"], args["reason"]) for name, args in dash.registry.calls]
    assert calls == [
        ("rollback", "operator-token", "operator", "v3 drops cubes"),
        ("promote", "operator-token", "operator", "retry"),  # refused by the registry (pinned)
        ("unpin", "operator-token", "operator", "fixed"),
        ("promote", "operator-token", "operator", "fixed"),
    ]
    with dash.services.sessions() as s:  # the registry audits its own actions (tests/dashboards/test_browser_loop.py)
        assert s.scalars(select(AuditEntry)).all() == []


def test_reason_is_required_and_unknown_version_is_404(dash: Dash) -> None:
    h = dash.auth("admin")
    assert dash.client.post("/api/v1/models/pin", json={}, headers=h).status_code == 422
    assert dash.client.post("/api/v1/models/pin", json={"reason": ""}, headers=h).status_code == 422
    assert dash.client.post("/api/v1/models/99/promote", json={"reason": "x"}, headers=h).status_code == 404


def test_without_a_registry_model_routes_answer_503(dash: Dash) -> None:
    app = create_app(dash.settings, transport=dash.transport, registry=None, connect=False)
    client = TestClient(app)
    assert client.get("/api/v1/models", headers=dash.auth("viewer")).status_code == 503
    r = client.post("/api/v1/models/pin", json={"reason": "x"}, headers=dash.auth("operator"))
    assert r.status_code == 503 and "fleet up" in r.json()["detail"]
    app.state.services.stop()
