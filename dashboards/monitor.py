"""Background consumer of `fleet.heartbeats`: keeps `FleetState` live and the robots table current.

Every dashboard process sees every heartbeat, so it reads all partitions without a consumer group
(no offsets committed) starting at the end: heartbeats are only worth their latest value, and the
robots table carries the last known state across restarts. Decoding errors are counted and
skipped (the recorder owns dead-lettering). Dirty robots are written to the DB once per interval.
"""

from __future__ import annotations

import logging
import threading
import time
from datetime import UTC, datetime

from kafka import KafkaConsumer, TopicPartition
from kafka.errors import KafkaError
from sqlalchemy.orm import Session, sessionmaker

from dashboards.fleet_state import CommandTracker, FleetState, RobotStatus
from fleet.db import Robot
from fleet.schemas import Heartbeat, SchemaError, decode
from fleet.transport import HEARTBEATS, TransportConfig, ensure_topics

log = logging.getLogger(__name__)


def write_robots(session: Session, robots: list[RobotStatus]) -> None:
    """Upsert the robots table from heartbeat state (one transaction)."""
    for r in robots:
        row = session.get(Robot, r.robot_id)
        if row is None:
            row = Robot(id=r.robot_id, embodiment=r.embodiment)
            session.add(row)
        row.embodiment = r.embodiment
        row.task = r.task_id
        row.state = r.heartbeat_state[:16]
        row.current_version = r.model_version
        row.in_rotation = r.heartbeat_state != "out_of_rotation"
        row.last_seen_at = datetime.fromtimestamp(r.last_seen or time.time(), UTC)
    session.commit()


class HeartbeatMonitor:
    """Thread: poll heartbeats → FleetState + CommandTracker; flush robots to the DB periodically."""

    def __init__(
        self,
        config: TransportConfig,
        *,
        fleet: FleetState,
        commands: CommandTracker,
        sessions: sessionmaker[Session],
        flush_interval_s: float,
    ) -> None:
        self.config = config
        self.fleet = fleet
        self.commands = commands
        self.sessions = sessions
        self.flush_interval_s = flush_interval_s
        self.decode_errors = 0
        self.connected = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="dashboard-heartbeats", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout_s: float = 5.0) -> None:
        self._stop.set()
        self._thread.join(timeout_s)

    def _consumer(self) -> KafkaConsumer:
        ensure_topics(self.config)
        consumer = KafkaConsumer(
            bootstrap_servers=self.config.bootstrap.split(","),
            client_id=f"{self.config.client_id}-heartbeats",
            group_id=None,
            enable_auto_commit=False,
            reconnect_backoff_max_ms=1000,
        )
        partitions = consumer.partitions_for_topic(HEARTBEATS) or set()
        tps = [TopicPartition(HEARTBEATS, p) for p in sorted(partitions)]
        consumer.assign(tps)
        consumer.seek_to_end(*tps)
        for tp in tps:  # resolve the end offsets now, so heartbeats sent from here on are all seen
            consumer.position(tp)
        return consumer

    def _run(self) -> None:
        consumer: KafkaConsumer | None = None
        backoff = 0.5
        next_flush = time.monotonic() + self.flush_interval_s
        while not self._stop.is_set():
            try:
                if consumer is None:
                    consumer = self._consumer()
                    self.connected.set()
                    backoff = 0.5
                batches = consumer.poll(timeout_ms=200, max_records=1000)
            except (KafkaError, OSError) as e:
                log.warning(
                    "heartbeat consumer: Kafka at %s not usable (%s); retry in %.1f s",
                    self.config.bootstrap,
                    e,
                    backoff,
                )
                if consumer is not None:
                    consumer.close()
                    consumer = None
                self._stop.wait(backoff)
                backoff = min(backoff * 2, 10.0)
                continue
            for records in batches.values():
                for record in records:
                    self._handle(record.value or b"")
            if time.monotonic() >= next_flush:
                next_flush = time.monotonic() + self.flush_interval_s
                self._flush()
        if consumer is not None:
            consumer.close()
        self._flush()

    def _handle(self, value: bytes) -> None:
        try:
            hb = decode(value, Heartbeat)
        except SchemaError as e:
            self.decode_errors += 1
            if self.decode_errors in (1, 100) or self.decode_errors % 10_000 == 0:
                log.warning("skipping an undecodable heartbeat (%d so far): %s", self.decode_errors, e)
            return
        assert isinstance(hb, Heartbeat)
        self.fleet.apply(hb)
        self.commands.observe(hb)

    def _flush(self) -> None:
        dirty = self.fleet.take_dirty()
        if not dirty:
            return
        try:
            with self.sessions() as session:
                write_robots(session, dirty)
        except Exception as e:  # the live view must survive a DB hiccup; the next flush retries
            log.warning("could not write %d robots to the database: %s", len(dirty), e)
