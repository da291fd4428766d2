"""Deployment settings for every fleet service, read from `FLEET_*` environment variables.

One `Settings` object holds every port, path and URL a service needs; components take the
values they use from it, never from `os.environ` directly. Secrets have no default: production
must set them (`FLEET_SECRET_KEY`, `FLEET_DATABASE_URL` with its password, ...).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


def _default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "fleet"


class Settings(BaseSettings):
    """Where the local stack lives and how services reach each other (env prefix `FLEET_`)."""

    model_config = SettingsConfigDict(env_prefix="FLEET_", extra="ignore", frozen=True)

    # "local" = embedded stack started by `fleet up`; "production" = external services (docker-compose).
    env: Literal["local", "production"] = "local"
    # State of the local stack: Kafka log dirs, MLflow store, SQLite DB, episode store, pid files, logs.
    home: Path = Field(default_factory=lambda: Path(".fleet").resolve())
    # Downloads shared by every checkout (Kafka jars), keyed by version and checksum.
    cache_dir: Path = Field(default_factory=_default_cache_dir)
    # Interface every local service binds to; loopback only by default.
    host: str = "127.0.0.1"

    # --- Kafka ---
    kafka_port: int = 9092
    kafka_controller_port: int = 9093
    # Bootstrap servers for clients; defaults to the local broker(s).
    kafka_bootstrap: str | None = None
    # Brokers `fleet up` starts locally, each a KRaft broker and controller: 1, or 3 for a cluster that keeps every
    # topic on 3 brokers (min.insync.replicas 2, so one broker may die with nothing lost). Broker i (from 0)
    # listens on kafka_port + 2i and its controller on kafka_controller_port + 2i.
    kafka_brokers: int = Field(default=1, ge=1, le=9)
    # Replicas of each fleet topic; None = the brokers' own default.replication.factor (the local cluster's: 3 of 3
    # brokers, 1 for a single broker), so every service creates topics alike without being told the cluster's size.
    kafka_replication_factor: int | None = Field(default=None, ge=1)
    # JVM heap for the local broker; this machine class has 2 cores and the broker shares them.
    kafka_heap: str = "512m"
    # Partitions per fleet topic (keyed by robot id, so one robot's messages stay ordered).
    kafka_partitions: int = 4
    # Maven repository the pinned Kafka jars are fetched from (HTTPS, checked against pinned sha256).
    maven_repo: str = "https://repo1.maven.org/maven2"
    # Disk cap of each producer's spool (robots, services) while the broker is unreachable: past it new
    # messages are refused with a "spool full" delivery error (and counted) instead of filling the disk.
    spool_max_bytes: int = Field(default=1024**3, ge=1024**2)
    # How clients authenticate to the brokers. PLAINTEXT for the local broker; production (docker-compose)
    # uses SASL_PLAINTEXT or SASL_SSL with SCRAM, one user per service (docs/security.md).
    kafka_security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    # SASL mechanism when the protocol is SASL_*; SCRAM keeps the password off the wire.
    kafka_sasl_mechanism: Literal["SCRAM-SHA-512", "SCRAM-SHA-256", "PLAIN"] | None = None
    # This service's SASL user and password (no default: set both when the protocol is SASL_*).
    kafka_sasl_username: str | None = None
    kafka_sasl_password: SecretStr | None = None
    # CA bundle that signed the brokers' certificates (SSL / SASL_SSL); None = the system's trust store.
    kafka_ssl_cafile: Path | None = None

    # --- MLflow ---
    mlflow_port: int = 5000
    # Tracking server URI for clients; defaults to the local server.
    mlflow_tracking_uri: str | None = None
    # The local MLflow server (`fleet up`) runs its basic-auth app when this is set: the admin's password
    # (`fleet.stack.mlflow_auth`; production runs MLflow from docker-compose.yml with it always on).
    mlflow_admin_password: SecretStr | None = None
    # Backend store of the local MLflow server (production: a PostgreSQL URL).
    mlflow_backend_store_uri: str | None = None
    # Artifact root the local MLflow server serves (production: an object store URI).
    mlflow_artifacts_destination: str | None = None
    # Registered model name of this fleet's VLA.
    model_name: str = "fleet-vla"

    # --- Model signing (fleet.signing, docs/security.md) ---
    # Ed25519 private key (PEM) that publishers (the learner, `fleet train`, the demo) sign model versions with; never
    # on robots, never in MLflow. Unset outside production: a pair is generated once under `home`/keys (0600).
    # Production refuses to publish without it.
    signing_key_file: Path | None = None
    # Ed25519 public keys (PEM, one or more) whose signatures robots and the learner accept; more than one lets the
    # learner's key be rotated. Unset outside production: the signing key's public half. Production refuses to load
    # a model version without it.
    trusted_keys_file: Path | None = None

    # --- Database ---
    # SQLAlchemy URL; SQLite file under `home` by default, PostgreSQL in production.
    database_url: str | None = None
    # Whether services migrate the schema on start. Production sets false: each service logs in as a role that may
    # not change the schema (`fleet.db.roles`), the owner migrates once (`fleet db upgrade`), services check it did.
    database_migrate: bool = True

    # --- Observability (fleet.observability, docs/observability.md) ---
    # Log lines: "text" for people at a terminal, "json" (one object per line) for log shippers.
    log_format: Literal["text", "json"] = "text"
    # Prometheus `/metrics` port of each service without a web server of its own; 0 = no endpoint.
    # The dashboard serves `/metrics` on its own port.
    metrics_port_recorder: int = Field(default=9101, ge=0, le=65535)
    metrics_port_learner: int = Field(default=9102, ge=0, le=65535)
    metrics_port_robots: int = Field(default=9103, ge=0, le=65535)
    # Interface the metrics endpoints bind; None = `host` locally, all interfaces in production (containers
    # publish no metrics port, so only the compose network, where Prometheus runs, reaches them).
    metrics_host: str | None = None
    # Bearer token Prometheus must send to the dashboard's `/metrics`; None = open (its labels hold no secrets).
    metrics_token: SecretStr | None = None

    # --- Dashboard ---
    dashboard_port: int = 8000
    # Signs session cookies and CSRF tokens. No default in production.
    secret_key: SecretStr | None = None
    # Failed logins allowed per user name within `login_window_s` before logins for it answer 429 + Retry-After.
    login_max_failures: int = Field(default=5, ge=1)
    # Failed logins allowed per client address in the window (higher: one office may share an address).
    login_max_failures_per_client: int = Field(default=20, ge=1)
    # Sliding window of the login limits, in seconds.
    login_window_s: float = Field(default=60.0, gt=0)

    # --- Robots with no route to Kafka ---
    # The dashboard's base URL: such a robot posts its messages to the dashboard's ingestion endpoint
    # (fleet.transport.http) instead of producing to Kafka. None = robots produce to Kafka directly.
    ingest_url: str | None = None
    # That robot's API token (`robot:produce`, bound to its robot id), sent with every message.
    robot_token: SecretStr | None = None

    @model_validator(mode="after")
    def _check(self) -> Settings:
        for name in ("kafka_port", "kafka_controller_port", "mlflow_port", "dashboard_port"):
            port = getattr(self, name)
            if not 0 < port < 65536:
                raise ValueError(f"FLEET_{name.upper()}={port} is not a TCP port (1-65535)")
        if max(self.kafka_node_ports(self.kafka_brokers - 1)) > 65535:
            raise ValueError(f"FLEET_KAFKA_BROKERS={self.kafka_brokers}: the last broker's ports pass 65535")
        if self.env == "production":
            # What every service needs. The database URL and the dashboard's secret key are asked for where they
            # are used (`db_url`, dashboards.auth.resolve_secret_key): a robot is given neither.
            missing = [
                var
                for var, value in (
                    ("FLEET_KAFKA_BOOTSTRAP", self.kafka_bootstrap or self.ingest_url),
                    ("FLEET_MLFLOW_TRACKING_URI", self.mlflow_tracking_uri),
                )
                if value is None
            ]
            if missing:
                raise ValueError(f"production settings need {', '.join(missing)} (no defaults in production)")
            if self.ingest_url is not None and not self.ingest_url.startswith("https://"):
                raise ValueError("production robots post over HTTPS only: FLEET_INGEST_URL must start with https://")
            if self.kafka_security_protocol == "PLAINTEXT":  # anyone on the network could read and write every topic
                raise ValueError(
                    "production refuses FLEET_KAFKA_SECURITY_PROTOCOL=PLAINTEXT: use SASL_SSL (or SASL_PLAINTEXT on a "
                    "private network) with this service's SCRAM user, see docs/security.md"
                )
        if self.kafka_security_protocol.startswith("SASL_"):
            missing = [
                var
                for var, value in (
                    ("FLEET_KAFKA_SASL_MECHANISM", self.kafka_sasl_mechanism),
                    ("FLEET_KAFKA_SASL_USERNAME", self.kafka_sasl_username),
                    ("FLEET_KAFKA_SASL_PASSWORD", self.kafka_sasl_password),
                )
                if not value
            ]
            if missing:
                raise ValueError(
                    f"FLEET_KAFKA_SECURITY_PROTOCOL={self.kafka_security_protocol} needs {', '.join(missing)}"
                    " (this service's SCRAM user: see docs/security.md)"
                )
        return self

    # Derived values: what clients use.
    def kafka_node_ports(self, node: int) -> tuple[int, int]:
        """(client, controller) ports of local broker `node` (0-based)."""
        return self.kafka_port + 2 * node, self.kafka_controller_port + 2 * node

    @property
    def bootstrap_servers(self) -> str:
        local = (f"{self.host}:{self.kafka_node_ports(i)[0]}" for i in range(self.kafka_brokers))
        return self.kafka_bootstrap or ",".join(local)

    @property
    def tracking_uri(self) -> str:
        return self.mlflow_tracking_uri or f"http://{self.host}:{self.mlflow_port}"

    @property
    def db_url(self) -> str:
        """The database URL; in production FLEET_DATABASE_URL must be set for the services that use the database
        (recorder, learner, dashboard), and a service without it (robots) fails here rather than open a local file."""
        if self.database_url is None and self.env == "production":
            raise ValueError("production needs FLEET_DATABASE_URL for this service (no local database in production)")
        return self.database_url or f"sqlite:///{self.home / 'fleet.db'}"

    @property
    def mlflow_store_uri(self) -> str:
        return self.mlflow_backend_store_uri or f"sqlite:///{self.home / 'mlflow' / 'mlflow.db'}"

    @property
    def mlflow_artifacts(self) -> str:
        return self.mlflow_artifacts_destination or str(self.home / "mlflow" / "artifacts")

    @property
    def episode_store(self) -> Path:
        return self.home / "episodes"

    @property
    def run_dir(self) -> Path:
        return self.home / "run"

    @property
    def log_dir(self) -> Path:
        return self.home / "logs"

    @property
    def dashboard_url(self) -> str:
        return f"http://{self.host}:{self.dashboard_port}"

    @property
    def metrics_bind_host(self) -> str:
        return self.metrics_host or ("0.0.0.0" if self.env == "production" else self.host)


def get_settings() -> Settings:
    """Settings from the current environment (not cached: tests and the CLI change the env)."""
    return Settings()
