"""The dashboard's corrections consumer: `fleet.corrections` → review queue rows, idempotent on the correction id."""

from __future__ import annotations

import shutil
import time
import uuid
from pathlib import Path

import pytest
from sqlalchemy import func, select

from dashboards.monitor import CorrectionsMonitor, write_corrections
from fleet.db import Correction, Robot, make_engine, session_factory
from fleet.settings import Settings
from fleet.transport import KafkaTransport, TransportConfig, publish
from tests.dashboards.conftest import Dash
from tests.learner.fakes import correction

pytestmark = pytest.mark.timeout(90)


def test_write_corrections_adds_each_once_and_keeps_reviews(dash: Dash) -> None:
    first = correction("robot-9", "ep-9", "c-9", 3, 4).model_copy(
        update={"reason": "regress: 3.0 cm farther", "channel": "canary"}
    )
    with dash.services.sessions() as s:
        assert write_corrections(s, [first, first]) == 1  # a duplicate inside one batch
    with dash.services.sessions() as s:
        row = s.get(Correction, "c-9")
        assert row is not None and (row.start_step, row.end_step, row.status) == (3, 6, "pending")
        assert (row.task, row.model_version, row.operator) == ("pick", "1", "supervisor:test")
        assert row.reason == "regress: 3.0 cm farther"  # why the takeover fired, for the reviewer
        assert row.channel == "canary"  # drawn by a rollout: its effect on training can be followed
        assert s.get(Robot, "robot-9").embodiment == "panda"  # type: ignore[union-attr]
        row.status = "rejected"
        s.commit()
    with dash.services.sessions() as s:
        assert write_corrections(s, [first]) == 0  # redelivered after its review
        assert s.get(Correction, "c-9").status == "rejected"  # type: ignore[union-attr]
        assert s.scalar(select(func.count()).select_from(Correction)) == 1


@pytest.mark.integration
def test_monitor_fills_the_queue_from_kafka_once(
    stack: Settings, kafka_bootstrap: str, tmp_path: Path, template_db: Path
) -> None:
    shutil.copy(template_db, tmp_path / "fleet.db")
    sessions = session_factory(make_engine(f"sqlite:///{tmp_path / 'fleet.db'}"))
    config = TransportConfig.from_settings(stack, client_id="dashboard-test")
    suffix = uuid.uuid4().hex[:8]
    message = correction(f"robot-{suffix}", f"ep-{suffix}", f"c-{suffix}", 2, 3)
    transport = KafkaTransport(config)
    try:
        publish(transport, message)
        publish(transport, message)  # redelivered (a producer retry, a replayed spool)
        assert transport.flush(timeout_s=30.0)
    finally:
        transport.close()

    def count() -> int:
        with sessions() as s:
            return s.scalar(select(func.count()).select_from(Correction).where(Correction.id == message.correction_id))

    monitor = CorrectionsMonitor(config, sessions=sessions, group_id=f"dashboard-{suffix}")
    monitor.start()
    try:
        deadline = time.monotonic() + 60
        while count() == 0:
            assert time.monotonic() < deadline, "the correction never reached the review queue"
            time.sleep(0.2)
    finally:
        monitor.stop()
    assert count() == 1
    restarted = CorrectionsMonitor(config, sessions=sessions, group_id=f"dashboard-{suffix}")
    restarted.start()
    time.sleep(3)
    restarted.stop()
    assert count() == 1 and restarted.written == 0
