"""Consuming: a Kafka consumer-group member, and the one decode → handle → dead-letter → commit loop.

`MessageLoop` is what services build on. For each polled batch it decodes every record
(`fleet.schemas.decode`); a payload that is not a valid message, or that the handler rejects
with `SchemaError` or `Rejected`, is sent to `fleet.deadletter` with the reason, the original bytes and headers
naming its source topic/partition/offset (or, by a reader that does not own the stream, skipped). Redelivered
copies (same `dedup_key`) are skipped. Offsets are committed only after every record of the batch is handled and
every dead letter acknowledged; a handler failure of any other kind is retried with backoff and, if it persists,
stops the loop with nothing committed, so the batch is redelivered to whoever takes over the partitions.
`ConsumerThread` steps a loop in the background and rebuilds it after any failure (the dashboard, robot listeners).

Over 400 lines because the group member, the one loop built on it and the thread that steps it are what every
service reads Kafka by; kept together so there is one place to read.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from kafka import ConsumerRebalanceListener, KafkaConsumer, TopicPartition
from kafka.errors import KafkaError, KafkaTimeoutError
from kafka.structs import OffsetAndMetadata

from fleet import observability
from fleet.schemas import Message, SchemaError, decode
from fleet.transport.base import (
    DEADLETTER,
    Record,
    Transport,
    TransportConfig,
    TransportError,
    kafka_consumer_options,
)

log = logging.getLogger(__name__)

Handler = Callable[[Message, Record], None]


class _Rebalance(ConsumerRebalanceListener):
    """Counts the group's assignments (`generation`) and seeks each newly assigned partition that has a start offset
    there (see KafkaGroupConsumer's `start_at`)."""

    def __init__(self, consumer: KafkaConsumer, start_at: Mapping[tuple[str, int], int]) -> None:
        self.consumer, self.start_at = consumer, dict(start_at)
        self.generation = 0

    def on_partitions_assigned(self, assigned: Any) -> None:
        self.generation += 1
        for tp in assigned:
            offset = self.start_at.get((tp.topic, tp.partition))
            if offset is not None:
                self.consumer.seek(tp, offset)

    def on_partitions_revoked(self, revoked: Any) -> None:
        pass


class KafkaGroupConsumer:
    """`Consumer` on kafka-python: manual commits, earliest offset for a new group. The one place fleet builds a
    Kafka consumer: every service reads through it by a `MessageLoop`.

    `start_at` {(topic, partition): offset}: where to read each of those partitions whenever it is assigned,
    whatever the group committed. A service whose own checkpoint holds its offsets passes them, so the checkpoint
    wins even when the group's committed offsets are ahead of it (the learner falling back to an older checkpoint).
    `group_id=None`: no group; every partition of `topics` is read from its current end (a live view such as the
    dashboard's heartbeats, which needs only what is sent from now on), and nothing is committed.
    """

    def __init__(
        self,
        config: TransportConfig,
        *,
        group_id: str | None,
        topics: Sequence[str],
        start_at: Mapping[tuple[str, int], int] | None = None,
    ) -> None:
        try:
            self._consumer = KafkaConsumer(
                **kafka_consumer_options(config, client_id=f"{config.client_id}-{group_id or 'live'}"),
                group_id=group_id,
                enable_auto_commit=False,
                auto_offset_reset="earliest",
                max_poll_records=config.max_poll_records,
                session_timeout_ms=int(config.session_timeout_s * 1000),
                heartbeat_interval_ms=int(config.session_timeout_s * 1000 / 3),
                fetch_max_bytes=max(52428800, config.max_request_bytes),
                max_partition_fetch_bytes=config.max_request_bytes,
            )
            self._rebalance = _Rebalance(self._consumer, start_at or {})
            if group_id is not None:
                self._consumer.subscribe(list(topics), listener=self._rebalance)
            elif topics:
                try:
                    assign_at_end(self._consumer, *topics)
                except BaseException:
                    self._consumer.close()
                    raise
        except KafkaError as e:
            raise TransportError(
                f"Kafka not reachable at {config.bootstrap} ({e}): run `fleet up` or set FLEET_KAFKA_BOOTSTRAP"
            ) from e
        self.group_id = group_id
        self.lag: dict[tuple[str, int], int] = {}  # (topic, partition) -> records behind, as of the last poll
        observability.track_consumer(self)

    def poll(self, *, timeout_s: float, max_records: int) -> list[Record]:
        batches = self._consumer.poll(timeout_ms=int(timeout_s * 1000), max_records=max_records)
        out: list[Record] = []
        for records in batches.values():
            for r in records:
                headers = tuple((k, bytes(v) if v is not None else b"") for k, v in (r.headers or ()))
                out.append(Record(r.topic, r.partition, r.offset, r.key, r.value or b"", headers, r.timestamp))
        self._measure_lag(out)
        return out

    def _measure_lag(self, polled: list[Record]) -> None:
        """Per assigned partition: records from the log end back to the first one not yet handled (the batch
        just polled counts as not handled). Local state only: the highwater mark comes with every fetch."""
        first: dict[tuple[str, int], int] = {}
        for r in polled:
            first.setdefault((r.topic, r.partition), r.offset)
        lag: dict[tuple[str, int], int] = {}
        try:
            for tp in self._consumer.assignment():
                end = self._consumer.highwater(tp)
                position = first.get((tp.topic, tp.partition))
                if end is not None and position is None:
                    position = self._consumer.position(tp, timeout_ms=100)
                if end is not None and position is not None:
                    lag[(tp.topic, tp.partition)] = max(end - position, 0)
        except KafkaError:  # mid-rebalance: keep the last measurement
            return
        self.lag = lag

    def commit(self, records: Sequence[Record]) -> None:
        self.commit_offsets(offsets_past(records))

    def commit_offsets(self, offsets: Mapping[tuple[str, int], int]) -> None:
        if offsets:
            self._consumer.commit({TopicPartition(t, p): OffsetAndMetadata(o, "", -1) for (t, p), o in offsets.items()})

    def assignment(self) -> tuple[int, frozenset[tuple[str, int]]]:
        return self._rebalance.generation, frozenset((tp.topic, tp.partition) for tp in self._consumer.assignment())

    def end_offsets(self, partitions: Sequence[tuple[str, int]]) -> dict[tuple[str, int], int]:
        """The log-end offset of each (topic, partition)."""
        self._consumer.topics()  # load topic metadata first: end_offsets on a fresh client can miss it
        ends = self._consumer.end_offsets([TopicPartition(t, p) for t, p in partitions])
        return {(tp.topic, tp.partition): int(offset) for tp, offset in ends.items()}

    def close(self) -> None:
        self._consumer.close(autocommit=False)


def offsets_past(records: Sequence[Record]) -> dict[tuple[str, int], int]:
    """{(topic, partition): the offset after the last of `records` there}: what committing `records` commits."""
    offsets: dict[tuple[str, int], int] = {}
    for r in records:
        key = (r.topic, r.partition)
        offsets[key] = max(offsets.get(key, 0), r.offset + 1)
    return offsets


def assign_at_end(consumer: KafkaConsumer, *topics: str, timeout_s: float = 10.0) -> list[TopicPartition]:
    """Assign `consumer` (no group) every partition of `topics` at its current end, so it reads only what is sent
    from now on. Waits for each topic's partition metadata (a topic just created may have none for a moment);
    raises `KafkaTimeoutError` if one has none after `timeout_s`, rather than assigning nothing and reading nothing."""
    deadline = time.monotonic() + timeout_s
    assigned = []
    for topic in topics:
        while not (partitions := consumer.partitions_for_topic(topic)):
            if time.monotonic() > deadline:
                raise KafkaTimeoutError(f"no partition metadata for {topic} after {timeout_s:.0f} s")
            time.sleep(0.2)
        assigned += [TopicPartition(topic, p) for p in sorted(partitions)]
    consumer.assign(assigned)
    consumer.seek_to_end(*assigned)
    for tp in assigned:  # resolve the end offsets now, so everything sent from here on is seen
        consumer.position(tp)
    return assigned


@dataclass
class LoopStats:
    """Counters of one MessageLoop."""

    handled: int = 0  # records decoded and passed to the handler
    duplicates: int = 0  # redelivered copies skipped
    dead_lettered: int = 0  # records sent to fleet.deadletter
    skipped: int = 0  # records a reader could not use and passed over (`dead_letters=False`)
    commits: int = 0  # successful offset commits
    commit_failures: int = 0  # commits refused (broker down, rebalance); covered by the next commit


class _Seen:
    """Bounded set of recently handled dedup keys (the durable check is the handler's job)."""

    def __init__(self, capacity: int) -> None:
        self._keys: OrderedDict[tuple[str, ...], None] = OrderedDict()
        self._capacity = capacity

    def __contains__(self, key: tuple[str, ...]) -> bool:
        return key in self._keys

    def add(self, key: tuple[str, ...]) -> None:
        if not self._capacity:
            return
        self._keys[key] = None
        if len(self._keys) > self._capacity:
            self._keys.popitem(last=False)

    def clear(self) -> None:
        self._keys.clear()


def dead_letter(transport: Transport, record: Record, reason: str, *, group_id: str, category: str = "invalid") -> None:
    """Send a record's original bytes to fleet.deadletter with why and where it came from.

    `category` is the reason's metrics label (undecodable, decoder_error, invalid, episode_rejected).
    """
    key = record.key.decode("utf-8", "replace") if record.key is not None else None
    headers = [
        ("fleet.reason", reason[:2000].encode()),
        ("fleet.source.topic", record.topic.encode()),
        ("fleet.source.partition", str(record.partition).encode()),
        ("fleet.source.offset", str(record.offset).encode()),
        ("fleet.consumer.group", group_id.encode()),
        ("fleet.dead_at", f"{time.time():.3f}".encode()),
        *((f"fleet.original.{k}", v) for k, v in record.headers),
    ]
    transport.send(DEADLETTER, record.value, key=key, headers=headers)
    observability.DEAD_LETTERS.labels(group_id, category).inc()


class Rejected(Exception):
    """A handler's refusal of one message it cannot use although it decoded (an episode whose segments do not line
    up, a message its store refuses): the loop dead-letters it under `category`, as it does a `SchemaError` under
    "invalid", instead of retrying it."""

    def __init__(self, reason: str, category: str = "invalid") -> None:
        super().__init__(reason)
        self.category = category


class MessageLoop:
    """Poll → decode → handle → dead-letter → commit, for one consumer group: every service reads Kafka through one.

    An owner of a stream (the recorder, the learner; `dead_letters=True`) sends what it cannot decode or its handler
    rejects to `fleet.deadletter`; a reader beside the owner (a dashboard view, a robot's listener) logs and skips
    it, since the owner already parks it. `commit_each_batch=False`: the service commits with `commit(records)` when
    its own state holds them (the learner, with its checkpoint); `group_id=None` reads from the end and commits
    nothing (a live view). `decoder` replaces `fleet.schemas.decode` for a service that wants less of each message
    (the recorder keeps frames compressed); it must refuse what `decode` refuses. `step()` is one poll's whole cycle;
    a service that needs the records between the handling and the commit calls `poll()` and `process()` itself.

    `committable(records)` gives the offsets a batch's commit commits instead of those past its records: for a
    service that holds some records in memory only (the recorder's episodes in progress, whose copy until they are
    stored is Kafka's), so that they are read again after a restart. `on_assignment(partitions)` is told when the
    group has reassigned: the partitions now held, each read again from its committed offset (the redelivered records
    are then not skipped as already seen, since a service may have dropped what it held for them).
    """

    def __init__(
        self,
        transport: Transport,
        *,
        group_id: str | None,
        topics: Sequence[str],
        handler: Handler,
        before_commit: Callable[[], None] | None = None,
        poll_timeout_s: float = 0.5,
        max_records: int = 500,
        handler_attempts: int = 5,
        dedup_capacity: int = 200_000,
        start_at: Mapping[tuple[str, int], int] | None = None,
        commit_each_batch: bool = True,
        dead_letters: bool = True,
        decoder: Callable[[bytes], Message] = decode,
        committable: Callable[[Sequence[Record]], Mapping[tuple[str, int], int]] | None = None,
        on_assignment: Callable[[frozenset[tuple[str, int]]], None] | None = None,
    ) -> None:
        self.transport = transport
        self.decoder = decoder  # a SchemaError from it dead-letters the record as undecodable
        self.group_id = group_id
        self.handler = handler
        self.before_commit = before_commit  # batch-level durable work (e.g. one DB transaction) before the commit
        self.poll_timeout_s = poll_timeout_s
        self.max_records = max_records
        self.handler_attempts = handler_attempts
        self.commit_each_batch = commit_each_batch and group_id is not None
        self.dead_letters = dead_letters
        self.stats = LoopStats()
        self._seen = _Seen(dedup_capacity)
        self._committable = committable
        self._on_assignment = on_assignment
        self._consumer = transport.consumer(group_id=group_id, topics=topics, start_at=start_at)
        self._generation = self._consumer.assignment()[0]

    def step(self) -> int:
        """Process one polled batch; returns how many records it held."""
        records = self.poll()
        if not records:
            return 0
        dead = self.process(records)
        if dead and not self.transport.flush(timeout_s=60.0):
            raise TransportError(f"{dead} dead letters not acknowledged; not committing (batch will be redelivered)")
        if self.before_commit is not None:
            self.before_commit()
        if self.commit_each_batch:
            self.commit(records)
        return len(records)

    def poll(self) -> list[Record]:
        records = self._consumer.poll(timeout_s=self.poll_timeout_s, max_records=self.max_records)
        generation, partitions = self._consumer.assignment()
        if generation != self._generation:
            self._generation = generation
            self._seen.clear()
            if self._on_assignment is not None:
                self._on_assignment(partitions)
        return records

    def process(self, records: Sequence[Record]) -> int:
        """Decode and handle each record; returns how many went to the dead-letter topic (not yet acknowledged)."""
        return sum(self._process(record) for record in records)

    def commit(self, records: Sequence[Record]) -> bool:
        """Commit offsets past `records` (processed durably by now), or what `committable` says of them; False when
        the broker refused it."""
        try:
            if self._committable is not None:
                self._consumer.commit_offsets(self._committable(records))
            else:
                self._consumer.commit(records)
        except KafkaError as e:
            # An uncommitted batch is only redelivered (and deduplicated); the next successful commit covers it.
            self.stats.commit_failures += 1
            log.warning("offset commit for group %s failed (%s); the next commit covers it", self.group_id, e)
            return False
        self.stats.commits += 1
        return True

    @property
    def lag(self) -> dict[tuple[str, int], int]:
        """Records behind the log end on each partition held, as of the last poll: what this member has yet to read
        (its committed offsets may trail further, by what it holds in memory)."""
        return dict(getattr(self._consumer, "lag", {}))

    def run(self, stop: Callable[[], bool]) -> None:
        """Loop until `stop()` is true; commits happen inside `step`."""
        while not stop():
            self.step()

    def close(self) -> None:
        self._consumer.close()

    def _process(self, record: Record) -> int:
        try:
            message = self.decoder(record.value)
        except SchemaError as e:
            return self._dead(record, str(e), "undecodable")
        except Exception as e:  # a decoder bug must not wedge the partition: park the record with the reason
            return self._dead(record, f"decoder error {type(e).__name__}: {e}", "decoder_error")
        if message.dedup_key in self._seen:
            self.stats.duplicates += 1
            return 0
        for attempt in range(1, self.handler_attempts + 1):
            try:
                self.handler(message, record)
                break
            except SchemaError as e:
                return self._dead(record, str(e))
            except Rejected as e:
                return self._dead(record, str(e), e.category)
            except Exception as e:
                if attempt == self.handler_attempts:
                    raise
                delay = min(0.2 * 2**attempt, 5.0)
                log.warning(
                    "handler failed on %s/%d@%d (attempt %d/%d, retry in %.1f s): %s",
                    record.topic,
                    record.partition,
                    record.offset,
                    attempt,
                    self.handler_attempts,
                    delay,
                    e,
                )
                time.sleep(delay)
        self._seen.add(message.dedup_key)
        self.stats.handled += 1
        return 0

    def _dead(self, record: Record, reason: str, category: str = "invalid") -> int:
        where = {"topic": record.topic, "partition": record.partition, "offset": record.offset,
                 "group": self.group_id, "reason": category}  # fmt: skip
        if not self.dead_letters:  # the stream's owner parks it; a reader only says so, now and then
            self.stats.skipped += 1
            if self.stats.skipped in (1, 100) or self.stats.skipped % 10_000 == 0:
                log.warning("skipping %s/%d@%d (%d so far): %s", record.topic, record.partition, record.offset,
                            self.stats.skipped, reason, extra=where)  # fmt: skip
            return 0
        log.warning("dead-lettering %s/%d@%d (key=%r): %s", record.topic, record.partition, record.offset, record.key,
                    reason, extra=where)  # fmt: skip
        dead_letter(self.transport, record, reason, group_id=self.group_id or "", category=category)
        self.stats.dead_lettered += 1
        return 1


class ConsumerThread:
    """A daemon thread stepping a `MessageLoop` it (re)builds with `connect()`, `tick()` after every step. Kafka
    down, or anything else going wrong (a batch's database write refused included), closes the loop and connects
    again with bounded backoff, so the uncommitted batch is read again: the thread never dies, since what reads
    through it (a live view, a robot's commands and model events) must outlive a broker or database outage."""

    def __init__(
        self, name: str, *, connect: Callable[[], MessageLoop], tick: Callable[[], None] = lambda: None
    ) -> None:
        self.name, self._connect, self._tick = name, connect, tick
        self.connected = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def start(self) -> ConsumerThread:
        self._thread.start()
        return self

    def stop(self, timeout_s: float = 5.0) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout_s)

    def wait(self, seconds: float) -> bool:
        """Sleep up to `seconds` unless stopped (True: stopped)."""
        return self._stop.wait(seconds)

    def _run(self) -> None:
        loop: MessageLoop | None = None
        backoff = 0.5
        while not self._stop.is_set():
            try:
                if loop is None:
                    loop = self._connect()
                    self.connected.set()
                    backoff = 0.5
                loop.step()
            except Exception as e:  # noqa: BLE001 - Kafka down, or anything else: a dead thread would go silent
                known = isinstance(e, KafkaError | OSError | TransportError)
                log.log(logging.WARNING if known else logging.ERROR, "%s: %s: %s; reconnecting in %.1f s", self.name,
                        type(e).__name__, e, backoff, exc_info=not known)  # fmt: skip
                if loop is not None:
                    loop.close()
                    loop = None
                self._stop.wait(backoff)
                backoff = min(backoff * 2, 10.0)
                continue
            self._tick()
        if loop is not None:
            loop.close()
        self._tick()
