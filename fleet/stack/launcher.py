"""`fleet up` / `fleet down` / `fleet status` as library calls.

`up()` is idempotent: services already running and healthy are left alone; a port held by some
other process, a missing Java or a failed download raise `StackError` with what to do. Kafka and
MLflow start in parallel while the database migrates, so a cold start takes about as long as the
slowest service (MLflow, ~10-15 s).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from fleet.settings import Settings
from fleet.stack.errors import StackError
from fleet.stack.kafka import KafkaService
from fleet.stack.mlflow_server import MlflowService
from fleet.stack.process import ManagedProcess, port_in_use


class Service(Protocol):
    name: str

    @property
    def address(self) -> str: ...

    @property
    def ports(self) -> list[int]: ...

    def process(self) -> ManagedProcess: ...

    def healthy(self, timeout_s: float = 3.0) -> bool: ...


@dataclass(frozen=True)
class ServiceStatus:
    """One line of `fleet status`."""

    name: str
    up: bool
    address: str
    detail: str

    def line(self) -> str:
        return f"{self.name:<9} {'up' if self.up else 'DOWN':<5} {self.address:<40} {self.detail}"


def services(settings: Settings) -> list[KafkaService | MlflowService]:
    return [*KafkaService.cluster(settings), MlflowService(settings)]


def _check_ports(service: KafkaService | MlflowService, settings: Settings) -> None:
    for port in service.ports:
        if port_in_use(settings.host, port):
            env = {settings.mlflow_port: "FLEET_MLFLOW_PORT"}.get(
                port, "FLEET_KAFKA_PORT / FLEET_KAFKA_CONTROLLER_PORT (broker i uses each + 2i)"
            )
            raise StackError(
                f"port {port} on {settings.host} is in use by another process, so {service.name} cannot start: "
                f"stop that process (`ss -ltnp | grep :{port}` shows it) or choose another port with {env}"
            )


def migrate_database(settings: Settings) -> str:
    from fleet.db import migrate

    try:
        migrate.upgrade(settings.db_url)
        return migrate.current_revision(settings.db_url) or "empty"
    except Exception as err:  # the driver's errors vary (sqlite3, psycopg); all mean the same to the user
        raise StackError(
            f"database migration on {_redact(settings.db_url)} failed: {err.__class__.__name__}: {err}. "
            "Check FLEET_DATABASE_URL and that the database server is running."
        ) from None


def _redact(url: str) -> str:
    if "@" in url and "://" in url:
        scheme, rest = url.split("://", 1)
        return f"{scheme}://***@{rest.split('@', 1)[1]}"
    return url


def up(settings: Settings, *, timeout_s: float = 90.0, progress: bool = False, log=print) -> list[ServiceStatus]:  # noqa: ANN001
    """Start every local service that is not running, wait until all are healthy, migrate the DB."""
    settings.home.mkdir(parents=True, exist_ok=True)
    started: list[tuple[KafkaService | MlflowService, ManagedProcess]] = []
    for service in services(settings):
        proc = service.process()
        if proc.pid() is not None:
            log(f"{service.name}: already running (pid {proc.pid()})")
            started.append((service, proc))
            continue
        _check_ports(service, settings)
        proc = service.prepare(progress=progress) if isinstance(service, KafkaService) else service.prepare()
        pid = proc.start()
        log(f"{service.name}: started (pid {pid}), log {proc.log_path}")
        started.append((service, proc))

    revision = migrate_database(settings)
    log(f"database: {_redact(settings.db_url)} at revision {revision}")

    deadline = time.monotonic() + timeout_s
    pending = list(started)
    while pending:
        for service, proc in list(pending):
            if service.healthy(timeout_s=2.0):
                pending.remove((service, proc))
            elif proc.pid() is None:
                raise StackError(
                    f"{service.name} exited during start-up; last lines of {proc.log_path}:\n{proc.log_tail()}"
                )
        if pending and time.monotonic() > deadline:
            names = ", ".join(s.name for s, _ in pending)
            raise StackError(f"{names} not healthy after {timeout_s:.0f} s; see logs in {settings.log_dir}")
        if pending:
            time.sleep(0.5)
    return status(settings)


@contextlib.contextmanager
def kafka_only(settings: Settings, *, timeout_s: float = 180.0) -> Iterator[list[KafkaService]]:
    """Kafka's local node(s) alone, as `up` starts them (jars, config, storage formatted once), healthy within
    `timeout_s`, and stopped on leaving: the broker a bench, a probe or a fault test needs without MLflow."""
    nodes = KafkaService.cluster(settings)
    try:
        for node in nodes:
            node.prepare().start()
        deadline = time.monotonic() + timeout_s
        while not all(node.healthy(timeout_s=2.0) for node in nodes):
            if time.monotonic() > deadline:
                raise StackError(f"Kafka not healthy after {timeout_s:.0f} s; see logs in {settings.log_dir}")
            time.sleep(0.5)
        yield nodes
    finally:
        for node in nodes:
            node.process().stop()


# Fleet services started in the background by `fleet demo` (pid files in the run dir); stopped first.
APP_SERVICES = ("robots", "learner", "recorder", "dashboard")


def down(settings: Settings, *, log=print) -> None:  # noqa: ANN001
    """Stop every local service (and its children); harmless when nothing runs."""
    for name in APP_SERVICES:
        proc = ManagedProcess(name, [], settings.run_dir, settings.log_dir / f"{name}.log")
        if proc.pid_path.exists() and proc.stop():
            log(f"{name}: stopped")
    for service in reversed(services(settings)):
        if service.process().stop():
            log(f"{service.name}: stopped")
        else:
            log(f"{service.name}: not running")
    # Brokers started with another FLEET_KAFKA_BROKERS (`fleet up --kafka-brokers 3`, then a plain `fleet down`)
    known = {service.name for service in services(settings)}
    for pid_file in sorted(settings.run_dir.glob("kafka*.pid")):
        if pid_file.stem not in known and ManagedProcess(pid_file.stem, [], settings.run_dir, Path()).stop():
            log(f"{pid_file.stem}: stopped")


def status(settings: Settings) -> list[ServiceStatus]:
    """Health of each service, one line each."""
    rows = []
    for service in services(settings):
        pid = service.process().pid()
        healthy = service.healthy(timeout_s=2.0)
        detail = f"pid {pid}" if pid else ("external" if healthy else "not running")
        rows.append(ServiceStatus(service.name, healthy, service.address, detail))
    rows.append(_database_status(settings))
    return rows


def _database_status(settings: Settings) -> ServiceStatus:
    from fleet.db import migrate

    try:
        current = migrate.current_revision(settings.db_url)
        head = migrate.head_revision(settings.db_url)
    except Exception as err:  # noqa: BLE001 - any driver error means "down" here
        return ServiceStatus("database", False, _redact(settings.db_url), f"unreachable: {err.__class__.__name__}")
    ok = current is not None and current == head
    detail = f"revision {current} (head {head})" if ok else f"revision {current}, needs `fleet up` to migrate to {head}"
    return ServiceStatus("database", ok, _redact(settings.db_url), detail)


def require_healthy(settings: Settings) -> None:
    """Raise a StackError naming what to do when a service the caller needs is down."""
    bad = [row for row in status(settings) if not row.up]
    if bad:
        raise StackError(
            "; ".join(f"{row.name} at {row.address} is down" for row in bad)
            + ": run `fleet up` (or set FLEET_KAFKA_BOOTSTRAP / FLEET_MLFLOW_TRACKING_URI / FLEET_DATABASE_URL)"
        )


__all__ = ["ServiceStatus", "StackError", "down", "migrate_database", "require_healthy", "services", "status", "up"]
