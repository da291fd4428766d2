"""The real `Transport`: kafka-python producer (with spool) and consumer groups, plus topic creation."""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Mapping, Sequence

from kafka.admin import KafkaAdminClient
from kafka.errors import KafkaError, TopicAlreadyExistsError

from fleet.transport.base import (
    DEADLETTER,
    TOPICS,
    TRAJECTORIES,
    DeliveryCallback,
    Headers,
    ProducerStats,
    TransportConfig,
    TransportError,
    kafka_security_options,
)
from fleet.transport.consumer import KafkaGroupConsumer
from fleet.transport.producer import SpoolingProducer

log = logging.getLogger(__name__)


def topic_specs(config: TransportConfig) -> dict[str, dict[str, object]]:
    """What `ensure_topics` creates: every fleet topic, keyed by robot id, sized for large segments."""
    big = {"max.message.bytes": str(config.max_request_bytes)}
    specs: dict[str, dict[str, object]] = {}
    for topic in TOPICS:
        configs: dict[str, str] = dict(big) if topic in (TRAJECTORIES, DEADLETTER) else {}
        specs[topic] = {
            "num_partitions": config.partitions,
            "replication_factor": config.replication_factor or -1,  # -1: the brokers' default
            "configs": configs,
        }
    return specs


def ensure_topics(config: TransportConfig, *, timeout_s: float = 30.0) -> list[str]:
    """Create missing fleet topics (idempotent); returns the names it created."""
    try:
        admin = KafkaAdminClient(
            bootstrap_servers=config.bootstrap.split(","),
            client_id=f"{config.client_id}-admin",
            bootstrap_timeout_ms=int(config.connect_timeout_s * 1000),
            **kafka_security_options(config),
        )
    except KafkaError as e:
        raise TransportError(
            f"Kafka not reachable at {config.bootstrap} ({e}): run `fleet up` or set FLEET_KAFKA_BOOTSTRAP"
        ) from e
    try:
        existing = set(admin.list_topics())
        missing = {name: spec for name, spec in topic_specs(config).items() if name not in existing}
        if not missing:
            return []
        # Another service may create them between list and create: that is fine.
        with contextlib.suppress(TopicAlreadyExistsError):
            admin.create_topics(missing, timeout_ms=int(timeout_s * 1000), wait_for_metadata=True)
        log.info("created Kafka topics %s (%d partitions)", sorted(missing), config.partitions)
        return sorted(missing)
    finally:
        admin.close()


class KafkaTransport:
    """`Transport` over a real broker. The producer thread starts on the first `send`."""

    def __init__(self, config: TransportConfig, *, create_topics: bool = True) -> None:
        self.config = config
        self.create_topics = create_topics  # producer creates missing topics when it connects
        self._producer: SpoolingProducer | None = None
        self._lock = threading.Lock()

    @property
    def producer(self) -> SpoolingProducer:
        producer = self._producer
        if producer is not None:  # hot path: no lock once started
            return producer
        with self._lock:
            if self._producer is None:
                self._producer = SpoolingProducer(self.config, on_connect=self._on_connect)
            return self._producer

    def _on_connect(self) -> None:
        if self.create_topics:
            ensure_topics(self.config)

    @property
    def stats(self) -> ProducerStats:
        return self.producer.stats

    def send(
        self,
        topic: str,
        value: bytes,
        *,
        key: str | None,
        headers: Headers = (),
        on_delivery: DeliveryCallback | None = None,
    ) -> bool:
        return (self._producer or self.producer).send(topic, value, key=key, headers=headers, on_delivery=on_delivery)

    def flush(self, timeout_s: float = 30.0) -> bool:
        return self._producer is None or self._producer.flush(timeout_s)

    def consumer(
        self, *, group_id: str | None, topics: Sequence[str], start_at: Mapping[tuple[str, int], int] | None = None
    ) -> KafkaGroupConsumer:
        return KafkaGroupConsumer(self.config, group_id=group_id, topics=topics, start_at=start_at)

    def close(self, timeout_s: float = 10.0) -> None:
        with self._lock:
            producer, self._producer = self._producer, None
        if producer is not None:
            producer.close(timeout_s)


class GroupLag:
    """Other processes' consumer groups' lag, read again and again over one admin client and one reader (a monitor
    that asks every second must not connect to every broker every second). TransportError when Kafka cannot tell;
    the clients are then made anew at the next `rows`."""

    def __init__(self, config: TransportConfig) -> None:
        self.config = config
        self._admin: KafkaAdminClient | None = None
        self._reader: KafkaGroupConsumer | None = None

    def rows(self, groups: Sequence[str]) -> list[dict[str, object]]:
        """One row per (group, topic): committed offset, end offset and lag summed over partitions (a group's own
        lag, as it polls, is `KafkaGroupConsumer.lag`)."""
        try:
            if self._admin is None:
                self._admin = KafkaAdminClient(
                    bootstrap_servers=self.config.bootstrap.split(","), client_id="fleet-lag",
                    bootstrap_timeout_ms=int(self.config.connect_timeout_s * 1000),
                    **kafka_security_options(self.config),
                )  # fmt: skip
        except KafkaError as e:
            raise TransportError(f"Kafka not reachable at {self.config.bootstrap} ({e}): run `fleet up`") from None
        try:
            if self._reader is None:
                self._reader = KafkaGroupConsumer(self.config, group_id=None, topics=())
            rows: list[dict[str, object]] = []
            for group in groups:
                committed = self._admin.list_group_offsets(group).get(group, {})
                if not committed:
                    continue
                ends = self._reader.end_offsets([(tp.topic, tp.partition) for tp in committed])
                per_topic: dict[str, dict[str, int]] = {}
                for tp, meta in committed.items():
                    row = per_topic.setdefault(tp.topic, {"committed": 0, "end": 0, "lag": 0, "partitions": 0})
                    end, done = ends.get((tp.topic, tp.partition), 0), max(int(meta.offset), 0)
                    row["committed"] += done
                    row["end"] += end
                    row["lag"] += max(end - done, 0)
                    row["partitions"] += 1
                rows.extend({"group": group, "topic": topic, **per_topic[topic]} for topic in sorted(per_topic))
            return rows
        except (KafkaError, KeyError) as e:
            self.close()
            raise TransportError(f"could not read consumer offsets from {self.config.bootstrap}: {e!r}") from None

    def close(self) -> None:
        reader, admin, self._reader, self._admin = self._reader, self._admin, None, None
        if reader is not None:
            reader.close()
        if admin is not None:
            admin.close()


def group_lag(config: TransportConfig, groups: Sequence[str]) -> list[dict[str, object]]:
    """`GroupLag.rows` once (a page view)."""
    lag = GroupLag(config)
    try:
        return lag.rows(groups)
    finally:
        lag.close()
