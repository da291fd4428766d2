"""A three-broker Kafka cluster (`fleet up --kafka-brokers 3`): one broker SIGKILLed while 16 robots stream, and
nothing is lost, nothing doubled, no robot stops acting; another SIGKILLed while the learner trains, and the learner
goes on publishing versions whose data windows tile what was fed (nothing lost, nothing trained twice).

The cluster is started the way `fleet up` starts it (`launcher.services`: three KRaft nodes from the same jars, a
controller quorum of three) on free ports in a temporary home. Sixteen real `RobotRuntime`s (real-time control loops
on a physics-free env) publish through their own spooling Kafka transports; a consumer in the learner's way (a
group member on the learner's topics, committing) reads alongside. One broker is killed mid-stream for good: until
the controller fences it (~9 s) writes to the partitions it led wait in the robots' spools, then every partition
has a leader and two in-sync replicas (min.insync.replicas 2), so acks=all writes go on with one broker gone.
"""

from __future__ import annotations

import contextlib
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kafka import KafkaAdminClient
from kafka.errors import KafkaError

from fleet.registry import Registry
from fleet.settings import Settings
from fleet.stack import launcher
from fleet.stack.kafka import KafkaService
from fleet.stack.process import port_block
from fleet.transport import TRAJECTORIES, TransportConfig, ensure_topics
from learner.service import TOPICS as LEARNER_TOPICS
from tests.faults.helpers import (
    ChildService,
    Feeder,
    StreamReader,
    group_stable,
    kill_service,
    published_up_to,
    start_group_at_end,
    tiles,
    topic_ends,
    wait_for,
)
from tests.faults.robots import TinyFleet

pytestmark = [pytest.mark.integration, pytest.mark.timeout(420)]
BROKERS, ROBOTS, STEPS, HZ = 3, 16, 30, 20.0  # 16 robots, 30-step episodes (3 segments), 20 Hz: 32 segments/s
BEFORE_S, AFTER_S = 4.0, 5.0


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Settings]:
    base = port_block(2 * BROKERS)  # the cluster's nodes take base + 0 .. base + 2 * brokers - 1
    settings = Settings(
        home=tmp_path_factory.mktemp("kafka-cluster"),
        kafka_brokers=BROKERS,
        kafka_port=base,
        kafka_controller_port=base + 1,
        kafka_heap="384m",
    )
    assert [s.name for s in launcher.services(settings)] == ["kafka-1", "kafka-2", "kafka-3", "mlflow"]
    with launcher.kafka_only(settings):  # what `fleet up` does for each node (storage formatted with the shared id)
        yield settings


def _replicas(bootstrap: str, topic: str) -> tuple[list[int], list[int]]:
    """(replica counts, in-sync replica counts) per partition of `topic`; empty while no broker answers (an admin
    client that first tries the dead broker gives up on it)."""
    try:
        admin = KafkaAdminClient(bootstrap_servers=bootstrap.split(","))
    except KafkaError:
        return [], []
    try:
        (described,) = admin.describe_topics([topic])
        parts = described["partitions"]
        return [len(p["replica_nodes"]) for p in parts], [len(p["isr_nodes"]) for p in parts]
    except KafkaError:
        return [], []
    finally:
        admin.close()


def test_one_broker_of_three_killed_while_16_robots_stream(
    cluster: Settings, tmp_path: Path, record_property: Any
) -> None:
    bootstrap = cluster.bootstrap_servers
    assert bootstrap.count(",") == BROKERS - 1  # clients know every broker
    ensure_topics(TransportConfig.from_settings(cluster))
    replicas, in_sync = _replicas(bootstrap, TRAJECTORIES)
    assert replicas == [3] * cluster.kafka_partitions and in_sync == replicas  # the brokers' default: all three

    prefix = f"c{uuid.uuid4().hex[:6]}"
    reader_group = f"learner-{prefix}"
    start_group_at_end(bootstrap, reader_group, LEARNER_TOPICS)
    reader = StreamReader(bootstrap, reader_group, prefix)
    reader.start()
    wait_for(lambda: group_stable(bootstrap, reader_group), 60, "the reader to join its group")

    fleet = TinyFleet(
        cluster.model_copy(update={"home": tmp_path / "robots"}), prefix, ROBOTS, control_hz=HZ, steps=STEPS
    )
    transports = fleet.transports
    victim = KafkaService(cluster, node=1)
    try:
        fleet.start()
        time.sleep(BEFORE_S)
        killed = kill_service(victim)
        expected = [2] * cluster.kafka_partitions  # the controller fences the dead broker (~9 s), ISRs shrink
        wait_for(lambda: _replicas(bootstrap, TRAJECTORIES)[1] == expected, 90, "the dead broker to leave the ISRs")
        shrunk = time.monotonic()
        time.sleep(AFTER_S)  # and the robots go on writing to the two brokers left
        fleet.stop(timeout_s=60)
        for t in transports:
            assert t.transport.flush(timeout_s=120), f"{t.transport.config.client_id}: not acknowledged"
        stats = [t.transport.stats for t in transports]
        produced = fleet.produced
        reader.wait_for_all(produced, 120)
    finally:
        fleet.close()
        reader.stop()
        with contextlib.suppress(Exception):
            victim.prepare().start()  # the module's cluster is whole again for whatever runs next

    after, after_shrink = fleet.sent_since(killed), fleet.sent_since(shrunk)
    episodes = {(r, e) for r, e, _ in produced}
    # The robots: acting throughout (also once the ISRs shrank to the two brokers left), nothing refused or dropped.
    assert after_shrink > 0, "robots stopped producing once a broker died"
    assert len(produced) == len(set(produced)) and len(episodes) * STEPS // 10 == len(produced)
    assert sum(t.refused for t in transports) == 0 and [f for t in transports for f in t.failed] == []
    assert sum(t.acked for t in transports) == sum(t.sends for t in transports)
    # The learner's consumer group (its coordinator may have been on the dead broker): every segment, once.
    assert set(reader.ids) == set(produced)
    assert len(reader.ids) == len(produced), f"{len(reader.ids) - len(produced)} duplicates reached the learner"
    outcome = {
        "brokers": BROKERS,
        "robots": ROBOTS,
        "segments": len(produced),
        "segments_after_kill": after,
        "segments_after_isr_shrink": after_shrink,
        "spooled": sum(s.spooled for s in stats),
        "max_send_ms": round(max(t.max_send_s for t in transports) * 1000, 2),
        "reader_errors": reader.errors,
    }
    record_property("outcome", outcome)
    print("OUTCOME", outcome)


def test_another_broker_killed_while_the_learner_trains(
    cluster: Settings, stack: Settings, mlflow_uri: str, tmp_path: Path, record_property: Any
) -> None:
    """`fleet learner run --preset debug` on the cluster (the session's MLflow for its versions) while a feeder
    streams episodes; a broker dies after its first versions. Its lineage is the proof: the versions' `data_offsets`
    windows tile the fed offsets exactly, and versions keep coming after the kill."""
    bootstrap = cluster.bootstrap_servers
    prefix = f"cl{uuid.uuid4().hex[:6]}"
    settings = stack.model_copy(update={"model_name": f"vla-{prefix}", "kafka_bootstrap": bootstrap})
    ensure_topics(TransportConfig.from_settings(settings))
    registry = Registry(settings, sessions=None)
    start = start_group_at_end(bootstrap, "learner", LEARNER_TOPICS)  # the group `fleet learner run` uses
    run_dir = tmp_path / "run"
    env = {
        "FLEET_MODEL_NAME": settings.model_name,
        "FLEET_METRICS_PORT_LEARNER": "0",
        "FLEET_KAFKA_BOOTSTRAP": bootstrap,
    }
    learner = ChildService(["fleet", "learner", "run", "--preset", "debug", "--run-dir", str(run_dir)], env=env,
                           log_path=tmp_path / "learner.log")  # fmt: skip
    feeder = Feeder(settings, prefix)
    victim = KafkaService(cluster, node=2)  # not the node the first test killed
    try:
        learner.start()
        feeder.start()
        wait_for(lambda: len(registry.list_versions()) >= 2 or not learner.alive(), 300, "two versions")
        assert learner.alive(), learner.log_tail()
        kill_service(victim)
        expected = [2] * cluster.kafka_partitions
        wait_for(lambda: _replicas(bootstrap, TRAJECTORIES)[1] == expected, 90, "the dead broker to leave the ISRs")
        at_shrink = len(registry.list_versions())
        wait_for(lambda: len(registry.list_versions()) >= at_shrink + 2 or not learner.alive(), 150, "new versions")
        assert learner.alive(), learner.log_tail()
        feeder.stop()
        end = topic_ends(bootstrap, LEARNER_TOPICS)

        wait_for(lambda: published_up_to(run_dir, start, end), 150, "the learner to publish everything fed")
        assert learner.stop() == 0, learner.log_tail()
    finally:
        feeder.stopping.set()
        learner.kill()
        with contextlib.suppress(Exception):
            victim.prepare().start()

    versions = registry.list_versions()
    fed = {tp: o for tp, o in start.items() if end[tp] > o}
    records = tiles(versions, fed, end)  # every record in exactly one version's window: none lost, none twice
    assert records == sum(end[tp] - o for tp, o in fed.items()) == feeder.episodes * 3  # and none doubled on the log
    assert [v.parent_version for v in versions] == [None] + [v.version for v in versions[:-1]]
    outcome = {"records": records, "episodes": feeder.episodes, "versions": len(versions),
               "versions_after_isr_shrink": len(versions) - at_shrink}  # fmt: skip
    record_property("outcome", outcome)
    print("OUTCOME", outcome)
