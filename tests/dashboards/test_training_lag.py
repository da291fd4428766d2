"""Consumer lag per topic from the real broker (the Training page's data)."""

from __future__ import annotations

import uuid

import pytest
from kafka import KafkaConsumer, KafkaProducer

from dashboards.lag import consumer_lag
from fleet.transport import REWARDS, TransportConfig, ensure_topics

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]


def test_lag_is_end_minus_committed(kafka_bootstrap: str) -> None:
    config = TransportConfig(bootstrap=kafka_bootstrap)
    ensure_topics(config)
    group = f"lag-{uuid.uuid4().hex[:8]}"
    producer = KafkaProducer(bootstrap_servers=kafka_bootstrap)
    for i in range(5):
        producer.send(REWARDS, key=b"lag-robot", value=f"m{i}".encode())
    producer.flush()
    producer.close()
    consumer = KafkaConsumer(
        REWARDS,
        bootstrap_servers=kafka_bootstrap,
        group_id=group,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    read = 0
    while read < 2:
        for records in consumer.poll(timeout_ms=1000, max_records=2 - read).values():
            read += len(records)
    consumer.commit()
    consumer.close()
    [row] = consumer_lag(config, groups=(group,))
    assert row["topic"] == REWARDS and row["group"] == group
    assert row["lag"] == row["end"] - row["committed"] >= 3
