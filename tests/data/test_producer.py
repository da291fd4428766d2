"""Producer without a broker: `send` never blocks, everything lands in the disk spool, in order."""

from __future__ import annotations

import time
from pathlib import Path

import msgpack

from fleet.transport import DiskSpool, SpoolingProducer, TransportConfig
from fleet.transport.base import TRAJECTORIES


def _unreachable(tmp_path: Path, **overrides: object) -> TransportConfig:
    # Port 9 (discard) on loopback: nothing listens, connections are refused at once.
    base: dict[str, object] = {"bootstrap": "127.0.0.1:9", "spool_dir": tmp_path / "spool", "connect_timeout_s": 1.0}
    base.update(overrides)
    return TransportConfig(**base)  # type: ignore[arg-type]


def test_broker_down_spools_everything_in_order_without_blocking(tmp_path: Path) -> None:
    producer = SpoolingProducer(_unreachable(tmp_path))
    started = time.monotonic()
    accepted = [producer.send(TRAJECTORIES, f"m{i}".encode(), key=f"robot-{i % 3}") for i in range(2000)]
    elapsed = time.monotonic() - started
    assert all(accepted)
    assert elapsed < 2.0, f"send() took {elapsed:.2f} s for 2000 messages with the broker down"
    assert not producer.flush(timeout_s=3.0)  # cannot be delivered...
    producer.close(timeout_s=1.0)
    assert producer.stats.spooled == 2000 and producer.stats.dropped == 0  # ...but all are on disk
    spool = DiskSpool(tmp_path / "spool", max_bytes=1 << 30, segment_bytes=1 << 24)
    assert spool.records == 2000
    entries = [msgpack.unpackb(e, raw=False) for seg in [spool.oldest()] if seg for e in spool.read(seg)]
    assert [(t, k, v) for t, k, v, *_ in entries] == [
        (TRAJECTORIES, f"robot-{i % 3}", f"m{i}".encode()) for i in range(2000)
    ]


def test_full_queue_and_spool_drop_and_count(tmp_path: Path) -> None:
    config = _unreachable(tmp_path, queue_size=10, spool_max_bytes=1000, spool_segment_bytes=500)
    producer = SpoolingProducer(config)
    results = [producer.send(TRAJECTORIES, b"x" * 100, key="r") for _ in range(200)]
    producer.close(timeout_s=0.5)
    assert results.count(False) == producer.stats.errors.get("QueueFull", 0)
    assert producer.stats.spooled <= 10  # 108 B framed each, 1000 B bound
    assert producer.stats.dropped == 200 - producer.stats.spooled


def test_cached_partition_matches_kafka_pythons_default_partitioner(tmp_path: Path) -> None:
    from kafka.partitioner.default import DefaultPartitioner

    class Cluster:
        def topics(self) -> set[str]:
            return {TRAJECTORIES}

        def partitions_for_topic(self, topic: str) -> set[int]:
            return set(range(6))

        available_partitions_for_topic = partitions_for_topic

    class StubProducer:
        def partitions_for(self, topic: str) -> set[int]:
            return set(range(6))

        def close(self, timeout: float | None = None) -> None:
            pass

    producer = SpoolingProducer(_unreachable(tmp_path))
    producer._producer = StubProducer()  # type: ignore[assignment]
    for i in range(200):
        key = f"robot-{i}".encode()
        expected = DefaultPartitioner().partition(TRAJECTORIES, None, key, None, None, Cluster())
        assert producer._partition_for(TRAJECTORIES, key) == expected
    producer.close(timeout_s=0.1)


def test_kafka_record_checksums_run_in_c() -> None:
    """kafka-python checks the CRC32C of every record batch it builds or reads; its pure-Python fallback costs ~2.8 ms
    of CPU per 5.7 KB segment at each end, which was most of what a recorder spent per segment (bench/scale.py)."""
    from kafka.record import util
    from kafka.record._crc32c import crc as crc32c_py

    assert util._crc32c is not crc32c_py, "the crc32c package is missing: kafka-python falls back to pure Python"
    payload = bytes(range(256)) * 23
    assert util.calc_crc32c(memoryview(payload)) == crc32c_py(memoryview(payload))  # the same checksum, in C
