"""Consumer lag per topic for the fleet's consumer groups (the Training page)."""

from __future__ import annotations

from typing import Any

from kafka import KafkaConsumer
from kafka.admin import KafkaAdminClient
from kafka.errors import KafkaError

from dashboards.errors import Unavailable
from fleet.transport import TransportConfig, kafka_consumer_options, kafka_security_options

GROUPS = ("recorder", "learner")


def consumer_lag(config: TransportConfig, *, groups: tuple[str, ...] = GROUPS) -> list[dict[str, Any]]:
    """One row per (group, topic): committed offset, end offset and lag summed over partitions."""
    servers = config.bootstrap.split(",")
    timeout_ms = int(config.connect_timeout_s * 1000)
    try:
        security = kafka_security_options(config)
        admin = KafkaAdminClient(
            bootstrap_servers=servers, client_id="dashboard-lag", bootstrap_timeout_ms=timeout_ms, **security
        )
        consumer = KafkaConsumer(**kafka_consumer_options(config, client_id="dashboard-lag"), group_id=None)
    except KafkaError as e:
        raise Unavailable(f"Kafka not reachable at {config.bootstrap} ({e}): run `fleet up`") from None
    try:
        consumer.topics()  # load topic metadata first: end_offsets on a fresh client can miss it (KeyError)
        rows: list[dict[str, Any]] = []
        for group in groups:
            committed = admin.list_group_offsets(group).get(group, {})
            if not committed:
                continue
            ends = consumer.end_offsets(list(committed))
            per_topic: dict[str, dict[str, Any]] = {}
            for tp, meta in committed.items():
                row = per_topic.setdefault(
                    tp.topic, {"group": group, "topic": tp.topic, "committed": 0, "end": 0, "lag": 0, "partitions": 0}
                )
                end = int(ends.get(tp, 0))
                done = max(int(meta.offset), 0)
                row["committed"] += done
                row["end"] += end
                row["lag"] += max(end - done, 0)
                row["partitions"] += 1
            rows.extend(per_topic[t] for t in sorted(per_topic))
        return rows
    except (KafkaError, KeyError) as e:
        raise Unavailable(f"could not read consumer offsets from {config.bootstrap}: {e!r}") from None
    finally:
        consumer.close()
        admin.close()
