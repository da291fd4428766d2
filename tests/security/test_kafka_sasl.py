"""docker-compose's Kafka security, run for real: the broker settings, the kafka-setup job and fleet's SASL clients.

No Docker here, so the test does what the compose file asks of the `apache/kafka` image by hand: it turns the
kafka service's `KAFKA_*` variables into server.properties (the image's rule: `_` → `.`, `__` → `_`, `___` → `-`),
changes only addresses and paths, and starts the pinned Kafka jars with it. Then it runs the kafka-setup job's own
script (topics, SCRAM users, the ACL table) as the admin, and checks each service's SCRAM user, configured the way
compose configures it (FLEET_KAFKA_* → Settings → TransportConfig), can do its job and nothing else.
"""

from __future__ import annotations

import os
import re
import secrets
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from kafka import KafkaConsumer, KafkaProducer
from kafka.errors import KafkaError, TopicAuthorizationFailedError

from fleet.settings import Settings
from fleet.stack.kafka import KAFKA_VERSION, _cluster_id
from fleet.stack.process import free_port
from fleet.transport import (
    COMMANDS,
    CORRECTIONS,
    MODELS,
    TRAJECTORIES,
    KafkaGroupConsumer,
    KafkaTransport,
    TransportConfig,
    ensure_topics,
    kafka_security_options,
    publish,
)
from tests.data.factories import make_segment

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]
ROOT = Path(__file__).resolve().parents[2]
SECRETS = tuple(sorted(set(re.findall(r"\$\{(\w+):\?", (ROOT / "docker-compose.yml").read_text()))))  # all it asks for
NOT_BROKER_SETTINGS = ("KAFKA_HEAP_OPTS", "KAFKA_OPTS", "KAFKA_LOG4J_OPTS", "KAFKA_JMX_OPTS")


def interpolate(value: Any, env: dict[str, str]) -> str:
    """What compose does to a value: `${VAR:?msg}` / `${VAR}` from the environment, `$$` → `$`."""

    def var(match: re.Match[str]) -> str:
        if match.group(1) not in env:
            raise KeyError(f"compose needs {match.group(1)}")
        return env[match.group(1)]

    return re.sub(r"\$\{(\w+)(?::\?[^}]*)?\}", var, str(value)).replace("$$", "$")


def broker_property(name: str) -> str:
    """As the apache/kafka image: KAFKA_LISTENER_NAME_SASL__PLAINTEXT_SCRAM___SHA___512_X
    → listener.name.sasl_plaintext.scram-sha-512.x"""
    key = name.removeprefix("KAFKA_").lower()
    return key.replace("___", "\0").replace("__", "\1").replace("_", ".").replace("\0", "-").replace("\1", "_")


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


@pytest.fixture(scope="module")
def passwords() -> dict[str, str]:
    return {name: secrets.token_urlsafe(18) for name in SECRETS}


@pytest.fixture(scope="module")
def broker(
    compose: dict[str, Any], passwords: dict[str, str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """The compose kafka service's settings on the pinned jars, at 127.0.0.1:<free port>."""
    libs = Settings().cache_dir / f"kafka-{KAFKA_VERSION}" / "libs"
    if not any(libs.glob("kafka_2.13-*.jar")):
        pytest.fail(f"Kafka jars missing in {libs}: run `fleet up` once (it fetches and checksums them)")
    home = tmp_path_factory.mktemp("sasl-broker")
    port, cport = free_port(), free_port()
    props = {
        broker_property(k): interpolate(v, passwords)
        for k, v in compose["services"]["kafka"]["environment"].items()
        if k.startswith("KAFKA_") and k not in NOT_BROKER_SETTINGS
    }
    props.update(  # addresses, paths and replication only; security settings stay exactly as compose has them
        {
            "listeners": f"SASL_PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{cport}",
            "advertised.listeners": f"SASL_PLAINTEXT://127.0.0.1:{port}",
            "controller.quorum.voters": f"1@127.0.0.1:{cport}",
            "log.dirs": str(home / "data"),
            "num.network.threads": "2",
            "num.io.threads": "2",
            "offsets.topic.num.partitions": "4",
            "group.initial.rebalance.delay.ms": "0",
            "share.coordinator.state.topic.replication.factor": "1",
            "share.coordinator.state.topic.min.isr": "1",
            # one node of compose's three-broker cluster: replication as a lone broker can hold it
            "default.replication.factor": "1",
            "min.insync.replicas": "1",
            "offsets.topic.replication.factor": "1",
            "transaction.state.log.replication.factor": "1",
            "transaction.state.log.min.isr": "1",
        }
    )
    (home / "server.properties").write_text("".join(f"{k}={v}\n" for k, v in props.items()))
    java = ["java", "-Xmx320m", "-Xms320m", "-XX:+UseG1GC", "-XX:ActiveProcessorCount=2", "-cp", f"{libs}/*"]
    subprocess.run(
        [*java, "kafka.tools.StorageTool", "format", "-t", _cluster_id(), "-c", str(home / "server.properties")],
        check=True, capture_output=True, timeout=120,
    )  # fmt: skip
    log = (home / "kafka.log").open("wb")
    process = subprocess.Popen([*java, "kafka.Kafka", str(home / "server.properties")], stdout=log, stderr=log)
    bootstrap = f"127.0.0.1:{port}"
    try:
        admin = _admin_config(bootstrap, passwords)
        deadline = time.monotonic() + 120
        while True:
            try:
                ensure_topics(admin, timeout_s=10)  # also proves the admin's PLAIN login works
                break
            except Exception as e:
                if process.poll() is not None or time.monotonic() > deadline:
                    tail = (home / "kafka.log").read_text()[-3000:]
                    raise AssertionError(f"SASL broker did not come up: {e}\n{tail}") from e
                time.sleep(1.0)
        yield bootstrap
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
        log.close()


def _admin_config(bootstrap: str, passwords: dict[str, str]) -> TransportConfig:
    return TransportConfig(
        bootstrap=bootstrap,
        client_id="test-admin",
        security_protocol="SASL_PLAINTEXT",
        sasl_mechanism="PLAIN",
        sasl_username="admin",
        sasl_password=passwords["KAFKA_ADMIN_PASSWORD"],
        connect_timeout_s=5.0,
    )


@pytest.fixture(scope="module")
def provisioned(compose: dict[str, Any], passwords: dict[str, str], broker: str) -> str:
    """The kafka-setup job's script, run as compose runs it (its environment, the admin's credentials)."""
    service = compose["services"]["kafka-setup"]
    env = {k: interpolate(v, passwords) for k, v in service["environment"].items()}
    env.update(FLEET_KAFKA_BOOTSTRAP=broker, PATH=os.environ["PATH"], HOME=os.environ.get("HOME", "/tmp"))
    assert service["entrypoint"] == ["python", "-c"]
    for _ in range(2):  # idempotent: a second `docker compose up` runs it again
        script = service["command"][0]
        done = subprocess.run(
            [sys.executable, "-c", script], env=env, cwd=ROOT, capture_output=True, text=True, timeout=120
        )
        assert done.returncode == 0, done.stderr[-3000:]
        assert "SCRAM users" in done.stdout
    return broker


def service_config(compose: dict[str, Any], passwords: dict[str, str], name: str, bootstrap: str) -> TransportConfig:
    """A compose service's Kafka client settings: its FLEET_KAFKA_* variables → Settings → TransportConfig."""
    env = {k: interpolate(v, passwords) for k, v in compose["services"][name]["environment"].items()}
    settings = Settings(
        kafka_bootstrap=bootstrap,
        kafka_security_protocol=env["FLEET_KAFKA_SECURITY_PROTOCOL"],
        kafka_sasl_mechanism=env["FLEET_KAFKA_SASL_MECHANISM"],
        kafka_sasl_username=env["FLEET_KAFKA_SASL_USERNAME"],
        kafka_sasl_password=env["FLEET_KAFKA_SASL_PASSWORD"],
    )
    return TransportConfig.from_settings(settings, client_id=f"test-{name}", connect_timeout_s=5.0)


def produce(config: TransportConfig, topic: str) -> None:
    producer = KafkaProducer(
        bootstrap_servers=config.bootstrap, max_block_ms=10_000, request_timeout_ms=10_000,
        **kafka_security_options(config),
    )  # fmt: skip
    try:
        producer.send(topic, b"probe", key=b"k").get(timeout=15)
    finally:
        producer.close(timeout=5)


def consume(config: TransportConfig, topic: str, group: str) -> None:
    consumer = KafkaConsumer(
        topic, bootstrap_servers=config.bootstrap, group_id=group, enable_auto_commit=False,
        auto_offset_reset="earliest", **kafka_security_options(config),
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 60  # allowed: assigned in seconds; refused: raises, late on a loaded machine
        while time.monotonic() < deadline and not consumer.assignment():
            consumer.poll(timeout_ms=500)
    finally:
        consumer.close(autocommit=False)


def test_unauthenticated_and_wrong_password_clients_get_nothing(provisioned: str, passwords: dict[str, str]) -> None:
    plain = TransportConfig(bootstrap=provisioned, connect_timeout_s=3.0)
    with pytest.raises(KafkaError):
        produce(plain, TRAJECTORIES)
    wrong = TransportConfig(
        bootstrap=provisioned, security_protocol="SASL_PLAINTEXT", sasl_mechanism="SCRAM-SHA-512",
        sasl_username="robots", sasl_password="not-" + passwords["KAFKA_ROBOTS_PASSWORD"], connect_timeout_s=3.0,
    )  # fmt: skip
    with pytest.raises(KafkaError):
        produce(wrong, TRAJECTORIES)


def test_robots_send_data_through_fleets_transport_and_nothing_else(
    compose: dict[str, Any], passwords: dict[str, str], provisioned: str
) -> None:
    robots = service_config(compose, passwords, "actors", provisioned)
    assert ensure_topics(robots) == []  # Describe suffices: every topic exists, nothing to create
    transport = KafkaTransport(robots)
    errors: list[str | None] = []
    try:
        assert publish(transport, make_segment("robot-sasl", size=4), on_delivery=lambda d: errors.append(d.error))
        assert transport.flush(30) and errors == [None]
    finally:
        transport.close()
    consume(robots, MODELS, "robot-sasl")  # reads models in its own robot-* group
    with pytest.raises(TopicAuthorizationFailedError):
        produce(robots, COMMANDS)  # only operators (the dashboard) command robots
    with pytest.raises(TopicAuthorizationFailedError):
        produce(robots, MODELS)
    with pytest.raises(TopicAuthorizationFailedError):
        consume(robots, TRAJECTORIES, "robot-sasl")  # other robots' data


def test_recorder_consumes_trajectories_in_its_group_only(
    compose: dict[str, Any], passwords: dict[str, str], provisioned: str
) -> None:
    recorder = service_config(compose, passwords, "recorder", provisioned)
    consumer = KafkaGroupConsumer(recorder, group_id="recorder", topics=[TRAJECTORIES])
    try:
        records: list[Any] = []
        deadline = time.monotonic() + 30
        while not records and time.monotonic() < deadline:
            records = consumer.poll(timeout_s=1.0, max_records=100)
        assert records, "the recorder user read nothing from fleet.trajectories"
        consumer.commit(records)
    finally:
        consumer.close()
    with pytest.raises(TopicAuthorizationFailedError):
        produce(recorder, COMMANDS)
    with pytest.raises(KafkaError):
        consume(recorder, TRAJECTORIES, "learner")  # someone else's group


def test_dashboard_commands_robots_and_learner_publishes_models(
    compose: dict[str, Any], passwords: dict[str, str], provisioned: str
) -> None:
    dashboard = service_config(compose, passwords, "dashboard", provisioned)
    produce(dashboard, COMMANDS)
    consume(dashboard, CORRECTIONS, "dashboard-corrections")
    learner = service_config(compose, passwords, "learner", provisioned)
    produce(learner, MODELS)
    consume(learner, CORRECTIONS, "learner")
    with pytest.raises(TopicAuthorizationFailedError):
        produce(learner, COMMANDS)
