"""Shared fixtures: the real local stack (Kafka, MLflow, database) started once per test session.

The stack runs on free ports in a temporary FLEET_HOME, through the same library call as `fleet up`,
so integration tests exercise exactly what users run. PostgreSQL tests use FLEET_TEST_POSTGRES_URL
(set by `make test` from scripts/postgres.sh); under CI they fail instead of skipping when it is missing.
"""

from __future__ import annotations

import gc
import logging
import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from fleet.settings import Settings
from fleet.stack import launcher
from fleet.stack.kafka import KafkaService
from fleet.stack.process import isolated_env

logging.getLogger("kafka").setLevel(logging.ERROR)


@pytest.fixture(autouse=True)
def _unfrozen_heap() -> Iterator[None]:
    """Real-time robots run in-process freeze the heap (actors.ticks.freeze_heap); give it back after each test."""
    yield
    gc.unfreeze()


def _postgres_required() -> bool:
    return os.environ.get("CI", "").lower() == "true" or os.environ.get("FLEET_REQUIRE_POSTGRES") == "1"


@pytest.fixture(scope="session")
def stack_env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """FLEET_* variables of the test stack, exported for the session (child processes inherit them)."""
    env = {**isolated_env(tmp_path_factory.mktemp("fleet-home")), "FLEET_KAFKA_HEAP": "384m"}
    saved = {key: os.environ.get(key) for key in env}
    os.environ.update(env)
    yield env
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


@pytest.fixture(scope="session")
def stack(stack_env: dict[str, str]) -> Iterator[Settings]:
    """The running local stack; torn down (no process left) at the end of the session."""
    settings = Settings()
    try:
        launcher.up(settings, timeout_s=120, log=lambda _msg: None)
        yield settings
    finally:
        launcher.down(settings, log=lambda _msg: None)


@dataclass
class KafkaBroker:
    """Handle on the test broker for fault tests: stop it, start it again."""

    settings: Settings

    @property
    def bootstrap(self) -> str:
        return self.settings.bootstrap_servers

    def stop(self) -> None:
        KafkaService(self.settings).process().stop()

    def start(self, timeout_s: float = 150.0) -> None:  # a restart under load (8 robots spooling) took > 60 s
        launcher.up(self.settings, timeout_s=timeout_s, log=lambda _msg: None)


@pytest.fixture(scope="session")
def kafka_broker(stack: Settings) -> KafkaBroker:
    return KafkaBroker(stack)


@pytest.fixture()
def kafka_bootstrap(stack: Settings, kafka_broker: KafkaBroker) -> str:
    """Bootstrap servers of a running broker (restarted if an earlier test left it stopped)."""
    if not KafkaService(stack).healthy():
        kafka_broker.start()
    return stack.bootstrap_servers


@pytest.fixture(scope="session")
def mlflow_uri(stack: Settings) -> str:
    return stack.tracking_uri


@pytest.fixture(scope="session")
def postgres_url() -> str:
    url = os.environ.get("FLEET_TEST_POSTGRES_URL")
    if not url:
        message = "FLEET_TEST_POSTGRES_URL is not set (run tests through `make test`, which starts PostgreSQL)"
        if _postgres_required():
            pytest.fail(message)
        pytest.skip(message)
    return url


def _fresh_postgres_db(admin_url: str) -> tuple[str, str]:
    from sqlalchemy import create_engine, text

    name = f"fleet_t_{uuid.uuid4().hex[:12]}"
    engine = create_engine(admin_url.replace("postgresql://", "postgresql+psycopg://"), isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    engine.dispose()
    return name, admin_url.rsplit("/", 1)[0] + f"/{name}"


def _drop_postgres_db(admin_url: str, name: str) -> None:
    from sqlalchemy import create_engine, text

    engine = create_engine(admin_url.replace("postgresql://", "postgresql+psycopg://"), isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    engine.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """An empty database of each kind (a fresh PostgreSQL database per test, dropped afterwards)."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'fleet.db'}"
        return
    admin_url = request.getfixturevalue("postgres_url")
    name, url = _fresh_postgres_db(admin_url)
    try:
        yield url
    finally:
        _drop_postgres_db(admin_url, name)
