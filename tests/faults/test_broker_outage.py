"""Kafka broker SIGKILLed for 30 s while 8 robots stream: nothing blocks, nothing is lost, nothing is doubled.

Eight real `RobotRuntime`s (real-time control loops on a physics-free env) publish through their own
spooling Kafka transports; the recorder runs as `fleet record` (its CLI module, a child process)
and a consumer in the learner's way (group member on the learner's topics) reads alongside. The
broker is killed with SIGKILL mid-stream and started again 30 s later.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

from fleet.db import Episode as EpisodeRow
from fleet.db import Segment as SegmentRow
from fleet.db import make_engine, session_factory
from fleet.episodes import EpisodeStore
from fleet.settings import Settings
from fleet.stack.kafka import KafkaService
from fleet.transport import TRAJECTORIES
from learner.service import TOPICS as LEARNER_TOPICS
from tests.faults.helpers import (
    ChildService,
    StreamReader,
    group_stable,
    kill_service,
    restart_stack,
    start_group_at_end,
    wait_for,
)
from tests.faults.record import record_fault
from tests.faults.robots import SegmentId, TinyFleet

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]
log = logging.getLogger(__name__)
ROBOTS, STEPS, HZ = 8, 30, 50.0  # 8 robots, 30-step episodes (3 segments), 50 Hz: 40 segments/s in all
BEFORE_S, OUTAGE_S, AFTER_S = 3.0, 30.0, 3.0


def _recorded(db_url: str, prefix: str) -> tuple[list[SegmentId], int]:
    """Segment rows and finished episodes the recorder wrote to the DB for our robots."""
    engine = make_engine(db_url)
    try:
        with session_factory(engine)() as s:
            rows: list[Any] = s.execute(
                select(SegmentRow.robot_id, EpisodeRow.episode_id, SegmentRow.segment_index)
                .join(EpisodeRow, SegmentRow.episode_pk == EpisodeRow.id)
                .where(SegmentRow.robot_id.like(f"{prefix}-%"))
            ).all()
            finished = s.scalar(
                select(func.count())
                .select_from(EpisodeRow)
                .where(EpisodeRow.robot_id.like(f"{prefix}-%"), EpisodeRow.ended_at.is_not(None))
            )
    finally:
        engine.dispose()
    return [(r, e, i) for r, e, i in rows], int(finished or 0)


def test_broker_killed_for_30_s_while_8_robots_stream(
    stack: Settings, kafka_bootstrap: str, tmp_path: Path, record_property: Any
) -> None:
    prefix = f"k{uuid.uuid4().hex[:6]}"
    recorder_group, reader_group = f"recorder-{prefix}", f"learner-{prefix}"
    start_group_at_end(kafka_bootstrap, recorder_group, [TRAJECTORIES])
    start_group_at_end(kafka_bootstrap, reader_group, LEARNER_TOPICS)
    db_url = f"sqlite:///{tmp_path / 'recorder.db'}"
    env = {
        "FLEET_HOME": str(tmp_path / "recorder"),
        "FLEET_KAFKA_BOOTSTRAP": kafka_bootstrap,
        "FLEET_DATABASE_URL": db_url,
        "FLEET_METRICS_PORT_RECORDER": "0",  # no fixed metrics port: other stacks may share this machine
    }
    recorder = ChildService(["fleet.recorder_cli", "--group", recorder_group], env=env, log_path=tmp_path / "rec.log")
    supervising = threading.Event()
    recorder.start().supervise(supervising)
    reader = StreamReader(kafka_bootstrap, reader_group, prefix)
    reader.start()
    wait_for(lambda: group_stable(kafka_bootstrap, recorder_group), 60, "the recorder to join its group")
    wait_for(lambda: group_stable(kafka_bootstrap, reader_group), 60, "the reader to join its group")

    fleet = TinyFleet(
        stack.model_copy(update={"home": tmp_path / "robots"}), prefix, ROBOTS, control_hz=HZ, steps=STEPS
    )
    transports = fleet.transports  # spools under <tmp>/robots/spool/
    broker = KafkaService(stack)
    try:
        fleet.start()
        time.sleep(BEFORE_S)
        killed = kill_service(broker)
        peak_spooled = 0
        while time.monotonic() - killed < OUTAGE_S:
            peak_spooled = max(peak_spooled, sum(t.transport.producer.spooled for t in transports))
            time.sleep(0.5)
        back = restart_stack(stack)
        time.sleep(AFTER_S)
        fleet.stop()  # robots finish their current episode, so every episode sent is complete
        stopped = time.monotonic()
        for t in transports:
            assert t.transport.flush(timeout_s=120), f"{t.transport.config.client_id}: spool not drained"
        drained = time.monotonic()
        stats = [t.transport.stats for t in transports]  # kept: closing the transport drops its producer

        produced = fleet.produced
        episodes = {(r, e) for r, e, _ in produced}
        store = EpisodeStore(tmp_path / "recorder" / "episodes")

        def recorded_all() -> bool:
            return len([1 for r, _ in store.list() if r.startswith(prefix)]) == len(episodes)

        wait_for(recorded_all, 120, f"{len(episodes)} episodes recorded")
        reader.wait_for_all(produced, 60)
    finally:
        fleet.close()
        reader.stop()
        supervising.set()
        recorder_exit = recorder.stop()
        if not broker.healthy():
            restart_stack(stack)

    rows, finished = _recorded(db_url, prefix)
    record_fault(
        "broker_killed_while_robots_stream",
        lost=len(set(produced) - set(rows)) + len(set(produced) - set(reader.ids)),
        duplicated=(len(rows) - len(set(rows))) + (len(reader.ids) - len(set(reader.ids))),
        segments=len(produced),
        recorded_segments=len(rows),
        learner_records=len(reader.ids),
    )

    # The robots: never blocked, nothing refused or dropped, everything acknowledged.
    during = fleet.sent_since(killed) - fleet.sent_since(back)
    max_send_ms = max(t.max_send_s for t in transports) * 1000
    assert len(produced) == len(set(produced)), "a robot sent a segment twice"
    assert len(episodes) * STEPS // 10 == len(produced), "an episode was sent incomplete"
    assert sum(t.refused for t in transports) == 0
    assert [f for t in transports for f in t.failed] == []
    assert sum(t.acked for t in transports) == sum(t.sends for t in transports)
    assert sum(st.spooled for st in stats) > 0 and peak_spooled > 0
    assert during > 0, "robots stopped producing while the broker was down"
    assert max_send_ms < 250, f"send() blocked for {max_send_ms:.0f} ms"
    assert not list((tmp_path / "robots" / "spool").glob("*/spool-*.log")), "spools drained"

    # The recorder (`fleet record`): exactly the produced segments and episodes, once each.
    assert recorder_exit == 0 and recorder.restarts == 0, f"recorder exit {recorder_exit}, {recorder.restarts} restarts"
    assert sorted(rows) == sorted(produced)
    assert finished == len(episodes)
    stored = {(r, e) for r, e in store.list() if r.startswith(prefix)}
    assert stored == episodes
    assert all(store.read_meta(r, e).length == STEPS for r, e in stored)

    # The learner's consumer group: every produced segment, none missing, none twice.
    assert set(reader.ids) == set(produced)
    assert len(reader.ids) == len(produced), f"{len(reader.ids) - len(produced)} duplicates reached the learner"

    outcome = {
        "robots": ROBOTS,
        "outage_s": round(back - killed, 1),
        "segments": len(produced),
        "segments_during_outage": during,
        "episodes": len(episodes),
        "messages": sum(t.sends for t in transports),
        "spooled": sum(st.spooled for st in stats),
        "peak_spooled": peak_spooled,
        "replayed": sum(st.replayed for st in stats),
        "recorded_segments": len(rows),
        "reader_records": len(reader.ids),
        "max_send_ms": round(max_send_ms, 2),
        "drain_s": round(drained - stopped, 1),
        "recorder_restarts": recorder.restarts,
        "reader_errors": reader.errors,
    }
    record_property("outcome", outcome)
    print("OUTCOME", outcome)
