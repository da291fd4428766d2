"""In-memory stand-ins for the transport (unit tests of code above it only; never used in fleet/)."""

from __future__ import annotations

import zlib
from collections import defaultdict
from collections.abc import Mapping, Sequence

from fleet.transport import Delivery, DeliveryCallback, Record


class FakeBroker:
    """Topics as partitioned lists; committed offsets per (group, topic, partition)."""

    def __init__(self, partitions: int = 4) -> None:
        self.partitions = partitions
        self.logs: dict[tuple[str, int], list[Record]] = defaultdict(list)
        self.committed: dict[tuple[str, str, int], int] = {}

    def append(self, topic: str, value: bytes, *, key: str | None, headers: Sequence[tuple[str, bytes]] = ()) -> Record:
        partition = zlib.crc32(key.encode()) % self.partitions if key is not None else 0
        log = self.logs[(topic, partition)]
        record = Record(topic, partition, len(log), key.encode() if key else None, value, tuple(headers))
        log.append(record)
        return record

    def records(self, topic: str) -> list[Record]:
        return [r for (t, _), log in sorted(self.logs.items()) if t == topic for r in log]


class FakeConsumer:
    def __init__(
        self,
        broker: FakeBroker,
        group_id: str | None,
        topics: Sequence[str],
        start_at: Mapping[tuple[str, int], int] | None = None,
    ) -> None:
        self.broker, self.group_id, self.topics = broker, group_id, tuple(topics)
        # A new member starts from the committed offsets, like a restarted process, or where `start_at` says.
        self.position = {
            (t, p): (start_at or {}).get((t, p), broker.committed.get((group_id, t, p), 0))
            for t in self.topics
            for p in range(broker.partitions)
        }
        self.generation = 0
        self.closed = False

    def poll(self, *, timeout_s: float, max_records: int) -> list[Record]:
        out: list[Record] = []
        for (topic, partition), pos in self.position.items():
            log = self.broker.logs.get((topic, partition), [])
            take = log[pos : pos + max_records - len(out)]
            out.extend(take)
            self.position[(topic, partition)] = pos + len(take)
        return out

    def commit(self, records: Sequence[Record]) -> None:
        for r in records:
            key = (self.group_id, r.topic, r.partition)
            self.broker.committed[key] = max(self.broker.committed.get(key, 0), r.offset + 1)

    def commit_offsets(self, offsets: Mapping[tuple[str, int], int]) -> None:
        for (topic, partition), offset in offsets.items():  # as Kafka does: what is given, even if lower
            self.broker.committed[(self.group_id, topic, partition)] = offset

    def assignment(self) -> tuple[int, frozenset[tuple[str, int]]]:
        return self.generation, frozenset(self.position)

    def reassign(self, partitions: Sequence[int]) -> None:
        """A rebalance: this member now holds `partitions` of its topics, each read again from its committed
        offset."""
        self.generation += 1
        self.position = {
            (t, p): self.broker.committed.get((self.group_id, t, p), 0) for t in self.topics for p in partitions
        }

    def close(self) -> None:
        self.closed = True


class FakeTransport:
    """`Transport` that delivers synchronously into a FakeBroker."""

    def __init__(self, broker: FakeBroker | None = None) -> None:
        self.broker = broker or FakeBroker()
        self.consumers: list[FakeConsumer] = []

    def send(
        self,
        topic: str,
        value: bytes,
        *,
        key: str | None,
        headers: Sequence[tuple[str, bytes]] = (),
        on_delivery: DeliveryCallback | None = None,
    ) -> bool:
        record = self.broker.append(topic, value, key=key, headers=headers)
        if on_delivery is not None:
            on_delivery(Delivery(topic, key, record.partition, record.offset, None))
        return True

    def flush(self, timeout_s: float = 30.0) -> bool:
        return True

    def consumer(
        self, *, group_id: str | None, topics: Sequence[str], start_at: Mapping[tuple[str, int], int] | None = None
    ) -> FakeConsumer:
        consumer = FakeConsumer(self.broker, group_id, topics, start_at)
        self.consumers.append(consumer)
        return consumer

    def close(self, timeout_s: float = 10.0) -> None:
        pass
