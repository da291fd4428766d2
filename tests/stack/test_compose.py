"""docker-compose.yml: the production stack is complete and takes its secrets from the environment.

No Docker engine or compose plugin exists on the development machines, so this checks structure;
`docker compose config` is the real check where the plugin is installed.
"""

from __future__ import annotations

import re
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]


def _compose() -> dict:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def test_compose_has_every_service() -> None:
    services = _compose()["services"]
    assert {"kafka", "postgres", "mlflow", "recorder", "learner", "actors", "dashboard"} <= set(services)
    assert services["kafka"]["image"].startswith("apache/kafka:4.")
    assert services["kafka"]["environment"]["KAFKA_PROCESS_ROLES"] == "broker,controller"
    for name in ("recorder", "learner", "actors", "dashboard"):
        assert services[name]["build"] == "."
        assert services[name]["environment"]["FLEET_ENV"] == "production"


def test_compose_has_no_inline_secrets() -> None:
    text = (ROOT / "docker-compose.yml").read_text()
    secrets = list(re.finditer(r"^\s*\w*(PASSWORD|SECRET_KEY)\s*:\s*(\S+)", text, re.MULTILINE))
    assert len(secrets) >= 2  # the services' secret key and the PostgreSQL password
    for match in secrets:
        assert match.group(2).startswith("${") and ":?" in match.group(2), match.group(0)
    for match in re.finditer(r"://fleet:([^@]+)@", text):
        assert match.group(1).startswith("${POSTGRES_PASSWORD:?"), match.group(0)


def test_production_settings_refuse_missing_secrets(monkeypatch) -> None:  # noqa: ANN001
    import pydantic
    import pytest

    from fleet.settings import Settings

    monkeypatch.setenv("FLEET_ENV", "production")
    with pytest.raises(pydantic.ValidationError, match="FLEET_KAFKA_BOOTSTRAP"):
        Settings()
    # what a robot is given: no database URL and no secret key, and nothing asks it for them
    monkeypatch.setenv("FLEET_KAFKA_BOOTSTRAP", "kafka:9092")
    monkeypatch.setenv("FLEET_KAFKA_SECURITY_PROTOCOL", "SASL_PLAINTEXT")
    monkeypatch.setenv("FLEET_KAFKA_SASL_MECHANISM", "SCRAM-SHA-512")
    monkeypatch.setenv("FLEET_KAFKA_SASL_USERNAME", "robots")
    monkeypatch.setenv("FLEET_KAFKA_SASL_PASSWORD", "x" * 16)
    monkeypatch.setenv("FLEET_MLFLOW_TRACKING_URI", "http://mlflow:5000")
    robot = Settings()
    # ... and a service that uses the database without its URL fails clearly instead of opening a local file
    with pytest.raises(ValueError, match="production needs FLEET_DATABASE_URL"):
        _ = robot.db_url


def test_each_service_gets_only_the_secrets_it_uses() -> None:
    services = _compose()["services"]
    env = {name: services[name]["environment"] for name in ("recorder", "learner", "actors", "dashboard")}
    assert [name for name, e in env.items() if "FLEET_SECRET_KEY" in e] == ["dashboard"]  # signs its cookies
    assert [name for name, e in env.items() if "FLEET_DATABASE_URL" in e] == ["recorder", "learner", "dashboard"]
    # robots hold only their own Kafka and MLflow users' passwords
    assert not any("PASSWORD" in key or "SECRET" in key or "DATABASE" in key for key in env["actors"]
                   if key not in ("FLEET_KAFKA_SASL_PASSWORD", "MLFLOW_TRACKING_PASSWORD"))  # fmt: skip


def test_each_service_logs_in_to_the_database_as_its_own_role() -> None:
    from fleet.db.roles import default_roles

    services = _compose()["services"]
    roles = default_roles()
    for service, role in roles.items():
        env = services[service]["environment"]
        password = f"POSTGRES_{service.upper()}_PASSWORD"
        assert env["FLEET_DATABASE_URL"].startswith(f"postgresql://{role}:${{{password}:?"), service
        assert env["FLEET_DATABASE_MIGRATE"] == "false", service  # a service role may not change the schema
    # only PostgreSQL and the migration job hold the owner's password; the job runs before any service starts
    owner = [name for name, s in services.items() if "${POSTGRES_PASSWORD" in str(s.get("environment", {}))]
    assert sorted(owner) == ["db-migrate", "postgres"]
    assert services["db-migrate"]["command"] == ["db", "upgrade"]
    for name in ("recorder", "learner", "actors", "dashboard"):
        assert services[name]["depends_on"]["db-migrate"] == {"condition": "service_completed_successfully"}
    # the roles the URLs name are the ones the init script creates, MLflow's included
    init = (ROOT / "docker" / "postgres-init.sh").read_text()
    for role in [*roles.values(), "mlflow"]:
        assert f"CREATE ROLE {role} LOGIN PASSWORD" in init, role
    assert "postgresql+psycopg://mlflow:${POSTGRES_MLFLOW_PASSWORD:?" in " ".join(services["mlflow"]["command"])
    assert "./docker/postgres-init.sh:/docker-entrypoint-initdb.d/10-roles.sh:ro" in services["postgres"]["volumes"]


FLEET_SERVICES = {"recorder": "recorder", "learner": "learner", "actors": "robots", "dashboard": "dashboard"}
ACL_OPERATIONS = {"READ", "WRITE", "DESCRIBE"}


def _acls() -> list[tuple[str, str, str, str]]:
    text = _compose()["services"]["kafka-setup"]["environment"]["FLEET_KAFKA_ACLS"]
    return [tuple(line.split()) for line in text.strip().splitlines()]  # type: ignore[misc]


def _granted(user: str, operation: str, kind: str, name: str) -> bool:
    """Whether the ACL table lets `user` do `operation` on `kind` `name` (prefix grants end in `*`).
    As in Kafka, READ and WRITE imply DESCRIBE."""
    for u, ops, k, n in _acls():
        matches = name.startswith(n[:-1]) if n.endswith("*") else name == n
        allowed = set(ops.split(","))
        if "READ" in allowed or "WRITE" in allowed:
            allowed.add("DESCRIBE")
        if u == user and k == kind and matches and operation in allowed:
            return True
    return False


def test_kafka_brokers_require_sasl_and_acls() -> None:
    env = _compose()["services"]["kafka"]["environment"]
    protocols = dict(item.split(":") for item in env["KAFKA_LISTENER_SECURITY_PROTOCOL_MAP"].split(","))
    assert set(protocols.values()) == {"SASL_PLAINTEXT"}  # no PLAINTEXT listener, the controller's included
    assert all(listener.split("://")[0] in protocols for listener in env["KAFKA_LISTENERS"].split(","))
    assert "SCRAM-SHA-512" in env["KAFKA_SASL_ENABLED_MECHANISMS"].split(",")
    assert env["KAFKA_AUTHORIZER_CLASS_NAME"] == "org.apache.kafka.metadata.authorizer.StandardAuthorizer"
    assert env["KAFKA_SUPER_USERS"] == "User:admin"
    assert str(env["KAFKA_ALLOW_EVERYONE_IF_NO_ACL_FOUND"]).lower() == "false"
    assert str(env["KAFKA_AUTO_CREATE_TOPICS_ENABLE"]).lower() == "false"


def test_kafka_is_a_three_broker_cluster_every_client_knows() -> None:
    compose = _compose()
    services = compose["services"]
    brokers = {name: services[name]["environment"] for name in ("kafka", "kafka-2", "kafka-3")}
    assert sorted(env["KAFKA_NODE_ID"] for env in brokers.values()) == [1, 2, 3]
    voters = {f"{env['KAFKA_NODE_ID']}@{name}:9093" for name, env in brokers.items()}
    for name, env in brokers.items():
        assert set(env["KAFKA_CONTROLLER_QUORUM_VOTERS"].split(",")) == voters  # one quorum of all three
        assert env["KAFKA_ADVERTISED_LISTENERS"] == f"SASL_PLAINTEXT://{name}:9092"
        assert (env["KAFKA_DEFAULT_REPLICATION_FACTOR"], env["KAFKA_MIN_INSYNC_REPLICAS"]) == (3, 2)
        assert env["KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR"] == 3 and env["KAFKA_TRANSACTION_STATE_LOG_MIN_ISR"] == 2
        assert env["CLUSTER_ID"] == brokers["kafka"]["CLUSTER_ID"]  # formatted as one cluster
    assert len({services[name]["volumes"][0] for name in brokers}) == 3  # each its own log dirs
    everyone = {"kafka:9092", "kafka-2:9092", "kafka-3:9092"}
    clients = [name for name, svc in services.items() if "FLEET_KAFKA_BOOTSTRAP" in (svc.get("environment") or {})]
    assert {"kafka-setup", "recorder", "learner", "actors", "dashboard"} <= set(clients)
    for name in clients:  # any two brokers are enough to start
        assert set(services[name]["environment"]["FLEET_KAFKA_BOOTSTRAP"].split(",")) == everyone, name
    assert {f"kafka{s}" for s in ("", "-2", "-3")} <= set(services["kafka-setup"]["depends_on"])


def test_every_fleet_service_has_its_own_scram_user_from_env() -> None:
    services = _compose()["services"]
    users = set()
    for name, user in FLEET_SERVICES.items():
        env = services[name]["environment"]
        assert env["FLEET_KAFKA_SECURITY_PROTOCOL"] in ("SASL_PLAINTEXT", "SASL_SSL"), name
        assert env["FLEET_KAFKA_SASL_MECHANISM"] == "SCRAM-SHA-512", name
        assert env["FLEET_KAFKA_SASL_USERNAME"] == user, name
        assert (
            env["FLEET_KAFKA_SASL_PASSWORD"] == f"${{KAFKA_{user.upper()}_PASSWORD:?set KAFKA_{user.upper()}_PASSWORD}}"
        )
        assert services[name]["depends_on"]["kafka-setup"] == {"condition": "service_completed_successfully"}, name
        users.add(user)
    setup = services["kafka-setup"]["environment"]
    assert {f"{u.upper()}_PASSWORD" for u in users} <= set(setup)
    assert len(users) == len(FLEET_SERVICES)


def test_acls_grant_least_privilege() -> None:
    acls = _acls()
    users = set(FLEET_SERVICES.values())
    for user, ops, kind, name in acls:
        assert user in users and kind in ("topic", "group") and set(ops.split(",")) <= ACL_OPERATIONS, (user, name)
        assert name != "*" and (kind == "group" or name.startswith("fleet.")), name  # no wildcard grants
        if name.endswith("*"):
            assert ops == "DESCRIBE" or (kind == "group" and name == "robot-*"), (user, ops, name)
    # Robots produce their data and read models and commands; nothing else.
    for topic in ("fleet.trajectories", "fleet.corrections", "fleet.rewards", "fleet.heartbeats"):
        assert _granted("robots", "WRITE", "topic", topic) and not _granted("robots", "READ", "topic", topic)
    for topic in ("fleet.models", "fleet.commands"):
        assert _granted("robots", "READ", "topic", topic) and not _granted("robots", "WRITE", "topic", topic)
    assert not _granted("robots", "WRITE", "topic", "fleet.reviews")
    # Only the dashboard commands robots and reviews corrections; models come from the learner and the dashboard.
    writers = {u for u in users if _granted(u, "WRITE", "topic", "fleet.commands")}
    assert writers == {"dashboard"}
    assert {u for u in users if _granted(u, "WRITE", "topic", "fleet.reviews")} == {"dashboard"}
    assert {u for u in users if _granted(u, "WRITE", "topic", "fleet.models")} == {"learner", "dashboard"}
    # Consumers read what they consume, in their own group.
    assert _granted("recorder", "READ", "topic", "fleet.trajectories") and _granted(
        "recorder", "READ", "group", "recorder"
    )
    for topic in ("fleet.trajectories", "fleet.corrections", "fleet.rewards", "fleet.reviews"):
        assert _granted("learner", "READ", "topic", topic)
    assert _granted("learner", "READ", "group", "learner") and not _granted("recorder", "READ", "group", "learner")
    assert {u for u in users if _granted(u, "WRITE", "topic", "fleet.deadletter")} == {"recorder", "learner"}


def _strings(node: object) -> list[str]:
    if isinstance(node, dict):
        return [s for key, value in node.items() for s in [str(key), *_strings(value)]]
    if isinstance(node, list):
        return [s for item in node for s in _strings(item)]
    return [str(node)]


def test_no_secret_literal_anywhere() -> None:
    """Every password and secret in the file is a `${VAR:?…}` reference (or `$$VAR`, read inside the container)."""
    compose = _compose()
    for name, service in compose["services"].items():
        for key, value in (service.get("environment") or {}).items():
            if re.search(r"PASSWORD|SECRET", key):
                assert re.fullmatch(r"\$\{\w+:\?[^}]+\}", str(value)), f"{name}: {key}"
    found = 0
    for text in _strings(compose):
        for match in re.finditer(r"(?i)password\s*=\s*\\?\"?([^\"\\\s;]+)", text):
            found += 1
            assert match.group(1).startswith(("${", "$$")), match.group(0)
    assert found >= 3  # the broker's JAAS settings and its health check


def test_only_the_learner_holds_the_model_signing_key() -> None:
    """Robots get the public keys they trust and nothing to sign with; the key files come from the environment."""
    compose = _compose()
    services = compose["services"]
    signers = {name for name, s in services.items() if "fleet_signing_key" in (s.get("secrets") or [])}
    assert signers == {"learner"}
    for name in ("learner", "actors"):
        env = services[name]["environment"]
        assert env["FLEET_TRUSTED_KEYS_FILE"] == "/run/secrets/fleet_trusted_keys"
        assert "fleet_trusted_keys" in services[name]["secrets"]
    assert services["learner"]["environment"]["FLEET_SIGNING_KEY_FILE"] == "/run/secrets/fleet_signing_key"
    holders = {n for n, s in services.items() if "FLEET_SIGNING_KEY_FILE" in (s.get("environment") or {})}
    assert holders == {"learner"}
    for secret in compose["secrets"].values():
        assert re.fullmatch(r"\$\{\w+:\?[^}]+\}", secret["file"]), secret
