"""The robot's disk spool fills up: its cap (FLEET_SPOOL_MAX_BYTES) is hit, or the disk itself runs out.

A robot whose broker is unreachable spools to disk. Past the cap, whole messages are refused with a
"spool full" delivery error (counted in `stats.dropped`, logged) and nothing partial is written;
when the disk fails a write half-way, the partial record is cut and the producer keeps running.
Either way every message spooled before is replayed exactly once, in order, when the robot next
reaches the broker (here: a restart on the same spool, as after a reboot).
"""

from __future__ import annotations

import builtins
import errno
import io
import time
import uuid
from pathlib import Path
from typing import Any

import msgpack
import pytest
from kafka import KafkaConsumer, TopicPartition

from fleet.settings import Settings
from fleet.stack.process import free_port
from fleet.transport import TRAJECTORIES, Delivery, DiskSpool, KafkaTransport, TransportConfig, ensure_topics
from fleet.transport import spool as spool_module
from fleet.transport.base import DEADLETTER
from fleet.transport.spool import SpoolDamage
from tests.faults.record import record_fault

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]
CAP = 1024**2  # the smallest FLEET_SPOOL_MAX_BYTES allowed


def _watch(bootstrap: str, topic: str) -> KafkaConsumer:
    """A consumer positioned at the current end of `topic` (sees only what is sent from now on)."""
    ensure_topics(TransportConfig(bootstrap=bootstrap))
    watcher = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    partitions = [TopicPartition(topic, p) for p in sorted(watcher.partitions_for_topic(topic))]
    watcher.assign(partitions)
    watcher.seek_to_end(*partitions)
    for tp in partitions:
        watcher.position(tp)
    return watcher


def _received(watcher: KafkaConsumer, key: str, expected: int, *, settle_s: float = 3.0) -> list[bytes]:
    """Values with `key`, until `expected` arrived and `settle_s` more passed (so a duplicate would show)."""
    seen: list[bytes] = []
    deadline = time.monotonic() + 60
    done_at: float | None = None
    while time.monotonic() < deadline and (done_at is None or time.monotonic() < done_at):
        for records in watcher.poll(timeout_ms=300).values():
            seen.extend(r.value for r in records if r.key == key.encode())
        if done_at is None and len(seen) >= expected:
            done_at = time.monotonic() + settle_s
    return seen


def _spool_files_whole(directory: Path) -> list[bytes]:
    """The message values of every segment file, in order; asserts no file has a torn or corrupt tail."""
    out: list[bytes] = []
    for path in sorted(directory.glob("spool-*.log")):
        records = DiskSpool.read(path)
        assert not [r for r in records if isinstance(r, SpoolDamage)], f"{path.name} has a partial record"
        assert sum(8 + len(r) for r in records) == path.stat().st_size, f"{path.name} has a partial record"
        out.extend(msgpack.unpackb(r, raw=False)[2] for r in records)  # [topic, key, value, headers, seq, run]
    return out


class _Outcomes:
    def __init__(self) -> None:
        self.errors: list[str | None] = []

    def __call__(self, delivery: Delivery) -> None:
        self.errors.append(delivery.error)


def _offline(settings: Settings, robot: str) -> KafkaTransport:
    """The robot's transport (`from_settings`, as `build_robot` makes it) while its broker is unreachable."""
    down = settings.model_copy(update={"kafka_bootstrap": f"127.0.0.1:{free_port()}"})
    return KafkaTransport(TransportConfig.from_settings(down, spool_name=robot, client_id=robot, connect_timeout_s=0.5))


def _replay(settings: Settings, robot: str, bootstrap: str, expected: int) -> list[bytes]:
    """Restart the robot's transport on the reachable broker; returns what reached Kafka from the spool."""
    watcher = _watch(bootstrap, TRAJECTORIES)
    online = KafkaTransport(TransportConfig.from_settings(settings, spool_name=robot, client_id=robot))
    try:
        online.send(TRAJECTORIES, b"after-restart", key=robot)  # starts the producer; queues behind the spool
        assert online.flush(timeout_s=60), "spool not replayed"
        return _received(watcher, robot, expected + 1)
    finally:
        online.close()
        watcher.close()


def test_spool_cap_refuses_whole_messages_and_replays_the_rest_once(
    stack: Settings, kafka_bootstrap: str, tmp_path: Path, caplog: pytest.LogCaptureFixture, record_property: Any
) -> None:
    robot = f"cap{uuid.uuid4().hex[:6]}"
    settings = stack.model_copy(update={"home": tmp_path, "spool_max_bytes": CAP})  # FLEET_SPOOL_MAX_BYTES
    spool_dir = tmp_path / "spool" / robot
    payloads = [f"{i:04d}".encode() + bytes(range(256)) * 80 for i in range(80)]  # ~20 KiB each, 1.6 MiB in all
    outcomes = _Outcomes()
    offline = _offline(settings, robot)
    assert offline.config.spool_max_bytes == CAP
    accepted = [offline.send(TRAJECTORIES, p, key=robot, on_delivery=outcomes) for p in payloads]
    deadline = time.monotonic() + 30
    while len(outcomes.errors) < len(payloads) - offline.producer.spooled and time.monotonic() < deadline:
        time.sleep(0.05)
    spooled, stats = offline.producer.spooled, offline.stats
    offline.close(timeout_s=1)

    on_disk = _spool_files_whole(spool_dir)
    record_bytes = next(spool_dir.glob("spool-*.log")).stat().st_size // len(on_disk)
    assert all(accepted), "send() never blocks and never raises"
    assert on_disk == payloads[:spooled]
    assert spooled == CAP // record_bytes  # as many whole messages as fit, not one byte more
    assert sum(p.stat().st_size for p in spool_dir.glob("spool-*.log")) <= CAP
    assert outcomes.errors == ["spool full"] * (len(payloads) - spooled)  # the rest: refused, each reported
    assert stats.dropped == len(payloads) - spooled and stats.spooled == spooled
    assert any("spool full" in r.getMessage() and r.levelname == "ERROR" for r in caplog.records)

    received = _replay(settings, robot, kafka_bootstrap, spooled)
    assert received == payloads[:spooled] + [b"after-restart"]  # the spooled prefix, in order, once each
    assert not list(spool_dir.glob("spool-*.log"))
    record_property("outcome", {"sent": len(payloads), "spooled": spooled, "refused": len(payloads) - spooled})
    print("OUTCOME", {"sent": len(payloads), "spooled": spooled, "refused": len(payloads) - spooled})


def test_a_record_damaged_on_disk_is_dead_lettered_and_the_rest_replayed(
    stack: Settings, kafka_bootstrap: str, tmp_path: Path
) -> None:
    """A bit flips in the middle of a spool segment while the robot is offline: on replay that record goes to the
    dead-letter topic with the reason (its bytes kept for a look), and every message after it still reaches Kafka, in
    order, once."""
    robot = f"rot{uuid.uuid4().hex[:6]}"
    settings = stack.model_copy(update={"home": tmp_path})
    spool_dir = tmp_path / "spool" / robot
    payloads = [f"{i:04d}".encode() + bytes(range(256)) * 4 for i in range(8)]
    offline = _offline(settings, robot)
    assert all(offline.send(TRAJECTORIES, p, key=robot) for p in payloads)
    deadline = time.monotonic() + 30
    while offline.producer.spooled < len(payloads) and time.monotonic() < deadline:
        time.sleep(0.05)
    offline.close(timeout_s=1)
    segment = next(spool_dir.glob("spool-*.log"))
    data = bytearray(segment.read_bytes())
    record = len(data) // len(payloads)  # the messages are the same size: record 3 starts at 3 * record
    data[3 * record + record // 2] ^= 0x01
    segment.write_bytes(bytes(data))
    damaged = bytes(data[3 * record : 4 * record])

    dead = _watch(kafka_bootstrap, DEADLETTER)
    try:
        received = _replay(settings, robot, kafka_bootstrap, len(payloads) - 1)
        letters: list[Any] = []
        deadline = time.monotonic() + 30
        while not letters and time.monotonic() < deadline:
            letters += [r for rs in dead.poll(timeout_ms=300).values() for r in rs if r.value == damaged]
    finally:
        dead.close()
    intact = payloads[:3] + payloads[4:]
    record_fault(
        "corrupt_spool_record",
        lost=len(set(intact) - set(received)) + (1 - min(len(letters), 1)),  # the damaged one: kept as a dead letter
        duplicated=len(received) - len(set(received)),
        dead_lettered=len(letters),
    )
    assert received == intact + [b"after-restart"]
    assert len(letters) == 1
    reason = dict(letters[0].headers)["fleet.reason"].decode()
    assert f"corrupt record at byte {3 * record}" in reason and segment.name in reason
    assert not list(spool_dir.glob("spool-*.log"))


class _FullDisk:
    """Segment files on a disk that fills up: after `room` whole writes, one short write, then ENOSPC."""

    def __init__(self, room: int) -> None:
        self.room = room
        self.full = False

    def open(self, file: Any, mode: str = "r", *args: Any, **kwargs: Any) -> Any:
        if Path(file).name.startswith("spool-"):
            return _FillingFile(io.FileIO(file, "ab"), self)
        return builtins.open(file, mode, *args, **kwargs)


class _FillingFile:
    def __init__(self, raw: io.FileIO, disk: _FullDisk) -> None:
        self.raw, self.disk = raw, disk

    def write(self, data: Any) -> int:
        if self.disk.full:
            raise OSError(errno.ENOSPC, "No space left on device")
        if self.disk.room == 0:  # the last free blocks: half of this record lands, then the disk is full
            self.disk.full = True
            return self.raw.write(bytes(data[: len(data) // 2]))
        self.disk.room -= 1
        return self.raw.write(data)

    def fileno(self) -> int:
        return self.raw.fileno()

    def close(self) -> None:
        self.raw.close()


def test_disk_full_mid_record_is_cut_and_the_producer_keeps_going(
    stack: Settings, kafka_bootstrap: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    robot = f"enospc{uuid.uuid4().hex[:6]}"
    settings = stack.model_copy(update={"home": tmp_path})
    spool_dir = tmp_path / "spool" / robot
    disk = _FullDisk(room=3)
    monkeypatch.setattr(spool_module, "open", disk.open, raising=False)
    outcomes = _Outcomes()
    offline = _offline(settings, robot)
    first = [f"m{i}".encode() * 1000 for i in range(6)]
    for p in first:
        assert offline.send(TRAJECTORIES, p, key=robot, on_delivery=outcomes)
    deadline = time.monotonic() + 30
    while len(outcomes.errors) < 3 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert offline.producer.spooled == 3 and outcomes.errors == ["spool full"] * 3  # m3 was cut, m4, m5 refused
    assert _spool_files_whole(spool_dir) == first[:3]

    disk.full, disk.room = False, 100  # space freed (old logs rotated away, ...): the same producer goes on
    later = [f"n{i}".encode() * 1000 for i in range(2)]
    for p in later:
        assert offline.send(TRAJECTORIES, p, key=robot, on_delivery=outcomes)
    deadline = time.monotonic() + 30
    while offline.producer.spooled < 5 and time.monotonic() < deadline:
        time.sleep(0.05)
    offline.close(timeout_s=1)
    monkeypatch.undo()
    assert _spool_files_whole(spool_dir) == first[:3] + later  # readable past the cut: later records not lost

    received = _replay(settings, robot, kafka_bootstrap, 5)
    assert received == first[:3] + later + [b"after-restart"]
    assert outcomes.errors == ["spool full"] * 3  # the 5 spooled ones have no outcome yet: replayed after restart
    assert not list(spool_dir.glob("spool-*.log"))
