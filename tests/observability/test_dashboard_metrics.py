"""The dashboard's `/metrics`: Prometheus text that parses, with the fleet's metrics, open or behind a token."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families
from pydantic import SecretStr

from dashboards.app import create_app
from fleet.db.migrate import upgrade
from fleet.settings import Settings
from fleet.transport import MessageLoop
from tests.dashboards.factories import heartbeat
from tests.data.fakes import FakeTransport

pytestmark = pytest.mark.timeout(120)

# Families every fleet process exports (empty until that process does the work), by their parsed names.
FLEET_FAMILIES = {
    "fleet_dead_letters",
    "fleet_recorder_segments_consumed",
    "fleet_recorder_segments_recorded",
    "fleet_recorder_episodes_recorded",
    "fleet_learner_messages_ingested",
    "fleet_learner_updates",
    "fleet_learner_updates_per_second",
    "fleet_learner_versions_published",
    "fleet_learner_published_version",
    "fleet_producer_messages",
    "fleet_spool_pending_records",
    "fleet_spool_pending_bytes",
    "fleet_consumer_lag_records",
    "fleet_robot_ticks",
    "fleet_robot_missed_ticks",
    "fleet_robot_segments_produced",
    "fleet_robot_model_version",
    "fleet_robot_reload_seconds",
    "fleet_dashboard_robots",
    "fleet_dashboard_robot_model_version",
    "fleet_dashboard_heartbeats",
}


def _client(tmp_path: Path, token: str | None = None) -> Iterator[TestClient]:
    db = f"sqlite:///{tmp_path / 'fleet.db'}"
    upgrade(db)
    settings = Settings(
        home=tmp_path, database_url=db, secret_key=SecretStr("test-secret-key-0123456789abcdef"),
        metrics_token=SecretStr(token) if token else None,
    )  # fmt: skip
    with TestClient(create_app(settings, transport=FakeTransport(), connect=False)) as client:
        yield client


@pytest.fixture()
def client(tmp_path: Path) -> Iterator[TestClient]:
    yield from _client(tmp_path)


def _samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def test_metrics_parse_and_carry_the_fleet_view(client: TestClient) -> None:
    fleet = client.app.state.services.fleet  # type: ignore[attr-defined]
    fleet.apply(heartbeat("robot-1", version="3"))
    fleet.apply(heartbeat("robot-2", version="2"))
    fleet.apply(heartbeat("robot-2", version="2", state="paused"))
    # A record dead-lettered in this process shows up with its group and reason category.
    transport = FakeTransport()
    transport.send("fleet.trajectories", b"not a fleet message", key="robot-1")
    loop = MessageLoop(transport, group_id="obs-dash", topics=["fleet.trajectories"], handler=lambda m, r: None)
    loop.step()

    r = client.get("/metrics")  # no session, no token: open while FLEET_METRICS_TOKEN is unset
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("text/plain")
    families = {f.name: f for f in text_string_to_metric_families(r.text)}
    assert set(families) >= FLEET_FAMILIES, FLEET_FAMILIES - set(families)
    assert "process_cpu_seconds" in families  # process metrics of the dashboard itself
    samples = _samples(r.text)
    assert samples[("fleet_dashboard_robot_model_version", (("robot", "robot-1"),))] == 3
    assert samples[("fleet_dashboard_robot_model_version", (("robot", "robot-2"),))] == 2
    assert samples[("fleet_dashboard_robots", (("state", "acting"),))] == 1
    assert samples[("fleet_dashboard_robots", (("state", "paused"),))] == 1
    assert samples[("fleet_dashboard_heartbeats_total", ())] == 3
    assert samples[("fleet_dead_letters_total", (("group", "obs-dash"), ("reason", "undecodable")))] == 1
    assert loop.stats.dead_lettered == 1


def test_metrics_want_the_scrape_token_once_one_is_set(tmp_path: Path) -> None:
    for client in _client(tmp_path, token="scrape-token-0123456789"):
        assert client.get("/metrics").status_code == 401
        assert client.get("/metrics", headers={"Authorization": "Bearer wrong"}).status_code == 401
        r = client.get("/metrics", headers={"Authorization": "Bearer scrape-token-0123456789"})
        assert r.status_code == 200 and "fleet_dashboard_robots" in r.text
        assert client.get("/healthz").status_code == 200  # the token guards /metrics only


def test_open_metrics_hold_no_secret_labels(client: TestClient) -> None:
    """What is open must stay harmless: no label names that could carry users, tokens or free text."""
    allowed = {"robot", "group", "reason", "topic", "client", "outcome", "gate", "state", "le"}
    families = text_string_to_metric_families(client.get("/metrics").text)
    fleet_labels = {k for f in families if f.name.startswith("fleet_") for s in f.samples for k in s.labels}
    assert fleet_labels <= allowed
