"""Recorder above a fake transport, with the real DB: order, idempotency, restarts, rejects."""

from __future__ import annotations

import random
import threading
import time
import zlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from fleet.db import Episode as EpisodeRow
from fleet.db import Segment as SegmentRowModel
from fleet.db import make_engine, session_factory
from fleet.db.migrate import upgrade
from fleet.recorder import Recorder, RecorderConfig
from fleet.recorder_db import FinishedEpisode, SegmentRow, SqlEpisodeIndex
from fleet.schemas import Command, decode_segment_keeping_frames, encode
from fleet.transport import DEADLETTER, TRAJECTORIES, publish
from tests.data.factories import make_segment
from tests.data.fakes import FakeBroker, FakeConsumer, FakeTransport


@pytest.fixture()
def sessions(db_url: str) -> Iterator[sessionmaker[Session]]:
    upgrade(db_url)
    engine = make_engine(db_url)
    yield session_factory(engine)
    engine.dispose()


def _config(tmp_path: Path) -> RecorderConfig:
    return RecorderConfig(store_dir=tmp_path / "store", staging_dir=tmp_path / "staging")


def _staged(tmp_path: Path) -> RecorderConfig:
    """Every episode staged at its first batch, as one held past `max_pin_s` is."""
    return replace(_config(tmp_path), max_pin_s=0.0)


HOLDING = pytest.mark.parametrize("staged", [False, True], ids=["held", "staged"])


def _drain(recorder: Recorder) -> None:
    while recorder.step():
        pass


def _unlinks_done(recorder: Recorder) -> None:
    """Wait for the staging logs the recorder has handed to its unlinking thread (one thread: first in, first out)."""
    recorder._unlinker.submit(lambda: None).result(timeout=30)


def _assert_in_order(recorder: Recorder, robot: str, episode: str, steps: int) -> None:
    ep = recorder.store.read(robot, episode)
    assert ep.meta.length == steps
    np.testing.assert_array_equal(ep.proprio[:, 0], np.arange(steps))
    np.testing.assert_array_equal(ep.frames["front"][:, 0, 0, 0], np.arange(steps) % 256)


@pytest.mark.parametrize("max_kept_mb", [256.0, 0.0], ids=["from-memory", "from-staging"])
def test_shuffled_and_duplicated_segments_make_whole_ordered_episodes(
    tmp_path: Path, sessions: sessionmaker[Session], max_kept_mb: float
) -> None:
    transport = FakeTransport()
    segs = [
        make_segment(f"robot-{r}", f"ep-{e}", i, steps=5, segments_per_episode=4, size=8)
        for r in range(2)
        for e in range(3)
        for i in range(4)
    ]
    order = segs + random.Random(0).sample(segs, 6)  # redeliveries
    random.Random(1).shuffle(order)
    for seg in order:
        publish(transport, seg)
    config = replace(_config(tmp_path), max_kept_mb=max_kept_mb, max_records=7)  # episodes span batches
    recorder = Recorder(config, transport=transport, index=SqlEpisodeIndex(sessions))
    _drain(recorder)
    assert recorder.store.list() == sorted((f"robot-{r}", f"ep-{e}") for r in range(2) for e in range(3))
    for robot, episode in recorder.store.list():
        _assert_in_order(recorder, robot, episode, 20)
    meta = recorder.store.read_meta("robot-0", "ep-0")
    assert (meta.model_version, meta.success, meta.interventions) == ("1", True, 3)  # steps 0, 7, 14
    assert meta.missed_ticks == 0 + 1 + 2 + 0  # each segment's once, redelivered copies not again
    with sessions() as s:
        assert s.scalar(select(func.count()).select_from(SegmentRowModel)) == 24
        rows = s.scalars(select(EpisodeRow)).all()
        assert len(rows) == 6 and all(r.ended_at is not None and r.length == 20 and r.success for r in rows)
        assert {r.missed_ticks for r in rows} == {3}
    recorder.flush()  # the staging logs go once the store's files are flushed
    assert not list((tmp_path / "staging").glob("*/*"))
    assert not transport.broker.records(DEADLETTER)


def test_frames_held_for_episodes_in_progress_stay_within_the_cap(tmp_path: Path) -> None:
    transport = FakeTransport()
    segs = {e: [make_segment("robot-0", f"ep-{e}", i, steps=5, segments_per_episode=4, size=32) for i in range(4)]
            for e in range(20)}  # fmt: skip
    for e in range(20):  # three segments of each: robots that stopped mid-episode, for all the recorder knows
        for seg in segs[e][:3]:
            publish(transport, seg)
    wire = encode(segs[0][0])  # a part held: the record's bytes and its frames as the robot compressed them
    part_bytes = len(wire) + sum(len(chunk) for _, chunk in decode_segment_keeping_frames(wire)[1].values())
    cap_bytes = 10 * part_bytes  # a few episodes' worth of the 60 segments
    recorder = Recorder(replace(_config(tmp_path), max_kept_mb=cap_bytes / 1e6), transport=transport, index=None)
    _drain(recorder)
    held = [p.kept_bytes() for p in recorder._pending.values()]
    assert held == [sum(part.nbytes for part in (p.parts or {}).values()) for p in recorder._pending.values()]
    assert 0 < sum(held) <= cap_bytes and sum(held) == recorder.kept_bytes()
    assert held[0] == 0 and held[-1] > 0  # the least recently touched let go first
    for e in range(20):
        publish(transport, segs[e][3])
    _drain(recorder)
    for e in range(20):  # let go or not, each episode is written whole
        _assert_in_order(recorder, "robot-0", f"ep-{e}", 20)
    assert recorder.kept_bytes() == 0 and not recorder._pending


def test_restart_mid_episode_neither_loses_nor_duplicates(tmp_path: Path, sessions: sessionmaker[Session]) -> None:
    broker = FakeBroker()
    segs = [make_segment("robot-0", "ep-0", i, steps=5, segments_per_episode=6, size=8) for i in range(6)]
    transport = FakeTransport(broker)
    for seg in segs[:3]:
        publish(transport, seg)
    first = Recorder(_config(tmp_path), transport=transport, index=SqlEpisodeIndex(sessions))
    _drain(first)
    first.close()  # recorder process goes away mid-episode
    assert not list((tmp_path / "staging").glob("*/*"))  # held in memory: Kafka reads it again to the next one
    for seg in [segs[1], *segs[3:], segs[5]]:  # the producer resends one; the last arrives twice
        publish(transport, seg)
    second = Recorder(_config(tmp_path), transport=FakeTransport(broker), index=SqlEpisodeIndex(sessions))
    second.recover()
    _drain(second)
    assert second.store.list() == [("robot-0", "ep-0")]
    _assert_in_order(second, "robot-0", "ep-0", 30)
    with sessions() as s:
        assert s.scalar(select(func.count()).select_from(SegmentRowModel)) == 6
        assert s.scalar(select(func.count()).select_from(EpisodeRow)) == 1


class FlakyIndex:
    """An EpisodeIndex whose first `fail` episodes_finished calls raise (a DB outage mid-batch)."""

    def __init__(self, inner: SqlEpisodeIndex, fail: int) -> None:
        self.inner, self.fail = inner, fail

    def segments_received(self, rows: Sequence[SegmentRow]) -> None:
        self.inner.segments_received(rows)

    def episodes_finished(self, finished: Sequence[FinishedEpisode]) -> None:
        if self.fail:
            self.fail -= 1
            raise ConnectionError("database went away")
        self.inner.episodes_finished(finished)

    def is_finished(self, robot_id: str, episode_id: str) -> bool:
        return self.inner.is_finished(robot_id, episode_id)


def _published_episode() -> tuple[FakeBroker, FakeTransport]:
    """A broker holding one whole episode: robot-0's ep-0, three 5-step segments."""
    broker = FakeBroker()
    transport = FakeTransport(broker)
    for i in range(3):
        publish(transport, make_segment("robot-0", "ep-0", i, steps=5, segments_per_episode=3, size=8))
    return broker, transport


@HOLDING
def test_crash_between_store_write_and_db_is_finished_on_restart(
    tmp_path: Path, sessions: sessionmaker[Session], staged: bool
) -> None:
    broker, transport = _published_episode()
    config = replace(_staged(tmp_path) if staged else _config(tmp_path), commit_attempts=1)
    crashing = Recorder(config, transport=transport, index=FlakyIndex(SqlEpisodeIndex(sessions), fail=1))
    with pytest.raises(ConnectionError):
        crashing.step()
    assert broker.committed == {}  # nothing committed: the batch will be redelivered
    assert crashing.store.exists("robot-0", "ep-0")  # store written, DB not: the staging log or Kafka holds it
    restarted = Recorder(config, transport=FakeTransport(broker), index=SqlEpisodeIndex(sessions))
    assert restarted.recover() == (1 if staged else 0)
    _drain(restarted)  # staged: the redelivered batch changes nothing; held: it records the episode again
    assert restarted.store.list() == [("robot-0", "ep-0")]
    with sessions() as s:
        assert s.scalar(select(func.count()).select_from(SegmentRowModel)) == 3
        [row] = s.scalars(select(EpisodeRow)).all()
        assert row.ended_at is not None and row.length == 15
    restarted.flush()
    assert not list((tmp_path / "staging").glob("*/*"))


def test_staging_logs_stay_until_a_flush_after_the_store_write_has_ended(tmp_path: Path) -> None:
    """The disks are flushed off the recorder's loop: batches go on while a flush hangs, and a stored episode's
    staging log (its only durable copy until then) is removed only after a flush that began after its write."""
    started, release = threading.Event(), threading.Event()
    flushes: list[int] = []

    def slow_sync() -> None:
        started.set()
        assert release.wait(30)
        flushes.append(len(list((tmp_path / "store").glob("*/*/meta.json"))))

    transport = FakeTransport()
    recorder = Recorder(_staged(tmp_path), transport=transport, index=None, sync=slow_sync)
    for e in range(2):
        for i in range(3):
            publish(transport, make_segment("robot-0", f"ep-{e}", i, steps=5, segments_per_episode=3, size=8))
        _drain(recorder)  # returns although the flush of ep-0 hangs
        assert started.wait(30)
    assert recorder.store.list() == [("robot-0", "ep-0"), ("robot-0", "ep-1")]
    assert sorted(p.stem for p in (tmp_path / "staging").glob("*/*")) == ["ep-0", "ep-1"]
    release.set()
    deadline = time.time() + 30
    while recorder._flusher.flushed < 2 and time.time() < deadline:  # the hung flush, then one for ep-1's write
        time.sleep(0.01)
    publish(transport, make_segment("robot-1", "ep-0", 0, steps=5, segments_per_episode=3, size=8))
    _drain(recorder)  # the next batch drops the logs both flushes covered
    _unlinks_done(recorder)
    assert [p.parent.name for p in (tmp_path / "staging").glob("*/*")] == ["robot-1"]
    assert flushes == [2, 2]
    recorder.close()


def test_staging_logs_are_unlinked_off_the_loop_and_a_late_segment_waits_for_its_episode_s(tmp_path: Path) -> None:
    transport = FakeTransport()
    segs = {e: [make_segment("robot-0", f"ep-{e}", i, steps=5, segments_per_episode=2, size=8) for i in range(2)]
            for e in range(2)}  # fmt: skip
    recorder = Recorder(_staged(tmp_path), transport=transport, index=None, sync=lambda: None)
    gate = threading.Event()
    recorder._unlinker.submit(gate.wait, 30)  # its one thread is stuck until the gate opens
    for seg in segs[0]:
        publish(transport, seg)
    _drain(recorder)
    recorder._flusher.flush_now()  # ep-0's write is on disk: the next batch hands its log to the unlinker
    for seg in segs[1]:
        publish(transport, seg)
    _drain(recorder)  # returns although ep-0's unlink is stuck
    assert recorder.episodes_recorded == 2 and recorder.staging.exists("robot-0", "ep-0")
    late = make_segment("robot-0", "ep-0", 2, steps=5, segments_per_episode=3, size=8)  # after ep-0's end
    publish(transport, late)
    handling = threading.Thread(target=_drain, args=(recorder,))
    handling.start()
    handling.join(0.3)
    assert handling.is_alive()  # waits for ep-0's log to be gone before it looks at the episode again
    gate.set()
    handling.join(30)
    assert not handling.is_alive()
    [dead] = transport.broker.records(DEADLETTER)
    assert b"arrived after robot-0/ep-0 was recorded" in dict(dead.headers)["fleet.reason"]
    recorder.flush()
    assert recorder.store.list() == [("robot-0", "ep-0"), ("robot-0", "ep-1")]
    _assert_in_order(recorder, "robot-0", "ep-0", 10)
    assert not list((tmp_path / "staging").glob("*/*"))
    recorder.close()


def test_inconsistent_or_late_segments_are_dead_lettered(tmp_path: Path) -> None:
    transport = FakeTransport()
    segs = [make_segment("robot-0", "ep-0", i, steps=5, segments_per_episode=3, size=8) for i in range(3)]
    other_task = segs[1].model_copy(update={"task_id": "push", "segment_index": 7})
    after_end = make_segment("robot-0", "ep-0", 5, steps=5, segments_per_episode=9, size=8)
    for seg in (segs[0], other_task, *segs[1:], after_end):
        publish(transport, seg)
    recorder = Recorder(_config(tmp_path), transport=transport, index=None)
    _drain(recorder)
    assert recorder.store.list() == [("robot-0", "ep-0")]
    reasons = [dict(r.headers)["fleet.reason"].decode() for r in transport.broker.records(DEADLETTER)]
    assert len(reasons) == 2
    assert any("segment 7 of robot-0/ep-0 differs from the episode's earlier segments" in r for r in reasons)
    assert any("segment 5 comes after the episode's last segment 2" in r for r in reasons)


@HOLDING
def test_episode_with_a_step_gap_is_rejected_whole(tmp_path: Path, staged: bool) -> None:
    transport = FakeTransport()
    segs = [make_segment("robot-0", "ep-0", i, steps=5, segments_per_episode=3, size=8) for i in range(3)]
    segs[2] = segs[2].model_copy(update={"step_start": 11})
    for seg in segs:
        publish(transport, seg)
    recorder = Recorder(_staged(tmp_path) if staged else _config(tmp_path), transport=transport, index=None)
    _drain(recorder)
    assert recorder.store.list() == []
    dead = transport.broker.records(DEADLETTER)
    assert [r.value for r in dead] == [encode(seg) for seg in segs]  # the robot's bytes, whole episode, in order
    assert all(b"starts at step 11, expected 10" in dict(r.headers)["fleet.reason"] for r in dead)
    assert not list((tmp_path / "staging").glob("*/*"))


def test_other_message_kinds_on_the_trajectory_topic_are_dead_lettered(tmp_path: Path) -> None:
    transport = FakeTransport()
    command = Command(command_id="c-1", robot_id="robot-0", action="pause", issued_by="ops", created_at=0.0)
    transport.send(TRAJECTORIES, encode(command), key=command.robot_id)
    recorder = Recorder(_config(tmp_path), transport=transport, index=None)
    _drain(recorder)
    [dead] = transport.broker.records(DEADLETTER)
    assert b"expected a trajectory_segment message, got 'command'" in dict(dead.headers)["fleet.reason"]


def _committed(broker: FakeBroker, partition: int = 0) -> int | None:
    return broker.committed.get(("recorder", TRAJECTORIES, partition))


def _wait_flushed(recorder: Recorder, ticket: int) -> None:
    deadline = time.time() + 30
    while recorder._flusher.flushed < ticket and time.time() < deadline:
        time.sleep(0.01)
    assert recorder._flusher.flushed >= ticket


def _sync_after(event: threading.Event) -> Callable[[], None]:
    """A flush of the disks that ends once `event` is set (or never, for a host that loses power meanwhile)."""

    def sync() -> None:
        event.wait(30)

    return sync


def test_held_episodes_hold_the_commit_back_until_stored_and_flushed(tmp_path: Path) -> None:
    broker = FakeBroker(partitions=1)
    transport = FakeTransport(broker)
    release = threading.Event()
    recorder = Recorder(_config(tmp_path), transport=transport, index=None, sync=_sync_after(release))
    long = [make_segment("robot-0", "ep-0", i, steps=5, segments_per_episode=3, size=8) for i in range(3)]
    for seg in (long[0], make_segment("robot-1", "ep-0", 0, steps=5, segments_per_episode=1, size=8), long[1]):
        publish(transport, seg)  # offsets 0, 1 (a whole episode), 2
    _drain(recorder)
    assert recorder.store.list() == [("robot-1", "ep-0")]
    assert _committed(broker) == 0  # robot-0's episode is in memory only: a restart must read it again
    publish(transport, long[2])
    _drain(recorder)
    assert recorder.store.list() == [("robot-0", "ep-0"), ("robot-1", "ep-0")]
    assert _committed(broker) == 0  # stored, but not yet flushed to disk
    release.set()
    _wait_flushed(recorder, 2)
    recorder.step()  # nothing new to read: the commit still moves past what the flush made durable
    assert _committed(broker) == 4
    publish(transport, make_segment("robot-2", "ep-0", 0, steps=5, segments_per_episode=2, size=8))  # offset 4
    publish(transport, make_segment("robot-3", "ep-0", 0, steps=5, segments_per_episode=1, size=8))
    _drain(recorder)
    assert _committed(broker) == 4  # at the episode now held
    assert not list((tmp_path / "staging").glob("*/*"))  # no segment of theirs was written but to the store
    recorder.close()


@pytest.mark.parametrize("torn", [False, True], ids=["whole", "torn"])
def test_an_episode_stored_but_not_flushed_is_read_again_and_written_again_only_if_torn(
    tmp_path: Path, sessions: sessionmaker[Session], torn: bool
) -> None:
    broker, transport = _published_episode()
    hang = threading.Event()
    first = Recorder(_config(tmp_path), transport=transport, index=SqlEpisodeIndex(sessions), sync=_sync_after(hang))
    _drain(first)  # stored and indexed; its flush never ends: the host loses power
    partition = transport.broker.records(TRAJECTORIES)[0].partition
    assert _committed(broker, partition) == 0
    stored = first.store.path("robot-0", "ep-0")
    if torn:  # what the page cache had not written yet
        frames = stored / "frames" / "front.npy.zst"
        frames.write_bytes(frames.read_bytes()[:20])
    inode = stored.stat().st_ino
    second = Recorder(_config(tmp_path), transport=FakeTransport(broker), index=SqlEpisodeIndex(sessions))
    assert second.recover() == 0
    _drain(second)
    _assert_in_order(second, "robot-0", "ep-0", 15)
    assert (stored.stat().st_ino != inode) == torn  # written again only when it did not read back whole
    with sessions() as s:
        assert s.scalar(select(func.count()).select_from(SegmentRowModel)) == 3
        [row] = s.scalars(select(EpisodeRow)).all()
        assert row.ended_at is not None and row.length == 15
    second.close()
    hang.set()


def test_a_rebalance_leaves_held_episodes_to_the_partitions_new_owner(tmp_path: Path) -> None:
    broker = FakeBroker(partitions=2)
    robots = {zlib.crc32(f"robot-{i}".encode()) % 2: f"robot-{i}" for i in range(8)}  # one robot a partition
    transport = FakeTransport(broker)
    segs = {p: [make_segment(r, "ep-0", i, steps=5, segments_per_episode=3, size=8) for i in range(3)]
            for p, r in robots.items()}  # fmt: skip
    for p in (0, 1):
        for seg in segs[p][:2]:
            publish(transport, seg)
    recorder = Recorder(_config(tmp_path), transport=transport, index=None)
    _drain(recorder)
    consumer = recorder.loop._consumer
    assert isinstance(consumer, FakeConsumer)
    consumer.reassign([1])  # partition 0 is another member's now
    publish(transport, segs[1][2])
    _drain(recorder)
    assert recorder.store.list() == [(robots[1], "ep-0")]
    assert [key for key in recorder._pending] == []  # robot on partition 0: left to its new owner
    consumer.reassign([0, 1])  # and back: read again from the offset committed, which its episode held
    publish(transport, segs[0][2])
    _drain(recorder)
    assert recorder.store.list() == sorted((r, "ep-0") for r in robots.values())
    _assert_in_order(recorder, robots[0], "ep-0", 15)


def test_an_episode_held_past_max_pin_s_is_staged_and_the_commit_passes_it(tmp_path: Path) -> None:
    broker = FakeBroker(partitions=1)
    segs = [make_segment("robot-0", "ep-0", i, steps=5, segments_per_episode=3, size=8) for i in range(3)]
    for seg in segs[:2]:
        publish(FakeTransport(broker), seg)
    first = Recorder(_staged(tmp_path), transport=FakeTransport(broker), index=None)
    _drain(first)
    assert _committed(broker) == 2 and first.staging.exists("robot-0", "ep-0")
    first.close()
    publish(FakeTransport(broker), segs[2])
    second = Recorder(_config(tmp_path), transport=FakeTransport(broker), index=None)
    assert second.recover() == 0  # not complete: waits for its last segment, which comes after the commit
    _drain(second)
    _assert_in_order(second, "robot-0", "ep-0", 15)
    second.flush()
    assert not list((tmp_path / "staging").glob("*/*"))
