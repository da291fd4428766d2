"""Background Kafka consumers of the dashboard: live heartbeats and the corrections review queue.

`HeartbeatMonitor` keeps `FleetState` live and the robots table current. Every dashboard process
sees every heartbeat, so it reads all partitions without a consumer group (no offsets committed)
starting at the end: heartbeats are only worth their latest value, and the robots table carries the
last known state across restarts. Dirty robots are written to the DB once per interval.

`CommandFeed` keeps each robot's latest commands from `fleet.commands` (live, from the end, like heartbeats) for
robots that cannot reach Kafka: they fetch theirs over HTTPS (`GET /api/v1/robots/{id}/commands`), whichever
dashboard process or command line issued them.

`CorrectionsMonitor` turns `fleet.corrections` into rows of the `corrections` table (the review
queue). It is a consumer group (`DashboardConfig.corrections_group`, from the earliest offset on
first start) that commits only after the rows are written, and the write is idempotent on the
correction id, so redeliveries, restarts and several dashboard processes never duplicate a row.

Each is a `MessageLoop` that reads beside the streams' owners: it counts and skips undecodable messages (the
recorder owns dead-lettering), and its `ConsumerThread` rebuilds it with bounded backoff when the broker, or the
database a batch is written to, is unusable.
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from datetime import UTC, datetime

from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from dashboards.fleet_state import CommandTracker, FleetState, RobotStatus
from fleet.db import Correction as CorrectionRow
from fleet.db import Robot
from fleet.schemas import Command, Correction, Heartbeat, Message, SchemaError
from fleet.transport import (
    COMMANDS,
    CORRECTIONS,
    HEARTBEATS,
    ConsumerThread,
    KafkaTransport,
    MessageLoop,
    Record,
    Transport,
    TransportConfig,
    ensure_topics,
)

log = logging.getLogger(__name__)


_KEY_CHARS = 64  # robots.id and corrections.id / episode_id / task (String(64))
_VERSION_CHARS = 32  # model_version columns (String(32))
_DB_INT_MAX = 2**31 - 1  # corrections.start_step / end_step (INTEGER)


def _text(value: str | None, limit: int) -> str | None:
    """Free text from a message as a column takes it: no NUL (PostgreSQL refuses it), at most `limit` characters."""
    return None if value is None else value.replace("\x00", "")[:limit]


def _when(value: float | None) -> datetime:
    """A message's wall-clock time; now when it is no usable time (NaN, infinite, beyond the calendar)."""
    try:
        return datetime.fromtimestamp(value if value is not None else time.time(), UTC)
    except (ValueError, OverflowError, OSError):
        return datetime.now(UTC)


def _unfit(c: Correction) -> str | None:
    """Why a correction cannot be a review-queue row as it is, or None. Such a message is schema-valid, so it
    is skipped with a warning here: writing it would fail the whole batch on PostgreSQL, over and over."""
    for name, value in (("correction_id", c.correction_id), ("robot_id", c.robot_id), ("episode_id", c.episode_id)):
        if len(value) > _KEY_CHARS:
            return f"{name} has {len(value)} characters (the review queue keeps ids of up to {_KEY_CHARS})"
    if c.step_end - 1 > _DB_INT_MAX:
        return f"steps {c.step_start}..{c.step_end - 1} are beyond the review queue's range (max {_DB_INT_MAX})"
    return None


def write_robots(session: Session, robots: list[RobotStatus]) -> None:
    """Upsert the robots table from heartbeat state (one transaction).

    Values are cut to what the columns hold; a robot id longer than the table's key stays in the live view only."""
    for r in robots:
        if len(r.robot_id) > _KEY_CHARS:
            log.warning("robot id %.80r… is too long for the robots table; shown live, not stored", r.robot_id)
            continue
        row = session.get(Robot, r.robot_id)
        embodiment = _text(r.embodiment, 32) or "unknown"
        if row is None:
            row = Robot(id=r.robot_id, embodiment=embodiment)
            session.add(row)
        row.embodiment = embodiment
        row.task = _text(r.task_id, _KEY_CHARS)
        row.state = r.heartbeat_state[:16]
        row.current_version = _text(r.model_version, _VERSION_CHARS)
        row.in_rotation = r.heartbeat_state != "out_of_rotation"
        row.last_seen_at = _when(r.last_seen)
    session.commit()


def write_corrections(session: Session, corrections: list[Correction]) -> int:
    """Insert review-queue rows for corrections not seen before (one transaction); returns how many were new.

    A correction already in the table keeps its row untouched (its review status above all). Its robot
    gets a row first if no heartbeat announced it yet (the table references robots). A correction that cannot
    be stored (see `_unfit`) is skipped with a warning instead of failing the batch forever.
    """
    new = 0
    for c in {c.correction_id: c for c in corrections}.values():
        problem = _unfit(c)
        if problem is not None:
            log.warning("correction %.80r not queued for review: %s", c.correction_id, problem)
            continue
        if session.get(CorrectionRow, c.correction_id) is not None:
            continue
        task = _text(c.task_id, _KEY_CHARS) or ""
        if session.get(Robot, c.robot_id) is None:
            session.add(Robot(id=c.robot_id, embodiment=c.embodiment[:32], task=task, state="offline"))
            session.flush()  # no ORM relationship orders the two inserts
        session.add(
            CorrectionRow(
                id=c.correction_id,
                robot_id=c.robot_id,
                episode_id=c.episode_id,
                task=task,
                model_version=_text(c.model_version, _VERSION_CHARS),
                operator=_text(c.operator, 64) or "",
                reason=_text(c.reason, 200) or "",
                channel=_text(c.channel, 32),
                start_step=c.step_start,
                end_step=c.step_end - 1,  # the table's end step is inclusive, the message's is one past
                status="pending",
                created_at=_when(c.created_at),
            )
        )
        new += 1
    session.commit()
    return new


class _Monitor:
    """One of the dashboard's background readers: a `MessageLoop` over its topic that skips what it cannot use,
    stepped by a `ConsumerThread` (rebuilt with bounded backoff after any failure)."""

    name = "consumer"
    topic = ""
    kind: type[Message] = Message
    group_id: str | None = None  # None: every partition from its end, nothing committed (a live view)

    def __init__(self, config: TransportConfig) -> None:
        self.config = config
        self.loop: MessageLoop | None = None
        self.thread = ConsumerThread(f"dashboard-{self.name}", connect=self._connect, tick=self._tick)

    @property
    def connected(self) -> threading.Event:
        return self.thread.connected

    @property
    def decode_errors(self) -> int:
        """Messages of the current loop skipped as undecodable or not of this topic's kind."""
        return 0 if self.loop is None else self.loop.stats.skipped

    def start(self) -> None:
        self.thread.start()

    def stop(self, timeout_s: float = 5.0) -> None:
        self.thread.stop(timeout_s)

    def _connect(self) -> MessageLoop:
        ensure_topics(self.config)
        return self.reader(KafkaTransport(self.config, create_topics=False))

    def reader(self, transport: Transport) -> MessageLoop:
        """This monitor's loop on `transport` (the real one from the thread; tests pass their own)."""
        self.loop = MessageLoop(
            transport, group_id=self.group_id, topics=[self.topic], handler=self._checked, before_commit=self._flush,
            poll_timeout_s=0.2, max_records=1000, dead_letters=False, dedup_capacity=0,
        )  # fmt: skip
        return self.loop

    def _checked(self, message: Message, record: Record) -> None:
        if not isinstance(message, self.kind):
            raise SchemaError(f"{message.KIND} message on {record.topic}")
        self._handle(message)

    def _handle(self, message: Message) -> None:
        raise NotImplementedError

    def _flush(self) -> None:
        """After every batch, before its commit (a batch's database write)."""

    def _tick(self) -> None:
        """Called after every poll (periodic work such as DB flushes)."""


class HeartbeatMonitor(_Monitor):
    """Thread: poll heartbeats → FleetState + CommandTracker; flush robots to the DB periodically."""

    name, topic, kind = "heartbeats", HEARTBEATS, Heartbeat

    def __init__(
        self,
        config: TransportConfig,
        *,
        fleet: FleetState,
        commands: CommandTracker,
        sessions: sessionmaker[Session],
        flush_interval_s: float,
    ) -> None:
        super().__init__(config)
        self.fleet = fleet
        self.commands = commands
        self.sessions = sessions
        self.flush_interval_s = flush_interval_s
        self._next_flush = time.monotonic() + flush_interval_s

    def _handle(self, message: Message) -> None:
        assert isinstance(message, Heartbeat)
        self.fleet.apply(message)
        self.commands.observe(message)

    def _tick(self) -> None:
        if time.monotonic() < self._next_flush and not self.thread.wait(0):
            return
        self._next_flush = time.monotonic() + self.flush_interval_s
        dirty = self.fleet.take_dirty()
        if not dirty:
            return
        try:
            with self.sessions() as session:
                write_robots(session, dirty)
        except Exception as e:  # the live view must survive a DB hiccup; the next flush retries
            log.warning("could not write %d robots to the database: %s", len(dirty), e)


class CorrectionsMonitor(_Monitor):
    """Thread: poll `fleet.corrections` (consumer group) → rows of the review queue, then commit. A database that
    refuses the batch stops the loop with nothing committed: the thread reads the batch again once it reconnects."""

    name, topic, kind = "corrections", CORRECTIONS, Correction

    def __init__(self, config: TransportConfig, *, sessions: sessionmaker[Session], group_id: str) -> None:
        super().__init__(config)
        self.sessions = sessions
        self.group_id = group_id  # a new dashboard's group starts at the earliest offset: every correction still kept
        self.written = 0  # new rows since start
        self._batch: list[Correction] = []

    def reader(self, transport: Transport) -> MessageLoop:
        self._batch = []  # what a failed loop had polled is read again
        return super().reader(transport)

    def _handle(self, message: Message) -> None:
        assert isinstance(message, Correction)
        self._batch.append(message)

    def _flush(self) -> None:
        corrections, self._batch = self._batch, []
        try:
            self.written += self._write(corrections)
        except Exception as e:
            log.warning("could not write %d corrections to the database (%s)", len(corrections), e)
            raise

    def _write(self, corrections: list[Correction]) -> int:
        for attempt in range(2):
            try:
                with self.sessions() as session:
                    return write_corrections(session, corrections)
            except IntegrityError:  # another dashboard inserted one of them meanwhile; the retry skips it
                if attempt:
                    raise
        return 0


class CommandFeed(_Monitor):
    """Thread: poll `fleet.commands` (live) → each robot's latest commands, for robots that fetch them over HTTPS."""

    name, topic, kind = "commands", COMMANDS, Command

    def __init__(self, config: TransportConfig, *, keep: int = 50) -> None:
        super().__init__(config)
        self.keep = keep
        self._by_robot: dict[str, collections.deque[Command]] = {}
        self._lock = threading.Lock()

    def _handle(self, message: Message) -> None:
        assert isinstance(message, Command)
        self.add(message)

    def add(self, command: Command) -> None:
        with self._lock:
            self._by_robot.setdefault(command.robot_id, collections.deque(maxlen=self.keep)).append(command)

    def since(self, robot_id: str, after: float) -> list[Command]:
        """The robot's commands created after `after` (its clock's seconds), oldest first."""
        with self._lock:
            return [c for c in self._by_robot.get(robot_id, ()) if c.created_at > after]
