"""Kafka transport for fleet: topics, a non-blocking spooling producer, consumer groups, dead letters.

Typical use::

    from fleet.transport import KafkaTransport, TransportConfig, publish
    transport = KafkaTransport(TransportConfig.from_settings(spool_name="robot-3"))
    publish(transport, segment)          # never blocks; spools to disk while the broker is down
    transport.close()

Consumers build on `MessageLoop` (decode, dead-letter, dedup, commit after processing).
Modules: `base` (topics, `Transport` / `Consumer` interfaces, config), `producer` (thread + spool
state machine), `spool` (on-disk format), `consumer` (group member + loop), `kafka` (the real transport).
"""

from __future__ import annotations

from fleet.schemas import Message, encode
from fleet.transport.base import (
    COMMANDS,
    CORRECTIONS,
    DEADLETTER,
    HEARTBEATS,
    MODELS,
    REVIEWS,
    REWARDS,
    TOPIC_FOR_KIND,
    TOPICS,
    TRAJECTORIES,
    Consumer,
    Delivery,
    DeliveryCallback,
    ProducerStats,
    Record,
    Transport,
    TransportConfig,
    TransportError,
    kafka_consumer_options,
    kafka_producer_options,
    kafka_security_options,
)
from fleet.transport.consumer import (
    ConsumerThread,
    KafkaGroupConsumer,
    LoopStats,
    MessageLoop,
    Rejected,
    assign_at_end,
    dead_letter,
)
from fleet.transport.kafka import KafkaTransport, ensure_topics, topic_specs
from fleet.transport.producer import SpoolingProducer
from fleet.transport.spool import DiskSpool


def publish(transport: Transport, message: Message, *, on_delivery: DeliveryCallback | None = None) -> bool:
    """Encode a message and send it on its topic, keyed by its robot id (never blocks)."""
    return transport.send(TOPIC_FOR_KIND[message.KIND], encode(message), key=message.key, on_delivery=on_delivery)


__all__ = [
    "COMMANDS",
    "CORRECTIONS",
    "DEADLETTER",
    "HEARTBEATS",
    "MODELS",
    "REVIEWS",
    "REWARDS",
    "TOPICS",
    "TOPIC_FOR_KIND",
    "TRAJECTORIES",
    "Consumer",
    "ConsumerThread",
    "Delivery",
    "DeliveryCallback",
    "DiskSpool",
    "KafkaGroupConsumer",
    "KafkaTransport",
    "LoopStats",
    "MessageLoop",
    "Rejected",
    "ProducerStats",
    "Record",
    "SpoolingProducer",
    "Transport",
    "TransportConfig",
    "TransportError",
    "assign_at_end",
    "kafka_consumer_options",
    "dead_letter",
    "ensure_topics",
    "kafka_producer_options",
    "kafka_security_options",
    "publish",
    "topic_specs",
]
