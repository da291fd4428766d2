"""The dashboard SIGKILLed while 4 robots post through it: nothing blocks, nothing is lost, nothing is kept twice.

Four real-time `RobotRuntime`s publish through `HttpTransport` (fleet.transport.http, the robots with no route to
Kafka) to the dashboard's ingestion endpoint; the dashboard runs as `fleet dashboard` (a child process) and the
recorder as `fleet record`. The dashboard is killed with SIGKILL mid-stream and started again `DOWN_S` later, as
compose's restart policy would. A reader on the trajectories topic counts every copy Kafka holds: a message stored
just before the kill whose 202 never reached its robot is sent again (at least once), and the recorder keeps it
once.
"""

from __future__ import annotations

import secrets
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest

from dashboards import crud
from fleet.db import make_engine, session_factory
from fleet.episodes import EpisodeStore
from fleet.schemas import TrajectorySegment
from fleet.settings import Settings
from fleet.stack.process import free_port
from fleet.transport import TRAJECTORIES
from fleet.transport.http import HttpTransport, HttpTransportConfig
from tests.faults.helpers import ChildService, group_stable, read_from, start_group_at_end, topic_ends, wait_for
from tests.faults.record import record_fault
from tests.faults.robots import CountingTransport, tiny_robot
from tests.faults.test_broker_outage import _recorded

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]
ROBOTS, STEPS, HZ = 4, 30, 20.0  # 30-step episodes (3 segments each) at 20 Hz: 8 segments/s in all
BEFORE_S, DOWN_S, AFTER_S = 4.0, 10.0, 3.0


def test_dashboard_killed_while_4_robots_post_through_it(
    stack: Settings, kafka_bootstrap: str, tmp_path: Path, record_property: Any
) -> None:
    prefix = f"d{uuid.uuid4().hex[:6]}"
    recorder_group = f"recorder-{prefix}"
    start_group_at_end(kafka_bootstrap, recorder_group, [TRAJECTORIES])
    start = topic_ends(kafka_bootstrap, [TRAJECTORIES])
    db_url = f"sqlite:///{tmp_path / 'fleet.db'}"
    port = free_port()
    env = {
        "FLEET_HOME": str(tmp_path / "home"),
        "FLEET_KAFKA_BOOTSTRAP": kafka_bootstrap,
        "FLEET_DATABASE_URL": db_url,
        "FLEET_DASHBOARD_PORT": str(port),
        "FLEET_SECRET_KEY": secrets.token_urlsafe(24),
        "FLEET_METRICS_PORT_RECORDER": "0",
    }
    dashboard = ChildService(["fleet", "dashboard"], env=env, log_path=tmp_path / "dashboard.log").start()
    recorder_db = f"sqlite:///{tmp_path / 'recorder.db'}"  # its own file: two writers on one SQLite file contend
    recorder = ChildService(
        ["fleet.recorder_cli", "--group", recorder_group],
        env={**env, "FLEET_DATABASE_URL": recorder_db},
        log_path=tmp_path / "rec.log",
    )
    url = f"http://127.0.0.1:{port}"

    def healthy() -> bool:
        try:
            return httpx.get(f"{url}/healthz", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    robot_ids = [f"{prefix}-r{i}" for i in range(ROBOTS)]
    transports: list[CountingTransport] = []
    stop = threading.Event()
    threads: list[threading.Thread] = []
    try:
        wait_for(healthy, 90, f"the dashboard at {url}\n{dashboard.log_tail()}")
        recorder.start()
        wait_for(lambda: group_stable(kafka_bootstrap, recorder_group), 60, "the recorder to join its group")
        engine = make_engine(db_url)
        with session_factory(engine)() as s:
            tokens = {
                rid: crud.create_token(s, name=rid, scopes=["robot:produce"], robot_id=rid)[1] for rid in robot_ids
            }
            s.commit()
        engine.dispose()
        for rid in robot_ids:
            config = HttpTransportConfig(
                url=url, robot_id=rid, token=tokens[rid], spool_dir=tmp_path / "spool" / rid, retry_s=0.5, timeout_s=5
            )
            transports.append(CountingTransport(HttpTransport(config)))
        runtimes = [
            tiny_robot(rid, t, control_hz=HZ, steps=STEPS) for rid, t in zip(robot_ids, transports, strict=True)
        ]
        threads = [
            threading.Thread(target=rt.run, kwargs={"stop": stop}, name=f"robot-{i}") for i, rt in enumerate(runtimes)
        ]
        for t in threads:
            t.start()
        time.sleep(BEFORE_S)
        dashboard.kill()
        killed = time.monotonic()
        peak_spooled = 0
        while time.monotonic() - killed < DOWN_S:
            peak_spooled = max(peak_spooled, sum(t.transport.spooled for t in transports))
            time.sleep(0.5)
        dashboard.start()
        wait_for(healthy, 90, f"the dashboard's restart\n{dashboard.log_tail()}")
        back = time.monotonic()
        time.sleep(AFTER_S)
        stop.set()  # robots finish their current episode, so every episode sent is complete
        for t in threads:
            t.join(timeout=30)
        for t in transports:
            assert t.transport.flush(timeout_s=120), "a robot's spool did not drain"
        produced = [seg for t in transports for seg in t.segments]
        episodes = {(r, e) for r, e, _ in produced}
        store = EpisodeStore(tmp_path / "home" / "episodes")
        wait_for(
            lambda: len([1 for r, _ in store.list() if r.startswith(prefix)]) == len(episodes),
            120,
            f"{len(episodes)} episodes recorded",
        )
        time.sleep(2)  # let a late copy (if any) reach the recorder before counting
        stats = [t.transport.stats for t in transports]
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=30)
        for t in transports:
            t.transport.close(timeout_s=5)
        recorder.stop()
        dashboard.stop()

    copies = [(m.robot_id, m.episode_id, m.segment_index) for m in read_from(kafka_bootstrap, start, prefix)
              if isinstance(m, TrajectorySegment)]  # fmt: skip
    rows, finished = _recorded(recorder_db, prefix)
    lost = len(set(produced) - set(copies))
    kept_twice = len(rows) - len(set(rows))
    during = sum(killed <= ts < back for t in transports for ts in t.segment_times)
    outcome = {
        "robots": ROBOTS,
        "down_s": round(back - killed, 1),
        "segments": len(produced),
        "segments_while_down": during,
        "episodes": len(episodes),
        "spooled": sum(st.spooled for st in stats),
        "peak_spooled": peak_spooled,
        "replayed": sum(st.replayed for st in stats),
        "kafka_copies": len(copies),
        "kafka_redelivered": len(copies) - len(set(copies)),
        "recorded_segments": len(rows),
        "max_send_ms": round(max(t.max_send_s for t in transports) * 1000, 2),
    }
    record_property("outcome", outcome)
    record_fault("dashboard_killed_while_robots_post", lost=lost, duplicated=kept_twice, **outcome)
    print("OUTCOME", outcome)

    assert len(produced) == len(set(produced)), "a robot sent a segment twice"
    assert len(episodes) * STEPS // 10 == len(produced), "an episode was sent incomplete"
    assert sum(t.refused for t in transports) == 0 and [f for t in transports for f in t.failed] == []
    assert sum(t.acked for t in transports) == sum(t.sends for t in transports)
    assert during > 0 and peak_spooled > 0, "robots stopped producing, or nothing waited, while the dashboard was down"
    assert outcome["max_send_ms"] < 250, "send() blocked"
    assert lost == 0, f"{lost} segments never reached Kafka"
    assert sorted(rows) == sorted(produced) and finished == len(episodes)
    assert not list((tmp_path / "spool").glob("*/spool-*.log")), "spools drained"
