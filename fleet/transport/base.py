"""The transport boundary: topic names, the record shape and the small interfaces above Kafka.

Code above the transport (recorder, learner, actors, dashboard) depends on `Transport` and
`Consumer` only, so its unit tests run against a fake (tests/, never fleet/).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

TRAJECTORIES = "fleet.trajectories"
CORRECTIONS = "fleet.corrections"
REWARDS = "fleet.rewards"
HEARTBEATS = "fleet.heartbeats"
MODELS = "fleet.models"
REVIEWS = "fleet.reviews"
COMMANDS = "fleet.commands"
DEADLETTER = "fleet.deadletter"
TOPICS: tuple[str, ...] = (TRAJECTORIES, CORRECTIONS, REWARDS, HEARTBEATS, MODELS, REVIEWS, COMMANDS, DEADLETTER)

# Which topic each message kind (fleet.schemas `KIND`) travels on.
TOPIC_FOR_KIND: dict[str, str] = {
    "trajectory_segment": TRAJECTORIES,
    "correction": CORRECTIONS,
    "reward_signal": REWARDS,
    "heartbeat": HEARTBEATS,
    "model_event": MODELS,
    "review": REVIEWS,
    "command": COMMANDS,
}

Headers = Sequence[tuple[str, bytes]]


class Outstanding:
    """The messages a spooling transport accepted and has not yet delivered or dropped, and a wait until there are
    none. The Kafka producer and the HTTPS transport each keep one under their own lock; every method but the
    constructor is called with that lock held."""

    def __init__(self, lock: threading.Lock, count: int) -> None:
        self.count = count  # found in the spool at start, then accepted minus delivered or dropped
        self._drained = threading.Condition(lock)

    def add(self) -> None:
        self.count += 1

    def release(self, count: int) -> None:
        self.count -= count
        if self.count <= 0:
            self._drained.notify_all()

    def wait(self, timeout_s: float, working: Callable[[], bool]) -> bool:
        """True once nothing is outstanding; False after `timeout_s`, or at once when `working()` says the thread
        that delivers has died (waiting on it would be waiting for nothing)."""
        deadline = time.monotonic() + timeout_s
        while self.count > 0:
            left = deadline - time.monotonic()
            if left <= 0 or not working():
                return False
            self._drained.wait(min(left, 0.1))
        return True


class TransportError(RuntimeError):
    """The transport cannot do its job (broker unreachable at start, topic creation refused, ...)."""


@dataclass(frozen=True)
class Record:
    """One consumed Kafka record, as code above the transport sees it."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes
    headers: tuple[tuple[str, bytes], ...] = ()
    timestamp_ms: int = -1  # broker/producer timestamp; -1 when unknown


@dataclass(frozen=True)
class Delivery:
    """Outcome of one `send`, passed to its `on_delivery` callback (from a transport thread)."""

    topic: str
    key: str | None
    partition: int | None  # None when not delivered
    offset: int | None
    error: str | None  # None on success; a reason when the message was dropped for good


DeliveryCallback = Callable[[Delivery], None]


class Consumer(Protocol):
    """A consumer-group member: poll, process, then commit what was processed."""

    def poll(self, *, timeout_s: float, max_records: int) -> list[Record]: ...

    def commit(self, records: Sequence[Record]) -> None:
        """Commit offsets past `records` (synchronously); call only after they are processed."""
        ...

    def commit_offsets(self, offsets: Mapping[tuple[str, int], int]) -> None:
        """Commit {(topic, partition): the next offset to read} as given (synchronously), for a service that keeps
        some records it has read in memory only and so commits short of them (the recorder's episodes in progress)."""
        ...

    def assignment(self) -> tuple[int, frozenset[tuple[str, int]]]:
        """(generation, the partitions this member holds): the generation changes whenever the group reassigns,
        after which each partition is read again from its committed offset."""
        ...

    def close(self) -> None: ...


class Transport(Protocol):
    """Producer side plus a consumer factory; `send` never blocks (it hands off to a thread)."""

    def send(
        self,
        topic: str,
        value: bytes,
        *,
        key: str | None,
        headers: Headers = (),
        on_delivery: DeliveryCallback | None = None,
    ) -> bool:
        """Queue a message; False when it had to be dropped (queue and spool full)."""
        ...

    def flush(self, timeout_s: float = 30.0) -> bool:
        """Wait until everything sent so far is acknowledged; False on timeout (rest stays queued/spooled)."""
        ...

    def consumer(
        self, *, group_id: str | None, topics: Sequence[str], start_at: Mapping[tuple[str, int], int] | None = None
    ) -> Consumer:
        """A group member reading `topics`; `start_at` {(topic, partition): offset} overrides the group's committed
        offsets for those partitions whenever they are assigned (a service whose checkpoint holds its offsets).
        `group_id=None`: no group, every partition read from its current end, nothing committed (a live view)."""
        ...

    def close(self, timeout_s: float = 10.0) -> None: ...


@dataclass(frozen=True)
class TransportConfig:
    """How fleet talks to Kafka. Build with `TransportConfig.from_settings()` in services."""

    bootstrap: str  # host:port[,host:port] of the brokers
    client_id: str = "fleet"  # shows up in broker logs and metrics
    partitions: int = 4  # partitions per topic when fleet creates them (keyed by robot id)
    replication_factor: int | None = None  # replicas per topic; None = the brokers' default.replication.factor
    compression: str | None = "lz4"  # frames are already zstd'd; lz4 is cheap on the rest of the payload
    linger_ms: int = 5  # batch window: trades ≤5 ms latency for far fewer requests
    batch_size: int = 256 * 1024  # max bytes per partition batch
    max_request_bytes: int = 8 * 1024 * 1024  # largest message accepted (topics are created to match)
    queue_size: int = 10_000  # hand-off queue between `send()` and the producer thread
    spool_dir: Path | None = None  # where messages wait while the broker is down; None = in memory (lost on exit)
    spool_max_bytes: int = 1024**3  # spool bound; beyond it new messages are dropped (and counted)
    spool_segment_bytes: int = 16 * 1024**2  # spool file size before rolling; replayed files are deleted whole
    connect_timeout_s: float = 5.0  # bootstrap wait per connection attempt (from the producer thread)
    max_block_s: float = 5.0  # longest a send may wait for metadata/buffer inside the producer thread
    stall_s: float = 3.0  # in-flight messages without any ack this long => broker considered down => spool
    probe_interval_s: float = 1.0  # how often a down broker is probed (TCP connect) for its return
    delivery_timeout_s: float = 120.0  # kafka-python's own retry window for an in-flight message
    max_poll_records: int = 500  # consumer batch size
    session_timeout_s: float = 10.0  # consumer-group liveness; a dead recorder's partitions move after this
    security_protocol: str = "PLAINTEXT"  # PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL (FLEET_KAFKA_SECURITY_PROTOCOL)
    sasl_mechanism: str | None = None  # SCRAM-SHA-512 / SCRAM-SHA-256 / PLAIN when the protocol is SASL_*
    sasl_username: str | None = None  # this service's SASL user
    sasl_password: str | None = field(default=None, repr=False)  # never printed with the config
    ssl_cafile: str | None = None  # CA bundle for SSL / SASL_SSL; None = system trust store

    def __post_init__(self) -> None:
        if not self.bootstrap:
            raise ValueError("TransportConfig.bootstrap is empty: run `fleet up` or set FLEET_KAFKA_BOOTSTRAP")
        if self.partitions < 1 or (self.replication_factor is not None and self.replication_factor < 1):
            raise ValueError("partitions and replication_factor must be >= 1")
        if self.queue_size < 1 or self.spool_max_bytes < self.spool_segment_bytes:
            raise ValueError("queue_size must be >= 1 and spool_max_bytes >= spool_segment_bytes")
        if self.stall_s <= 0 or self.probe_interval_s <= 0:
            raise ValueError("stall_s and probe_interval_s must be positive")
        if self.security_protocol.startswith("SASL_") and not (
            self.sasl_mechanism and self.sasl_username and self.sasl_password
        ):
            raise ValueError(
                f"security_protocol {self.security_protocol} needs sasl_mechanism, sasl_username and sasl_password:"
                " set FLEET_KAFKA_SASL_MECHANISM / _USERNAME / _PASSWORD"
            )

    @classmethod
    def from_settings(cls, settings: object | None = None, *, spool_name: str | None = None, **overrides: object):
        """Config from `fleet.settings.Settings`; `spool_name` enables a spool under `<home>/spool/<name>`."""
        from fleet.settings import Settings, get_settings

        s: Settings = settings if isinstance(settings, Settings) else get_settings()
        base: dict[str, object] = {
            "bootstrap": s.bootstrap_servers,
            "partitions": s.kafka_partitions,
            "replication_factor": s.kafka_replication_factor,
            "security_protocol": s.kafka_security_protocol,
            "sasl_mechanism": s.kafka_sasl_mechanism,
            "sasl_username": s.kafka_sasl_username,
            "sasl_password": s.kafka_sasl_password.get_secret_value() if s.kafka_sasl_password else None,
            "ssl_cafile": str(s.kafka_ssl_cafile) if s.kafka_ssl_cafile else None,
        }
        if spool_name is not None:
            base["spool_dir"] = s.home / "spool" / spool_name
            base["spool_max_bytes"] = s.spool_max_bytes
            base["spool_segment_bytes"] = min(cls.spool_segment_bytes, s.spool_max_bytes)
        base.update(overrides)
        return cls(**base)  # type: ignore[arg-type]


@dataclass
class ProducerStats:
    """Counters a service exports (and a robot puts in its heartbeat)."""

    sent: int = 0  # handed to Kafka directly
    acked: int = 0  # acknowledged by the broker (acks=all)
    spooled: int = 0  # written to the disk spool
    replayed: int = 0  # sent again from the spool
    dropped: int = 0  # lost: queue full with no spool room, or a permanent send error
    errors: dict[str, int] = field(default_factory=dict)  # error name -> count


def kafka_security_options(config: TransportConfig) -> dict[str, Any]:
    """kafka-python connection security settings; every producer, consumer and admin client fleet builds uses them."""
    options: dict[str, Any] = {"security_protocol": config.security_protocol}
    if config.security_protocol.startswith("SASL_"):
        options.update(
            sasl_mechanism=config.sasl_mechanism,
            sasl_plain_username=config.sasl_username,
            sasl_plain_password=config.sasl_password,
        )
    if config.security_protocol in ("SSL", "SASL_SSL") and config.ssl_cafile:
        options["ssl_cafile"] = config.ssl_cafile
    return options


def kafka_consumer_options(config: TransportConfig, *, client_id: str) -> dict[str, Any]:
    """kafka-python settings every consumer fleet builds shares (group members and partition readers alike)."""
    return {
        "bootstrap_servers": config.bootstrap.split(","),
        "client_id": client_id,
        "reconnect_backoff_max_ms": 1000,  # reconnect within ~1 s of the broker's return (default backs off to 30 s)
        # A group whose leader assigned before it had a topic's partitions (a topic just created, metadata not yet
        # propagated: "No partition metadata") gets nothing for it until the leader's metadata changes; kafka-python
        # refreshes every 5 minutes by default. Every 10 s, the group rebalances and gets them within seconds.
        "metadata_max_age_ms": 10_000,
        "bootstrap_timeout_ms": int(config.connect_timeout_s * 1000),
        **kafka_security_options(config),
    }


def kafka_producer_options(config: TransportConfig) -> dict[str, Any]:
    """kafka-python settings shared by fleet's producer and the raw baseline in bench/ingest.py."""
    return {
        "bootstrap_servers": config.bootstrap.split(","),
        "client_id": config.client_id,
        **kafka_security_options(config),
        # kafka-python 3.x defaults these, but a conflicting option silently disables idempotence: be explicit.
        "acks": "all",
        "enable_idempotence": True,
        "compression_type": config.compression,
        "linger_ms": config.linger_ms,
        "batch_size": config.batch_size,
        "max_request_size": config.max_request_bytes,
        "max_block_ms": int(config.max_block_s * 1000),
        "request_timeout_ms": 10_000,
        "delivery_timeout_ms": int(config.delivery_timeout_s * 1000),
        "reconnect_backoff_max_ms": 1000,  # reconnect within ~1 s of the broker's return (default backs off to 30 s)
        "bootstrap_timeout_ms": int(config.connect_timeout_s * 1000),
    }
