"""What reading the trajectory stream costs a service's CPU per segment, by Kafka client (issue #34: at 1,000 robots
the machine is ~97% busy and the recorders and the learner's ingest each read every segment).

Starts one local broker (`kafka_only`), writes `--segments` copies of bench/scale.py's recorded two-camera segment
to an 8-partition topic, then reads them all, `--repeats` times in turn, with

* `kafka-python`: fleet's `KafkaGroupConsumer` (the product's consumer, a group member, `Record`s out), and
* `confluent-kafka`: librdkafka's consumer (a group member, `consume(500)`, the same `Record`s built),

and prints the process CPU time (every thread: the clients' fetchers too) per segment for each.

Measured (2026-12-07, 5,696-byte segments, a backlog drained): kafka-python 0.008 ms CPU a segment, librdkafka
0.0035 ms; against the recorder's own ~0.56 ms a segment (research/recorder_profile.py) neither is the cost. A
consumer that keeps up with a live stream fetches a few records at a time and pays more per record than this
drain; the scale bench's recorders spend ~0.18 ms a segment beyond the profile's work, client, PostgreSQL and
fsyncs together.

    PYTHONPATH=.:/tmp/ckpkg .venv/bin/python -m research.kafka_consumer_cost --segments 20000

(`pip install --target /tmp/ckpkg confluent-kafka` first, when the venv does not have it.)
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
import uuid
from pathlib import Path

import msgpack

TOPIC = "probe.trajectories"


def _produce(bootstrap: str, n: int) -> int:
    from kafka import KafkaProducer

    from bench.scale import _template

    body = msgpack.packb(_template(), use_bin_type=True)
    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all", compression_type="lz4", linger_ms=5,
                             batch_size=256 * 1024, max_request_size=8 * 1024 * 1024)  # fmt: skip
    for i in range(n):
        producer.send(TOPIC, body, key=f"robot-{i % 1000}".encode())
    producer.flush(120)
    producer.close()
    return len(body)


def _kafka_python(bootstrap: str, n: int) -> tuple[float, float]:
    from fleet.transport import TransportConfig
    from fleet.transport.consumer import KafkaGroupConsumer

    consumer = KafkaGroupConsumer(TransportConfig(bootstrap=bootstrap), group_id=f"p-{uuid.uuid4().hex[:8]}",
                                  topics=[TOPIC])  # fmt: skip
    return _drain(lambda: consumer.poll(timeout_s=0.5, max_records=500), n, consumer.close)


def _confluent(bootstrap: str, n: int) -> tuple[float, float]:
    from confluent_kafka import Consumer

    from fleet.transport.base import Record

    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"p-{uuid.uuid4().hex[:8]}",
                         "enable.auto.commit": False, "auto.offset.reset": "earliest"})  # fmt: skip
    consumer.subscribe([TOPIC])

    def poll() -> list[Record]:
        out = []
        for m in consumer.consume(500, timeout=0.5):
            if m.error() is None:
                out.append(Record(m.topic(), m.partition(), m.offset(), m.key(), m.value() or b"",
                                  tuple(m.headers() or ()), m.timestamp()[1]))  # fmt: skip
        return out

    return _drain(poll, n, consumer.close)


def _drain(poll, n: int, close) -> tuple[float, float]:  # noqa: ANN001
    """CPU and wall seconds from the first record to the n-th."""
    first, got, cpu0, wall0 = 0, 0, 0.0, 0.0
    deadline = time.monotonic() + 300
    while first + got < n and time.monotonic() < deadline:
        records = poll()
        if records and not first:  # timed from the first batch on: joining the group is not per-segment work
            first, cpu0, wall0 = len(records), time.process_time(), time.monotonic()
        else:
            got += len(records)
    cpu, wall = time.process_time() - cpu0, time.monotonic() - wall0
    close()
    if first + got < n:
        raise RuntimeError(f"read {first + got} of {n}")
    return cpu / got, wall / got


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--segments", type=int, default=20_000)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    from fleet.settings import Settings
    from fleet.stack.launcher import kafka_only
    from fleet.stack.process import port_block

    with tempfile.TemporaryDirectory(prefix="fleet-consumer-cost-") as tmp:
        base = port_block(2)
        settings = Settings(home=Path(tmp), kafka_port=base, kafka_controller_port=base + 1, kafka_partitions=8)
        with kafka_only(settings):
            from kafka.admin import KafkaAdminClient, NewTopic

            bootstrap = settings.bootstrap_servers
            admin = KafkaAdminClient(bootstrap_servers=bootstrap)
            admin.create_topics([NewTopic(TOPIC, 8, 1, topic_configs={"max.message.bytes": str(8 * 1024**2)})])
            admin.close()
            size = _produce(bootstrap, args.segments)
            rows: dict[str, list[tuple[float, float]]] = {"kafka-python": [], "confluent-kafka": []}
            for _ in range(args.repeats):
                rows["kafka-python"].append(_kafka_python(bootstrap, args.segments))
                rows["confluent-kafka"].append(_confluent(bootstrap, args.segments))
    result = {
        "segment_bytes": size, "segments": args.segments,
        **{name: {"cpu_ms_per_segment": [round(1000 * c, 4) for c, _ in r],
                  "median_cpu_ms": round(1000 * statistics.median(c for c, _ in r), 4),
                  "wall_ms_per_segment": [round(1000 * w, 4) for _, w in r]} for name, r in rows.items()},
    }  # fmt: skip
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
