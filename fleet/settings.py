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
    # Bootstrap servers for clients; defaults to the local broker.
    kafka_bootstrap: str | None = None
    # JVM heap for the local broker; this machine class has 2 cores and the broker shares them.
    kafka_heap: str = "512m"
    # Partitions per fleet topic (keyed by robot id, so one robot's messages stay ordered).
    kafka_partitions: int = 4
    # Maven repository the pinned Kafka jars are fetched from (HTTPS, checked against pinned sha256).
    maven_repo: str = "https://repo1.maven.org/maven2"

    # --- MLflow ---
    mlflow_port: int = 5000
    # Tracking server URI for clients; defaults to the local server.
    mlflow_tracking_uri: str | None = None
    # Backend store of the local MLflow server (production: a PostgreSQL URL).
    mlflow_backend_store_uri: str | None = None
    # Artifact root the local MLflow server serves (production: an object store URI).
    mlflow_artifacts_destination: str | None = None
    # Registered model name of this fleet's VLA.
    model_name: str = "fleet-vla"

    # --- Database ---
    # SQLAlchemy URL; SQLite file under `home` by default, PostgreSQL in production.
    database_url: str | None = None

    # --- Dashboard ---
    dashboard_port: int = 8000
    # Signs session cookies and CSRF tokens. No default in production.
    secret_key: SecretStr | None = None

    @model_validator(mode="after")
    def _check(self) -> Settings:
        for name in ("kafka_port", "kafka_controller_port", "mlflow_port", "dashboard_port"):
            port = getattr(self, name)
            if not 0 < port < 65536:
                raise ValueError(f"FLEET_{name.upper()}={port} is not a TCP port (1-65535)")
        if self.env == "production":
            missing = [
                var
                for var, value in (
                    ("FLEET_SECRET_KEY", self.secret_key),
                    ("FLEET_DATABASE_URL", self.database_url),
                    ("FLEET_KAFKA_BOOTSTRAP", self.kafka_bootstrap),
                    ("FLEET_MLFLOW_TRACKING_URI", self.mlflow_tracking_uri),
                )
                if value is None
            ]
            if missing:
                raise ValueError(f"production settings need {', '.join(missing)} (no defaults in production)")
        return self

    # Derived values: what clients use.
    @property
    def bootstrap_servers(self) -> str:
        return self.kafka_bootstrap or f"{self.host}:{self.kafka_port}"

    @property
    def tracking_uri(self) -> str:
        return self.mlflow_tracking_uri or f"http://{self.host}:{self.mlflow_port}"

    @property
    def db_url(self) -> str:
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


def get_settings() -> Settings:
    """Settings from the current environment (not cached: tests and the CLI change the env)."""
    return Settings()
