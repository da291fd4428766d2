"""Data plane end to end on the real broker: 8 robots × 200 segments → recorder → episode store + DB.

Each test uses fresh robot ids and its own consumer group started at the topic's end, so tests
sharing the session's broker do not see each other's data.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from kafka import KafkaConsumer, TopicPartition
from kafka.structs import OffsetAndMetadata
from sqlalchemy import select

from fleet.db import Episode as EpisodeRow
from fleet.db import Segment as SegmentModel
from fleet.db import make_engine, session_factory
from fleet.db.migrate import upgrade
from fleet.episodes import EpisodeStore
from fleet.recorder import Recorder, RecorderConfig
from fleet.recorder_db import SqlEpisodeIndex
from fleet.transport import DEADLETTER, TRAJECTORIES, KafkaTransport, TransportConfig, ensure_topics, publish
from tests.data.factories import make_segment

pytestmark = pytest.mark.integration
log = logging.getLogger(__name__)
ROBOTS, SEGMENTS, PER_EPISODE, STEPS = 8, 200, 10, 10  # STEPS per segment (make_segment's default)


def start_group_at_end(bootstrap: str, group_id: str) -> None:
    """Commit the current end of fleet.trajectories for a new group (earlier tests' data is not ours)."""
    ensure_topics(TransportConfig(bootstrap=bootstrap))
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, group_id=group_id, enable_auto_commit=False)
    try:
        partitions = [TopicPartition(TRAJECTORIES, p) for p in sorted(consumer.partitions_for_topic(TRAJECTORIES))]
        ends = consumer.end_offsets(partitions)
        consumer.commit({tp: OffsetAndMetadata(offset, "", -1) for tp, offset in ends.items()})
    finally:
        consumer.close(autocommit=False)


def run_robots(bootstrap: str, prefix: str, spool_root: Path, *, pace_s: float) -> list[threading.Thread]:
    """8 producer threads, each its own robot with its own transport and spool; returns the threads."""

    def robot(i: int) -> None:
        robot_id = f"{prefix}-r{i}"
        transport = KafkaTransport(
            TransportConfig(bootstrap=bootstrap, client_id=robot_id, spool_dir=spool_root / robot_id, stall_s=2.0)
        )
        for n in range(SEGMENTS):
            episode, index = divmod(n, PER_EPISODE)
            publish(transport, make_segment(robot_id, f"ep-{episode:03d}", index, segments_per_episode=PER_EPISODE))
            time.sleep(pace_s)
        assert transport.flush(timeout_s=120), f"{robot_id}: not everything delivered"
        transport.close()

    threads = [threading.Thread(target=robot, args=(i,), name=f"robot-{i}") for i in range(ROBOTS)]
    for t in threads:
        t.start()
    return threads


class RecorderThread:
    """A recorder in a thread, restarted (like a supervisor would) if it raises."""

    def __init__(self, bootstrap: str, group_id: str, root: Path, db_url: str) -> None:
        upgrade(db_url)
        self.index = SqlEpisodeIndex(session_factory(make_engine(db_url)))
        self.config = RecorderConfig(store_dir=root / "store", staging_dir=root / "staging", group_id=group_id)
        self.bootstrap = bootstrap
        self.restarts = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="recorder")
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            transport = KafkaTransport(TransportConfig(bootstrap=self.bootstrap, client_id="test-recorder"))
            try:
                recorder = Recorder(self.config, transport=transport, index=self.index)
                try:
                    recorder.run(self._stop.is_set)
                finally:
                    recorder.close()
            except Exception as e:
                self.restarts += 1
                log.warning("recorder crashed (%s); restarting", e)
                time.sleep(1.0)
            finally:
                transport.close(timeout_s=5)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=60)


def wait_for(condition: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")
        time.sleep(0.5)


def ours(store: EpisodeStore, prefix: str) -> list[tuple[str, str]]:
    return [(r, e) for r, e in store.list() if r.startswith(prefix + "-")]


def check_exactly_once(store_dir: Path, db_url: str, prefix: str) -> None:
    """Store and DB hold exactly ROBOTS × SEGMENTS segments, in order per robot, none duplicated."""
    store = EpisodeStore(store_dir)
    episodes = ours(store, prefix)
    assert len(episodes) == ROBOTS * SEGMENTS // PER_EPISODE
    steps = PER_EPISODE * STEPS
    for robot_id, episode_id in episodes:
        ep = store.read(robot_id, episode_id, frames=False)
        assert ep.meta.length == steps
        np.testing.assert_array_equal(ep.proprio[:, 0], np.arange(steps))  # segment order within the episode
    engine = make_engine(db_url)
    try:
        with session_factory(engine)() as s:
            rows: list[Any] = s.execute(
                select(
                    SegmentModel.robot_id, EpisodeRow.episode_id, SegmentModel.segment_index, SegmentModel.kafka_offset
                )
                .join(EpisodeRow, SegmentModel.episode_pk == EpisodeRow.id)
                .where(SegmentModel.robot_id.like(f"{prefix}-%"))
            ).all()
            finished = s.scalars(
                select(EpisodeRow).where(EpisodeRow.robot_id.like(f"{prefix}-%"), EpisodeRow.ended_at.is_not(None))
            ).all()
    finally:
        engine.dispose()
    assert len(rows) == ROBOTS * SEGMENTS
    assert len({(r, e, i) for r, e, i, _ in rows}) == ROBOTS * SEGMENTS
    assert len(finished) == ROBOTS * SEGMENTS // PER_EPISODE
    for i in range(ROBOTS):  # Kafka kept each robot's segments in production order
        mine = sorted((e, idx, off) for r, e, idx, off in rows if r == f"{prefix}-r{i}")
        offsets = [off for _, _, off in mine]
        assert offsets == sorted(offsets), f"robot {i}: segments reached Kafka out of order"


def _setup(kafka_bootstrap: str, tmp_path: Path) -> tuple[str, str, str]:
    prefix = f"t{uuid.uuid4().hex[:6]}"
    group_id = f"recorder-{prefix}"
    start_group_at_end(kafka_bootstrap, group_id)
    return prefix, group_id, f"sqlite:///{tmp_path / 'fleet.db'}"


@pytest.mark.timeout(240)
def test_eight_robots_exactly_once(kafka_bootstrap: str, tmp_path: Path) -> None:
    prefix, group_id, db_url = _setup(kafka_bootstrap, tmp_path)
    recorder = RecorderThread(kafka_bootstrap, group_id, tmp_path, db_url)
    try:
        for t in run_robots(kafka_bootstrap, prefix, tmp_path / "spool", pace_s=0.005):
            t.join(timeout=120)
        wait_for(lambda: len(ours(EpisodeStore(tmp_path / "store"), prefix)) == 160, 120, "160 episodes")
    finally:
        recorder.stop()
    check_exactly_once(tmp_path / "store", db_url, prefix)
    assert recorder.restarts == 0


@pytest.mark.timeout(480)  # the broker's restart alone may take up to 150 s on a loaded machine
def test_broker_down_for_ten_seconds_mid_stream(kafka_bootstrap: str, kafka_broker: Any, tmp_path: Path) -> None:
    prefix, group_id, db_url = _setup(kafka_bootstrap, tmp_path)
    recorder = RecorderThread(kafka_bootstrap, group_id, tmp_path, db_url)
    try:
        threads = run_robots(kafka_bootstrap, prefix, tmp_path / "spool", pace_s=0.1)  # ~20 s of production
        time.sleep(5)
        kafka_broker.stop()
        time.sleep(10)
        spooled = sum(len(list(p.glob("spool-*.log"))) for p in (tmp_path / "spool").iterdir())
        kafka_broker.start()
        for t in threads:
            t.join(timeout=180)
        wait_for(lambda: len(ours(EpisodeStore(tmp_path / "store"), prefix)) == 160, 120, "160 episodes")
    finally:
        recorder.stop()
    assert spooled > 0, "the outage should have sent robots to their disk spools"
    check_exactly_once(tmp_path / "store", db_url, prefix)
    assert not any((tmp_path / "spool").glob("*/spool-*.log")), "spools drained after replay"


@pytest.mark.timeout(300)
def test_recorder_killed_mid_stream_neither_loses_nor_duplicates(kafka_bootstrap: str, tmp_path: Path) -> None:
    prefix, group_id, db_url = _setup(kafka_bootstrap, tmp_path)
    home = tmp_path / "home"
    env = {
        **os.environ,
        "FLEET_HOME": str(home),
        "FLEET_KAFKA_BOOTSTRAP": kafka_bootstrap,
        "FLEET_DATABASE_URL": db_url,
    }
    command = [sys.executable, "-m", "fleet.recorder_cli", "--group", group_id]

    def start() -> subprocess.Popen[bytes]:
        return subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=open(tmp_path / "rec.log", "ab"))

    store = EpisodeStore(home / "episodes")
    first = start()
    second: subprocess.Popen[bytes] | None = None
    try:
        threads = run_robots(kafka_bootstrap, prefix, tmp_path / "spool", pace_s=0.03)  # ~6 s of production
        wait_for(lambda: len(ours(store, prefix)) >= 20, 60, "the first recorder to record some episodes")
        first.send_signal(signal.SIGKILL)  # no clean-up at all: mid-batch, mid-episode
        first.wait(timeout=10)
        second = start()
        for t in threads:
            t.join(timeout=120)
        wait_for(lambda: len(ours(store, prefix)) == 160, 150, "160 episodes after the restart")
        time.sleep(2)  # let a duplicate (if any) surface before counting
    finally:
        for proc in (first, second):
            if proc is not None and proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                proc.wait(timeout=30)
    check_exactly_once(home / "episodes", db_url, prefix)


@pytest.mark.timeout(120)
def test_garbage_on_the_real_broker_lands_in_the_dead_letter_topic(kafka_bootstrap: str, tmp_path: Path) -> None:
    prefix, group_id, _ = _setup(kafka_bootstrap, tmp_path)
    config = TransportConfig(bootstrap=kafka_bootstrap, client_id=prefix)
    watcher = KafkaConsumer(bootstrap_servers=kafka_bootstrap, enable_auto_commit=False)
    partitions = [TopicPartition(DEADLETTER, p) for p in sorted(watcher.partitions_for_topic(DEADLETTER))]
    watcher.assign(partitions)
    watcher.seek_to_end(*partitions)
    for tp in partitions:
        watcher.position(tp)  # resolve "end" now, before the dead letter is written
    robots = KafkaTransport(config)
    robots.send(TRAJECTORIES, b"\xc1 not a segment", key=f"{prefix}-r0")
    publish(robots, make_segment(f"{prefix}-r0", "ep-000", 0, segments_per_episode=1))
    assert robots.flush(30)
    transport = KafkaTransport(config)
    recorder = Recorder(
        RecorderConfig(store_dir=tmp_path / "store", staging_dir=tmp_path / "staging", group_id=group_id),
        transport=transport,
        index=None,
    )
    dead: list[Any] = []
    try:
        deadline = time.monotonic() + 60
        while recorder.episodes_recorded < 1 and time.monotonic() < deadline:
            recorder.step()
        while not dead and time.monotonic() < deadline:
            dead.extend(r for records in watcher.poll(timeout_ms=500).values() for r in records)
    finally:
        recorder.close()
        transport.close()
        robots.close()
        watcher.close()
    [letter] = [r for r in dead if r.key == f"{prefix}-r0".encode()]
    headers = dict(letter.headers)
    assert letter.value == b"\xc1 not a segment"
    assert headers["fleet.source.topic"] == TRAJECTORIES.encode()
    assert b"not msgpack" in headers["fleet.reason"]
    assert EpisodeStore(tmp_path / "store").list() == [(f"{prefix}-r0", "ep-000")]


@pytest.mark.timeout(120)
def test_spool_left_by_a_previous_run_is_replayed_in_order(kafka_bootstrap: str, tmp_path: Path) -> None:
    """A robot that ran (and exited) while the broker was unreachable delivers its spool on the next start."""
    prefix = f"t{uuid.uuid4().hex[:6]}"
    ensure_topics(TransportConfig(bootstrap=kafka_bootstrap))
    watcher = KafkaConsumer(bootstrap_servers=kafka_bootstrap, enable_auto_commit=False)
    partitions = [TopicPartition(TRAJECTORIES, p) for p in sorted(watcher.partitions_for_topic(TRAJECTORIES))]
    watcher.assign(partitions)
    watcher.seek_to_end(*partitions)
    for tp in partitions:
        watcher.position(tp)
    spool = tmp_path / "spool"
    offline = KafkaTransport(TransportConfig(bootstrap="127.0.0.1:9", spool_dir=spool, connect_timeout_s=0.5))
    for n in range(50):
        offline.send(TRAJECTORIES, f"{n}".encode(), key=f"{prefix}-r0")
    offline.close(timeout_s=1)  # nothing delivered: all 50 stay in the spool on disk
    online = KafkaTransport(TransportConfig(bootstrap=kafka_bootstrap, spool_dir=spool))
    online.send(TRAJECTORIES, b"50", key=f"{prefix}-r0")  # a new message queues behind the old spool
    assert online.flush(60)
    online.close()
    seen: list[bytes] = []
    deadline = time.monotonic() + 30
    while len(seen) < 51 and time.monotonic() < deadline:
        for records in watcher.poll(timeout_ms=500).values():
            seen.extend(r.value for r in records if r.key == f"{prefix}-r0".encode())
    watcher.close()
    assert seen == [f"{n}".encode() for n in range(51)]
    assert not list(spool.glob("spool-*.log"))


def test_a_checkpoints_offsets_win_over_the_groups_committed_ones(kafka_bootstrap: str) -> None:
    """`start_at` rewinds a group member to where its owner's checkpoint stands, whatever the group committed
    (the learner falling back to an older checkpoint re-reads what the newer, unreadable one had consumed)."""
    group = f"start-at-{uuid.uuid4().hex[:8]}"
    start_group_at_end(kafka_bootstrap, group)
    config = TransportConfig(bootstrap=kafka_bootstrap, client_id=group)
    transport = KafkaTransport(config)
    robot = f"start-at-{uuid.uuid4().hex[:6]}"  # one key: one partition
    for n in range(6):
        publish(transport, make_segment(robot, "ep-000", n, segments_per_episode=6))
    assert transport.flush(timeout_s=30)

    def read_all(start_at: dict[tuple[str, int], int] | None = None) -> list[Any]:
        consumer = transport.consumer(group_id=group, topics=[TRAJECTORIES], start_at=start_at)
        got: list[Any] = []
        deadline = time.monotonic() + 60
        try:
            while time.monotonic() < deadline and len(got) < 6:
                records = [r for r in consumer.poll(timeout_s=0.5, max_records=100) if r.key == robot.encode()]
                got.extend(records)
                if records:
                    consumer.commit(records)
                if got and not records:
                    break
        finally:
            consumer.close()
        return got

    first = read_all()
    assert len(first) == 6  # the group consumed and committed all six
    partition, offsets = first[0].partition, [r.offset for r in first]
    rewound = read_all(start_at={(TRAJECTORIES, partition): offsets[2]})
    assert [r.offset for r in rewound] == offsets[2:]  # from the checkpoint's offset on, not from the group's end
    transport.close()


@pytest.mark.timeout(180)
def test_a_member_commits_the_offsets_it_is_given_and_sees_the_group_reassign(kafka_bootstrap: str) -> None:
    """`commit_offsets` commits short of what was read (the recorder's episodes held in memory: a restart reads
    them again), and `assignment()` moves to a new generation when another member joins and takes partitions."""
    group = f"commit-at-{uuid.uuid4().hex[:8]}"
    start_group_at_end(kafka_bootstrap, group)
    transport = KafkaTransport(TransportConfig(bootstrap=kafka_bootstrap, client_id=group))
    robot = f"commit-at-{uuid.uuid4().hex[:6]}"  # one key: one partition
    for n in range(6):
        publish(transport, make_segment(robot, "ep-000", n, segments_per_episode=6))
    assert transport.flush(timeout_s=30)

    def ours(consumer: Any, want: int) -> list[Any]:
        got: list[Any] = []
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and len(got) < want:
            got += [r for r in consumer.poll(timeout_s=0.5, max_records=100) if r.key == robot.encode()]
        return got

    first = transport.consumer(group_id=group, topics=[TRAJECTORIES])
    read = ours(first, 6)
    assert len(read) == 6
    where = (TRAJECTORIES, read[0].partition)
    generation, held = first.assignment()
    assert generation >= 1 and where in held
    first.commit_offsets({where: read[2].offset})  # the first two only: the rest is held in memory
    second = transport.consumer(group_id=group, topics=[TRAJECTORIES])
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline and not (first.assignment()[0] > generation and second.assignment()[1]):
        first.poll(timeout_s=0.2, max_records=1)  # a member rejoins the group from its poll
        second.poll(timeout_s=0.2, max_records=1)
    (_, mine), (_, theirs) = first.assignment(), second.assignment()
    assert first.assignment()[0] > generation and mine and theirs
    assert not mine & theirs and mine | theirs == held
    first.close()
    second.close()
    third = transport.consumer(group_id=group, topics=[TRAJECTORIES])
    assert [r.offset for r in ours(third, 4)] == [r.offset for r in read[2:]]  # from the offset given on
    third.close()
    transport.close()
